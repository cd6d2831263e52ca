-- Tables, strings and sorting; the output must not depend on the
-- allocator.
local t, seed = {}, 11
for i = 1, 300000 do
  seed = (seed * 1103515245 + 12345) % 2147483648
  t[#t + 1] = { key = string.format("%08x", seed), n = i, s = tostring(seed):rep(2) }
end
table.sort(t, function(a, b) return a.key < b.key or (a.key == b.key and a.n < b.n) end)
local parts = {}
for i = 1, #t, 1000 do parts[#parts + 1] = t[i].key .. t[i].s:sub(1, 4) end
local joined = table.concat(parts, ",")
local groups = {}
for _, r in ipairs(t) do
  local g = r.key:sub(1, 1)
  groups[g] = (groups[g] or 0) + #r.s
end
local keys = {}
for k in pairs(groups) do keys[#keys + 1] = k end
table.sort(keys)
for _, k in ipairs(keys) do io.write(k, "=", groups[k], " ") end
print()
print(#t, #joined, joined:sub(1, 60))
