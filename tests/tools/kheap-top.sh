#!/bin/sh
# Tests of tools/kheap-top, for tests/run.sh (run from the tree's root).
#   tests/tools/kheap-top.sh BUILD_DIR
# Its output on a recorded file (tests/tools/sample.log, written by
# tests/malloc/churn under libkheap.so with KHEAP_STATS_APPEND=1), checked
# against figures awk takes from the same file; the chart; and the live
# view in tmux beside a running program.
set -u
B=$1
TOP=tools/kheap-top
S=tests/tools/sample.log
T=$(mktemp -d)
SOCK=kheap-top-test-$$
trap 'tmux -L "$SOCK" kill-server 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$T"' EXIT

say() { # condition-status message
    if [ "$1" -eq 0 ]; then echo "ok - $2"; else echo "not ok - $2"; fi
}

# The newest record's rows as "size name" (size = slabs x pages x 4096),
# and the allocs of every cache in the last two records.
awk '/^kheap-stats/ { n++ } /^cache / { size[n, $2] = $8 * $7 * 4096; allocs[n, $2] = $10; names[$2] = 1 }
     END { for (c in names) print size[n, c], c, allocs[n, c] - allocs[n - 1, c], (allocs[n, c] > 0 || size[n, c] > 0) }' "$S" >"$T/rows"
top_expect=$(awk '$4' "$T/rows" | sort -k1,1nr -k2,2r | head -n 1 | cut -d' ' -f2)
d1024=$(awk '$2 == "kmalloc-1024" { print ($3 > 0 ? "+" : "") $3 }' "$T/rows")
seq=$(sed -n 's/^end //p' "$S" | tail -n 1)
"$TOP" --once "$S" >"$T/once" 2>&1
say $? "--once prints a frame"
head -n 1 "$T/once" | grep -q "seq $seq (exit)"
say $? "the frame is the newest record (seq $seq)"
first=$(awk '/ NAME/ { getline; print $NF; exit }' "$T/once")
[ -n "$top_expect" ] && [ "$first" = "$top_expect" ]
say $? "sorted by cache size: first row $first (largest in the file: $top_expect)"
got=$(awk '$NF == "kmalloc-1024" { print $(NF - 3) }' "$T/once")
[ -n "$d1024" ] && [ "$got" = "$d1024" ]
say $? "dALLOCS of kmalloc-1024 is the difference of the last two records ($got, file: $d1024)"
rows=$(awk '/ NAME/ { on = 1; next } on && NF' "$T/once" | wc -l)
[ "$rows" -eq "$(awk '$4' "$T/rows" | wc -l)" ]
say $? "one row per cache that has had slabs ($rows)"

"$TOP" --once -s objsize "$S" | awk '/ NAME/ { on = 1; next } on && NF { print $4 }' >"$T/col"
sort -c -n -r "$T/col" && [ -s "$T/col" ]
say $? "-s objsize sorts by object size, largest first"
"$TOP" --once -s name "$S" | awk '/ NAME/ { on = 1; next } on && NF { print $NF }' >"$T/col"
LC_ALL=C sort -c "$T/col" && [ -s "$T/col" ]
say $? "-s name sorts by name"
"$TOP" --once -s name -r -n 3 "$S" | awk '/ NAME/ { on = 1; next } on && NF' >"$T/col"
[ "$(wc -l <"$T/col")" -eq 3 ]
say $? "-n 3 shows three caches"

# A record cut short (the writer's last one, seen mid-write) is skipped.
size=$(wc -c <"$S")
head -c $((size - 300)) "$S" >"$T/cut"
"$TOP" --once "$T/cut" | head -n 1 | grep -q "seq $((seq - 1)) "
say $? "a record cut short is skipped: the frame shows seq $((seq - 1))"
"$TOP" --once "$T/missing" >/dev/null 2>"$T/err"
[ $? -ne 0 ] && grep -q 'missing' "$T/err"
say $? "a missing file is an error that names it"

"$TOP" --chart "$T/chart.png" "$S"
rc=$?
[ $rc -eq 0 ] && [ "$(head -c 4 "$T/chart.png" | od -An -c | tr -d ' ')" = "211PNG" ] &&
    [ "$(grep -vc '^#' "$T/chart.dat")" -eq "$(grep -c '^end ' "$S")" ] &&
    grep -q "title 'used" "$T/chart.gp"
say $? "--chart writes the data, the gnuplot script and a PNG (one point per record)"

# Live, in a terminal: a program under libkheap.so writes a snapshot every
# 0.2 s; kheap-top shows it, with deltas, and answers its keys.
SO=$(cd "$B" && pwd)/libkheap.so
LD_PRELOAD="$SO" KHEAP_STATS_FILE="$T/live" KHEAP_STATS_INTERVAL=0.2 "$B/malloc/churn" 3 >/dev/null &
pid=$!
sleep 0.3
tmux -L "$SOCK" new-session -d -s top -x 150 -y 60 "TERM=xterm $TOP -d 0.3 '$T/live'"
sleep 1.5
tmux -L "$SOCK" capture-pane -p -t top >"$T/pane1"
tmux -L "$SOCK" send-keys -t top n
sleep 0.5
tmux -L "$SOCK" capture-pane -p -t top >"$T/pane2"
tmux -L "$SOCK" send-keys -t top q
sleep 0.5
tmux -L "$SOCK" has-session -t top 2>/dev/null
gone=$?
wait $pid
grep -q "^kheap-top .* pid $pid .*(interval).*delta" "$T/pane1" && grep -q 'kmalloc-' "$T/pane1" &&
    grep -q 'allocations .*/s' "$T/pane1"
say $? "in tmux: the running program's records (pid $pid) with deltas and rates"
grep -q '^sort: size ' "$T/pane1" && grep -q '^sort: cached_objs ' "$T/pane2"
say $? "in tmux: n sorts by the next column"
[ $gone -ne 0 ]
say $? "in tmux: q quits"
