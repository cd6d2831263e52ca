# Builds and sorts a few million Python objects; prints a digest of the
# result, which must not depend on the allocator.
import hashlib

N = 600_000
rows = []
seed = 12345
for i in range(N):
    seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
    rows.append({"id": i, "key": "k%09d" % (seed % 1_000_000_007), "tags": [seed % 7, seed % 11],
                 "pair": (seed % 1000, str(seed))})
rows.sort(key=lambda r: (r["key"], r["id"]))
words = sorted(str(r["pair"][1])[::-1] for r in rows)
groups = {}
for r in rows:
    groups.setdefault(r["tags"][0], []).append(r["id"])
h = hashlib.sha256()
for r in rows[::1000]:
    h.update(r["key"].encode())
for w in words[::997]:
    h.update(w.encode())
print(len(rows), len(words), sorted((k, len(v)) for k, v in groups.items()))
print(h.hexdigest())
