#!/bin/sh
# Real programs under libkheap.so, for tests/run.sh (run from the tree's
# root): each workload runs once with glibc's malloc and once with
# LD_PRELOAD=libkheap.so (every process it starts included), each in a
# fresh directory; both must exit 0 with identical standard output, and
# kheap's exit statistics (KHEAP_STATS=1) must show it served the
# allocations. A program that is not installed is a failure that says so.
#   tests/real/run.sh BUILD_DIR
set -u
B=$1
ROOT=$(pwd)
SO=$(cd "$B" && pwd)/libkheap.so
T=$ROOT/tests/real
W=$(cd "$B" && pwd)/real
rm -rf "$W"
mkdir -p "$W"

# One workload: name, the programs it needs, the fewest allocations its
# busiest process must make, the shell script to run.
workload() {
    name=$1 needs=$2 least=$3 script=$4
    for p in $needs; do
        if ! command -v "$p" >/dev/null 2>&1; then
            echo "not ok - real $name: $p is not installed (tools/deps.sh build installs it)"
            return
        fi
    done
    for a in glibc kheap; do
        mkdir -p "$W/$name.$a"
        if [ $a = kheap ]; then pre="LD_PRELOAD=$SO KHEAP_STATS=1"; else pre=""; fi
        (cd "$W/$name.$a" && env $pre T="$T" ROOT="$ROOT" sh -c "$script") \
            >"$W/$name.$a.out" 2>"$W/$name.$a.err"
        echo $? >"$W/$name.$a.rc"
    done
    rg=$(cat "$W/$name.glibc.rc") rk=$(cat "$W/$name.kheap.rc")
    # The busiest process's allocation count.
    allocs=$(sed -n 's/^counts *allocations \([0-9]*\).*/\1/p' "$W/$name.kheap.err" | sort -n | tail -n 1)
    lines=$(wc -l <"$W/$name.glibc.out")
    if [ "$rg" != 0 ]; then
        echo "not ok - real $name: exits $rg even with glibc; see $W/$name.glibc.err"
    elif [ "$rk" != 0 ]; then
        echo "not ok - real $name: exits $rk under kheap; last lines of stderr:"
        grep -v '^kheap\|^kmalloc-\|^#\|^heap \|^bytes \|^counts \|^pages \|^kheap_' "$W/$name.kheap.err" |
            tail -n 5 | sed 's/^/#   /'
    elif ! cmp -s "$W/$name.glibc.out" "$W/$name.kheap.out"; then
        echo "not ok - real $name: output differs from glibc's:"
        diff "$W/$name.glibc.out" "$W/$name.kheap.out" | head -n 8 | sed 's/^/#   /'
    elif [ "${allocs:-0}" -lt "$least" ]; then
        echo "not ok - real $name: kheap served only ${allocs:-no} allocations (not preloaded?)"
    else
        echo "ok - real $name: same output as glibc ($lines lines), exit 0, $allocs allocations in its busiest process"
    fi
}

# PYTHONMALLOC=malloc: every object through malloc, not Python's arenas.
workload python3 "python3" 1000000 'PYTHONMALLOC=malloc python3 "$T/objects.py"'
workload sqlite3 "sqlite3" 100000 'sqlite3 :memory: <"$T/db.sql"'
workload git "git seq sed" 1000 '
export HOME=$PWD GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=kheap GIT_AUTHOR_EMAIL=kheap@example.org
export GIT_COMMITTER_NAME=kheap GIT_COMMITTER_EMAIL=kheap@example.org
export GIT_AUTHOR_DATE=2026-01-01T00:00:00Z GIT_COMMITTER_DATE=2026-01-01T00:00:00Z
git init -q repo && cd repo &&
for i in $(seq 1 300); do seq $i $((i * 40)) >f$i.txt; done &&
git add . && git commit -q -m first &&
sed -i s/1/one/ f1*.txt && git commit -q -a -m second &&
git log --stat --format="%H %s" && git gc -q && git fsck --no-progress &&
git rev-list --count HEAD'
workload gcc "gcc sha256sum" 10000 '
for f in slab pages cpu; do
  gcc -O2 -std=c11 -DKHEAP_PORT_PAGES=1 -I"$ROOT/include" -I"$ROOT/src" -I"$ROOT/src/core" -c "$ROOT/src/core/$f.c" -o $f.o &&
  sha256sum $f.o || exit 1
done'
workload perl "perl" 1000000 'perl "$T/words.pl"'
workload lua "lua5.4" 1000000 'lua5.4 "$T/tables.lua"'
# sort works in a few large buffers.
workload sort "sort seq awk sha256sum" 100 '
seq 1 600000 | awk "{ print (\$1 * 7919) % 1000003, \"line\", \$1 }" >in.txt &&
sort in.txt | sha256sum && sort -n -k1,1 -S 64M in.txt | tail -n 3 && sort -u -k2 in.txt | wc -l'
workload g++ "g++" 1000000 'g++ -O1 -std=c++17 -o maps "$T/maps.cpp" && ./maps'
