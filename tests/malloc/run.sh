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
# libkheap.so keeps per-thread slots. libkheap-percpu.so in the mode it
# chooses at start-up (per-CPU caches where glibc registered rseq), and
# with rseq turned off for the process (per-thread slots, its fallback).
PSO=$(cd "$B" && pwd)/libkheap-percpu.so
prog cpus env LD_PRELOAD="$SO" "$M/cpus" slots
prog percpu-cpus env LD_PRELOAD="$PSO" "$M/cpus" auto
prog percpu-threads env LD_PRELOAD="$PSO" "$M/threads"
prog percpu-fork env LD_PRELOAD="$PSO" "$M/fork"
prog percpu-rss env LD_PRELOAD="$PSO" "$M/rss"
NORSEQ=glibc.pthread.rseq=0
prog percpu-cpus-slots env GLIBC_TUNABLES=$NORSEQ LD_PRELOAD="$PSO" "$M/cpus" slots
prog percpu-threads-slots env GLIBC_TUNABLES=$NORSEQ LD_PRELOAD="$PSO" "$M/threads"
prog c++ env LD_PRELOAD="$SO" "$M/cxx"
prog rss env LD_PRELOAD="$SO" "$M/rss"
prog frontier env LD_PRELOAD="$SO" "$M/frontier"
# Memory that follows use, against the C library's malloc in the same run:
# the plain run prints its figure, the preloaded run checks against it.
for mode in realloc cycles; do
    g=$("$M/shrink" $mode)
    prog shrink-$mode env LD_PRELOAD="$SO" "$M/shrink" $mode "$g"
done
# 1.5 GB of address space: the 64 GiB reservation halves until it fits.
prog limits sh -c "ulimit -v 1500000 && LD_PRELOAD='$SO' exec '$M/limits'"

# The misuse table (tests/malloc/misuse.c): each case under the C
# library's malloc, libkheap.so and libkheap-debug.so. libkheap-debug.so
# must report every case with its cause, and abort; the other two are
# listed for the table in docs/DESIGN.md, and libkheap.so must keep
# finding the double frees and wrong sizes it finds today.
DSO=$(cd "$B" && pwd)/libkheap-debug.so
found() { # how case: the cause kheap or glibc printed, or what happened
    case $1 in
    glibc) out=$(sh -c "'$M/misuse' $2" 2>&1) ;;
    sampled) out=$(sh -c "KHEAP_SAMPLE_RATE=1 LD_PRELOAD='$SO' '$M/misuse' $2" 2>&1) ;;
    *) out=$(sh -c "LD_PRELOAD='$1' '$M/misuse' $2" 2>&1) ;;
    esac
    rc=$?
    if [ $rc -eq 77 ]; then echo "n/a"; return; fi
    if printf '%s\n' "$out" | grep -q "^kheap: .*(0x[0-9a-f]*): "; then
        printf '%s\n' "$out" | grep -m1 "^kheap: " | sed 's/^kheap: [a-z_]*(0x[0-9a-f]*): //; s/ \[.*//'
    elif [ $rc -eq 134 ] || [ $rc -eq 139 ]; then
        echo "stopped (status $rc): $(printf '%s\n' "$out" | grep -v '^Aborted\|^Segm\|sh: ' | head -n 1)"
    else
        printf '%s\n' "$out" | tail -n 1
    fi
}
# A want of "-": the debug library is not expected to find it (a read of
# a freed small block; the sampled blocks find it).
for pair in overflow-1:"heap overflow" overflow-32-memcpy:"heap overflow" \
    overflow-medium:"heap overflow" overflow-32-medium:"heap overflow" \
    overflow-large:"heap overflow" overflow-32-large:"heap overflow" \
    overflow-1mib-large:"heap overflow" \
    underflow-1:"heap underflow" underflow-medium:"heap underflow" \
    underflow-large:"heap underflow" \
    underflow-large-13:"heap underflow" free-inside-freed-large:"inside a block" \
    use-after-free-write:"use after free" use-after-free-write-realloc:"use after free" \
    use-after-free-write-realloc-smaller:"use after free" \
    use-after-free-write-realloc-moved:"use after free" \
    use-after-free-write-medium:"use after free" use-after-free-read:"-" \
    use-after-free-write-large:"use after free" use-after-free-read-large:"use after free" \
    zero-size-write:"heap overflow" \
    zero-size-read:"zero-size block" zero-size-write-after-free:"after its free" \
    zero-size-read-after-free:"after its free" \
    double-free:"double free" double-free-delayed:"double free" \
    double-free-interleaved:"double free" double-free-other-thread:"double free" \
    double-free-after-reuse:"double free" double-free-large:"double free" \
    new-array-delete:"another kind" new-delete-array:"another kind" \
    malloc-delete:"another kind" sized-delete-wrong-size:"not the block's" \
    sized-delete-other-class:"not the block's" sized-delete-large:"not the block's" \
    free-sized-wrong-size:"not the block's" \
    check-overflow:"bytes after a debug block" check-use-after-free:"quarantined debug block" \
    stale-data:"no stale data"; do
    c=${pair%%:*} want=${pair#*:}
    d=$(found "$DSO" "$c")
    r=$(found "$SO" "$c")
    g=$(found glibc "$c")
    sa=$(found sampled "$c")
    echo "# misuse $c | glibc: $g | libkheap.so: $r | libkheap.so, KHEAP_SAMPLE_RATE=1: $sa | libkheap-debug.so: $d"
    case $want in -) continue ;; esac
    case $d in
    *"$want"*) echo "ok - debug: $c: $d" ;;
    *) echo "not ok - debug: $c: wanted '$want', got '$d'" ;;
    esac
done
for c in double-free double-free-delayed double-free-interleaved double-free-large; do
    r=$(found "$SO" "$c")
    case $r in
    *"double free"* | *"stale pointer"*) echo "ok - libkheap.so still finds $c: $r" ;;
    *) echo "not ok - libkheap.so no longer finds $c: $r" ;;
    esac
done
# A large block a CPU's cache of them took, freed again: the cache's
# free takes the block's page tag (in libkheap-percpu.so's per-CPU mode
# with a compare-and-exchange, outside its restartable sequence), so the
# second free misses it and the slow path reports it; in both libraries
# and in both modes of libkheap-percpu.so.
# The same through C++ sized delete, whose hit path takes the block to
# the cache too; and a sized delete of it with a size of another page
# count, which the slow path reports.
for mode in "LD_PRELOAD=$SO" "LD_PRELOAD=$PSO" "GLIBC_TUNABLES=$NORSEQ LD_PRELOAD=$PSO"; do
    for c in double-free-cached-large sized-delete-cached-large; do
        out=$(env $mode "$M/misuse" $c 2>&1)
        what=$(printf '%s\n' "$out" | grep -m1 "^kheap: " | sed 's/ \[.*//')
        case $what in
        *"(0x"*"free run"* | *"(0x"*"double free"*) echo "ok - $mode finds $c: $what" ;;
        *) echo "not ok - $mode does not find $c: $(printf '%s\n' "$out" | tail -n 1)" ;;
        esac
    done
    out=$(env $mode "$M/misuse" sized-delete-cached-wrong-size 2>&1)
    what=$(printf '%s\n' "$out" | grep -m1 "^kheap: " | sed 's/ \[.*//')
    case $what in
    *"(0x"*"sized free with a size"*) echo "ok - $mode finds sized-delete-cached-wrong-size: $what" ;;
    *) echo "not ok - $mode does not find sized-delete-cached-wrong-size: $(printf '%s\n' "$out" | tail -n 1)" ;;
    esac
done
# libkheap.so checks a sized free's size against the block's class (or
# a large block's pages); a size of the same class passes.
for c in sized-delete-other-class sized-delete-large free-sized-wrong-size; do
    r=$(found "$SO" "$c")
    case $r in
    *"sized free with a size"*) echo "ok - libkheap.so finds $c: $r" ;;
    *) echo "not ok - libkheap.so does not find $c: $r" ;;
    esac
done
# A whole-heap check (glibc's mcheck_check_all) of a heap used without
# misuse finds nothing, in either library.
for so in "$SO" "$DSO"; do
    r=$(found "$so" check-clean)
    case $r in
    survived) echo "ok - mcheck_check_all passes a clean heap under ${so##*/}" ;;
    *) echo "not ok - mcheck_check_all under ${so##*/}: $r" ;;
    esac
done
# The sampled guard blocks of libkheap.so, every allocation sampled while
# slots last (KHEAP_SAMPLE_RATE=1): these cases are found whichever end of
# its page the block is placed against (a fault, or the page's fill
# checked at free).
for pair in overflow-32-memcpy:"heap overflow" underflow-1:"heap underflow" \
    use-after-free-write:"use after free" use-after-free-write-realloc:"use after free" \
    use-after-free-read:"use after free" \
    zero-size-write:"heap overflow" zero-size-read:"zero-size block" \
    zero-size-write-after-free:"after its free" zero-size-read-after-free:"after its free"; do
    c=${pair%%:*} want=${pair#*:}
    sa=$(found sampled "$c")
    case $sa in
    *"$want"*) echo "ok - sampled: $c: $sa" ;;
    *) echo "not ok - sampled: $c: wanted '$want', got '$sa'" ;;
    esac
done
# The debug library, and libkheap.so sampling every allocation, run
# ordinary programs as the C library does.
for how in "libkheap-debug.so:LD_PRELOAD=$DSO" "KHEAP_SAMPLE_RATE=1:KHEAP_SAMPLE_RATE=1 LD_PRELOAD=$SO"; do
    for cmd in "sort -r $0" "awk {n+=NF}END{print(n)} $0"; do
        # shellcheck disable=SC2086
        if [ "$(env ${how#*:} $cmd 2>&1 | md5sum)" = "$($cmd 2>&1 | md5sum)" ]; then
            echo "ok - ${how%%:*} runs '${cmd%% *}' with the same output as the C library"
        else
            echo "not ok - ${how%%:*} changes the output of '$cmd'"
        fi
    done
done

# An invalid free aborts with a message that names the address.
for how in interior foreign static alloca unaligned far unmapped double; do
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
# ... and which per-CPU mode runs: per CPU where this machine's glibc
# registered rseq (the cpus program says whether it expects that), thread
# slots with rseq turned off, with the reason.
want=$(LD_PRELOAD="$PSO" "$M/cpus" auto 2>&1 | sed -n 's/^# mode: \(per-[A-Z]*[a-z]*\).*/\1/p')
for env in "" "GLIBC_TUNABLES=$NORSEQ"; do
    line=$(env $env KHEAP_VERBOSE=1 LD_PRELOAD="$PSO" true 2>&1 | grep '^kheap: libkheap-percpu.so:')
    case "$env:$want:$line" in
    :per-CPU:*"per-CPU caches on "*" CPUs (restartable sequences"* | \
        :per-thread:*"per-thread slots ("* | \
        GLIBC*:*"per-thread slots (rseq is not registered)"*)
        echo "ok - KHEAP_VERBOSE names the per-CPU mode${env:+ ($env)}" ;;
    *) echo "not ok - KHEAP_VERBOSE${env:+ ($env)}, expected $want: $line" ;;
    esac
done
line=$(env KHEAP_VERBOSE=1 LD_PRELOAD="$SO" true 2>&1 | grep '^kheap: libkheap.so:')
case "$line" in
*"per-thread slots (no restartable sequences in this build)"*)
    echo "ok - KHEAP_VERBOSE: libkheap.so keeps per-thread slots" ;;
*) echo "not ok - KHEAP_VERBOSE of libkheap.so: $line" ;;
esac
# ... and the decay epoch KHEAP_DECAY_MS set (0: off).
line=$(env KHEAP_DECAY_MS=250 KHEAP_VERBOSE=1 LD_PRELOAD="$SO" true 2>&1 | grep '^kheap: libkheap.so:')
off=$(env KHEAP_DECAY_MS=0 KHEAP_VERBOSE=1 LD_PRELOAD="$SO" true 2>&1 | grep '^kheap: libkheap.so:')
case "$line/$off" in
*", decay epoch 250 ms"*/*", decay off"*) echo "ok - KHEAP_VERBOSE gives the decay epoch" ;;
*) echo "not ok - KHEAP_VERBOSE with KHEAP_DECAY_MS=250 and 0: $line / $off" ;;
esac
out=$(LD_PRELOAD="$SO" sort "$0" 2>&1 >/dev/null)
if [ -z "$out" ]; then
    echo "ok - silent without KHEAP_STATS"
else
    echo "not ok - output on stderr without KHEAP_STATS: $out"
fi

# glibc's malloc extensions: mallinfo2/mallinfo, malloc_stats, malloc_trim,
# malloc_info, mallopt against what the program allocated.
# (The purge's immediate rule alone: decay off.)
prog mallinfo env KHEAP_DECAY_MS=0 LD_PRELOAD="$SO" "$M/mallinfo"
# jemalloc's mallctl and malloc_stats_print, for programs linked with
# jemalloc (decay off, so that only the purge asked for gives pages back).
prog mallctl env KHEAP_DECAY_MS=0 LD_PRELOAD="$SO" "$M/mallctl"

# Run-time options: the purge settings from the environment, bad values
# reported once (naming the variable and the value) and ignored.
keepcost() { # env... -- prints the keepcost figure (and stderr to $T/err)
    "$@" 2>"$T/err" | sed -n 's/^keepcost //p'
}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
MIB=1048576
k_default=$(keepcost env KHEAP_DECAY_MS=0 LD_PRELOAD="$SO" "$M/mallinfo" keepcost)
k_big=$(keepcost env KHEAP_DECAY_MS=0 KHEAP_PURGE_SLACK=1g LD_PRELOAD="$SO" "$M/mallinfo" keepcost)
if [ -n "$k_default" ] && [ -n "$k_big" ] && [ "$k_default" -le $((64 * MIB)) ] &&
    [ "$k_big" -ge $((128 * MIB)) ]; then
    echo "ok - KHEAP_PURGE_SLACK=1g keeps 128 MiB of freed pages resident ($k_big bytes; default $k_default)"
else
    echo "not ok - KHEAP_PURGE_SLACK: keepcost '$k_big' with 1g, '$k_default' by default"
fi
k_min0=$(keepcost env KHEAP_DECAY_MS=0 KHEAP_PURGE_SLACK=0 LD_PRELOAD="$SO" "$M/mallinfo" guarded)
k_min64=$(keepcost env KHEAP_DECAY_MS=0 KHEAP_PURGE_SLACK=0 KHEAP_PURGE_MIN=64m LD_PRELOAD="$SO" "$M/mallinfo" guarded)
if [ "$k_min0" = $((24 * MIB)) ] && [ "$k_min64" = $((32 * MIB)) ]; then
    echo "ok - KHEAP_PURGE_MIN=64m: runs of 8 MiB are not purged ($k_min64 bytes kept, $k_min0 without)"
else
    echo "not ok - KHEAP_PURGE_MIN: keepcost '$k_min64' with 64m, '$k_min0' without (want 32 and 24 MiB)"
fi
for bad in KHEAP_PURGE_SLACK=lots KHEAP_PURGE_SLACK=-1 KHEAP_PURGE_MIN=0 KHEAP_PURGE_MIN=3x \
    KHEAP_PURGE_SLACK=99999999999999999999 KHEAP_SAMPLE_RATE=many KHEAP_SAMPLE_RATE=-5; do
    k=$(keepcost env KHEAP_DECAY_MS=0 "$bad" LD_PRELOAD="$SO" "$M/mallinfo" keepcost)
    if [ "$(cat "$T/err")" = "kheap: ignoring $bad: $(sed -n 's/^kheap: ignoring [^:]*: //p' "$T/err")" ] &&
        [ "$(wc -l <"$T/err")" -eq 1 ] && [ "$k" = "$k_default" ]; then
        echo "ok - $bad is reported once and ignored: $(cat "$T/err")"
    else
        echo "not ok - $bad: keepcost '$k' (default '$k_default'), stderr:"
        sed 's/^/#   /' "$T/err"
    fi
done

# Live statistics. Records: "kheap-stats 1", "time ... reason R", "heap
# ...", "columns ...", one "cache" line per slabinfo row, "end SEQ".
records() { grep -c '^end ' "$1"; }
check_records() { # file: every record whole, the heap and every cache row in it
    awk '
        /^kheap-stats 1$/ { if (open) bad = 1; open = 1; rows = 0; heap = 0; next }
        /^time / { seq = $6; next }
        /^heap / { heap = 1; next }
        /^columns / { next }
        /^cache / { rows++; if (NF != 14) bad = 1; next }
        /^end / { if (!open || !heap || rows < 85 || $2 != seq) bad = 1; open = 0; n++; next }
        { bad = 1 }
        END { exit (bad || open || n == 0) }' "$1"
}
LOGF=$T/live.log
out=$(KHEAP_STATS_FILE="$LOGF" KHEAP_STATS_APPEND=1 KHEAP_STATS_INTERVAL=0.1 \
    LD_PRELOAD="$SO" "$M/churn" 1 fork 2>&1)
n=$(records "$LOGF")
pids=$(sed -n 's/^time .* pid \([0-9]*\) .*/\1/p' "$LOGF" | sort -u | wc -l)
last_1024=$(awk '/^cache kmalloc-1024 / { a = $3 } END { print a + 0 }' "$LOGF")
if [ "$out" = "held 1000" ] && check_records "$LOGF" && [ "$n" -ge 5 ] && [ "$pids" -eq 1 ] &&
    [ "$(sed -n '2s/.* reason //p' "$LOGF")" = start ] &&
    [ "$(grep '^time' "$LOGF" | tail -n 1 | sed 's/.* reason //')" = exit ] &&
    grep -q 'reason interval$' "$LOGF" && [ "$last_1024" -ge 1000 ]; then
    echo "ok - KHEAP_STATS_INTERVAL=0.1 appends $n whole records in 1 s (start, interval, exit; one pid across fork; 1000 held blocks in kmalloc-1024 at exit)"
else
    echo "not ok - live statistics, interval: $n records, $pids pids, kmalloc-1024 at exit '$last_1024', output '$out'"
    head -n 3 "$LOGF" | sed 's/^/#   /'
fi
cp "$LOGF" "$B/malloc/live-sample.log" 2>/dev/null

SNAP=$T/snap
LD_PRELOAD="$SO" KHEAP_STATS_FILE="$SNAP" KHEAP_STATS_SIGNAL=USR2 "$M/churn" 2 >/dev/null 2>&1 &
pid=$!
sleep 0.5
first=$(sed -n 's/^time .* reason //p' "$SNAP" 2>/dev/null)
kill -USR2 $pid
sleep 0.5
second=$(sed -n 's/^time .* reason //p' "$SNAP" 2>/dev/null)
wait $pid
rc=$?
last=$(sed -n 's/^time .* reason //p' "$SNAP" 2>/dev/null)
left=$(ls "$T" | grep -c '\.tmp$')
if [ $rc -eq 0 ] && [ "$first" = start ] && [ "$second" = signal ] && [ "$last" = exit ] &&
    [ "$left" -eq 0 ] && [ "$(records "$SNAP")" -eq 1 ] && check_records "$SNAP"; then
    echo "ok - KHEAP_STATS_SIGNAL=USR2 rewrites the snapshot (start, signal, exit), whole, no temporary file left"
else
    echo "not ok - live statistics, signal: status $rc, reasons '$first' '$second' '$last', $left temporary files"
fi

for bad in KHEAP_STATS_INTERVAL=soon KHEAP_STATS_INTERVAL=0.001 KHEAP_STATS_SIGNAL=KILL \
    KHEAP_STATS_SIGNAL=USR3; do
    out=$(env "$bad" KHEAP_STATS_FILE="$T/bad" LD_PRELOAD="$SO" "$M/churn" 0.1 2>&1 >/dev/null)
    if [ "$(printf '%s\n' "$out" | grep -c "^kheap: ignoring $bad: ")" -eq 1 ] &&
        [ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] && [ "$(records "$T/bad")" -eq 1 ]; then
        echo "ok - $bad is reported once and ignored: $out"
    else
        echo "not ok - $bad: stderr: $out"
    fi
done
