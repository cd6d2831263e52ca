#!/bin/sh
# The tests of libkheap.so, for tests/run.sh (run from the tree's root).
#   tests/malloc/run.sh BUILD_DIR
# Prints "ok - " / "not ok - " lines: the test programs' own, plus the
# checks made here (preloading, ulimit, abort on a bad free, KHEAP_STATS).
set -u
B=$1
SO=$(cd "$B" && pwd)/libkheap.so
M=$B/malloc
if [ ! -f "$SO" ]; then
    echo "not ok - $SO was not built"
    exit 1
fi

# A program's own test lines; if it dies without them, one failure.
prog() { # name env... -- command...
    name=$1
    shift
    out=$("$@" 2>&1)
    rc=$?
    printf '%s\n' "$out" | sed "s/^\(ok\|not ok\) - /\1 - $name: /"
    if [ $rc -ne 0 ] && ! printf '%s\n' "$out" | grep -q '^not ok - '; then
        echo "not ok - $name: exited with status $rc"
        printf '%s\n' "$out" | tail -n 5 | sed 's/^/#   /'
    fi
}

prog api "$M/api"
prog ctor env LD_PRELOAD="$SO $(cd "$M" && pwd)/ctorlib.so" "$M/ctor"
prog fork env LD_PRELOAD="$SO" "$M/fork"
prog threads env LD_PRELOAD="$SO" "$M/threads"
prog c++ env LD_PRELOAD="$SO" "$M/cxx"
prog rss env LD_PRELOAD="$SO" "$M/rss"
# 1.5 GB of address space: the 64 GiB reservation halves until it fits.
prog limits sh -c "ulimit -v 1500000 && LD_PRELOAD='$SO' exec '$M/limits'"

# An invalid free aborts with a message that names the address.
for how in interior foreign double; do
    # In a shell of its own, so its "Aborted" notice is captured too.
    out=$(sh -c "LD_PRELOAD='$SO' '$M/badfree' $how" 2>&1)
    rc=$?
    addr=$(printf '%s\n' "$out" | head -n 1)
    if [ $rc -eq 134 ] && printf '%s\n' "$out" | grep -q "^kheap: .*($addr)" &&
        ! printf '%s\n' "$out" | grep -q 'free returned'; then
        echo "ok - badfree: $how free of $addr aborts and names it"
    else
        echo "not ok - badfree: $how free: status $rc, output:"
        printf '%s\n' "$out" | sed 's/^/#   /'
    fi
done

# KHEAP_STATS=1 prints the statistics and slabinfo at exit; KHEAP_VERBOSE
# says where the heap is.
out=$(KHEAP_STATS=1 KHEAP_VERBOSE=1 LD_PRELOAD="$SO" sort "$0" 2>&1 >/dev/null)
if printf '%s\n' "$out" | grep -q '^kheap: statistics at exit' &&
    printf '%s\n' "$out" | grep -Eq '^counts +allocations [1-9]' &&
    printf '%s\n' "$out" | grep -q '^kmalloc-' &&
    printf '%s\n' "$out" | grep -q '^kheap: libkheap.so: default heap'; then
    echo "ok - KHEAP_STATS=1 and KHEAP_VERBOSE=1 report on stderr"
else
    echo "not ok - KHEAP_STATS/KHEAP_VERBOSE output missing:"
    printf '%s\n' "$out" | head -n 20 | sed 's/^/#   /'
fi
out=$(LD_PRELOAD="$SO" sort "$0" 2>&1 >/dev/null)
if [ -z "$out" ]; then
    echo "ok - silent without KHEAP_STATS"
else
    echo "not ok - output on stderr without KHEAP_STATS: $out"
fi
