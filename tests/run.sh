#!/bin/sh
# The test runner behind `make check`.
#   tests/run.sh BUILD_DIR "VARIANTS" "TESTS" "CROSS_TARGETS" ["LABEL=KERNEL ..."]
# Runs every test program in every hosted variant (each with the sizes
# and wrapper that variant can afford), builds the core for every cross
# target, runs the demo, boots each bare-metal kernel in QEMU (its test
# lines count like any other), and counts "ok" / "not ok" lines. A program that
# dies or times out without reporting a failure counts as one failure.
# Logs go to BUILD_DIR/test-logs/. The last line is "N passed, N failed".
set -u
B=$1 VARIANTS=$2 TESTS=$3 CROSS=$4 KERNELS=${5:-}
LOG=$B/test-logs
mkdir -p "$LOG"
pass=0
fail=0
TIMEOUT=${KHEAP_TEST_TIMEOUT:-900}

count() { # label logfile exit-status
    p=$(grep -c '^ok - ' "$2")
    f=$(grep -c '^not ok - ' "$2")
    grep '^not ok - ' "$2" | sed "s|^|  [$1] |"
    if [ "$3" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
        echo "  [$1] not ok - exited with status $3; last lines of $2:"
        tail -n 8 "$2" | sed 's/^/    /'
    fi
    pass=$((pass + p))
    fail=$((fail + f))
    printf '%-28s %4d passed, %d failed\n' "$1" "$p" "$f"
}

run() { # label command...
    label=$1
    shift
    out="$LOG/$label.log"
    timeout "$TIMEOUT" "$@" >"$out" 2>&1
    count "$label" "$out" $?
}

for v in $VARIANTS; do
    case $v in
    release)  envs="" wrap="" ;;
    asan)     envs="KHEAP_TEST_OPS=200000 ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1" wrap="" ;;
    # kheap_check holds every lock of a heap at once, more than the deadlock
    # detector of ThreadSanitizer can track (64): data races are checked,
    # lock order is not.
    tsan)     envs="KHEAP_TEST_OPS=100000 KHEAP_TEST_SMALL=1 TSAN_OPTIONS=halt_on_error=1:detect_deadlocks=0" wrap="" ;;
    debug3)   envs="KHEAP_TEST_OPS=4000 KHEAP_TEST_HEAP=4194304 KHEAP_TEST_SMALL=1" wrap="" ;;
    # The release tests linked with the single-file distribution.
    amalg)    envs="" wrap="" ;;
    valgrind) envs="KHEAP_TEST_OPS=40000 KHEAP_TEST_SMALL=1"
              wrap="valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect" ;;
    *)        envs="" wrap="" ;;
    esac
    for t in $TESTS; do
        bin="$B/$v/tests/$t"
        if [ ! -x "$bin" ]; then
            echo "  [$v/$t] not ok - not built"
            fail=$((fail + 1))
            continue
        fi
        # shellcheck disable=SC2086
        run "$v-$t" env $envs $wrap "$bin"
    done
done

# The debug build's redzones after object-cache objects (tests/redzone.c,
# built with KHEAP_REDZONE only).
if [ -x "$B/redzone/tests/redzone" ]; then
    run redzone-caches "$B/redzone/tests/redzone"
else
    echo "  [redzone-caches] not ok - not built"
    fail=$((fail + 1))
fi

# The core's layering: no file calls a file above it (tools/layers.sh, on
# the objects of the release build and of the builds that compile code the
# release leaves out; CORE_SRC lists the core bottom up).
for v in release debug3 valgrind; do
    run "layers-$v" tools/layers.sh "$B/$v/obj/core" ${CORE_SRC:-}
done

for t in $CROSS; do
    out="$LOG/cross-$t.log"
    # Without the outer make's jobserver (`make -jN check` does not pass it
    # to this script): the inner make would warn that it is gone, and the
    # count would take the warning for a failure.
    MAKEFLAGS=$(printf '%s' "${MAKEFLAGS:-}" | sed 's/--jobserver-[a-z]*=[^ ]*//g; s/ -j[0-9]*//g; s/^-j[0-9]*//') \
        make --no-print-directory "cross-$t" >"$out" 2>&1
    rc=$?
    if [ $rc -eq 0 ] && ! grep -q -i 'warning' "$out"; then
        echo "ok - cross $t" >>"$out"
        count "cross-$t" "$out" 0
    else
        echo "not ok - cross $t (see $out)" >>"$out"
        count "cross-$t" "$out" 1
    fi
done

# The threaded tests under valgrind's drd race detector (the valgrind
# build annotates kheap's atomics for it).
for t in test_threads test_default test_percpu; do
    bin="$B/valgrind/tests/$t"
    [ -x "$bin" ] || continue
    run "drd-$t" env KHEAP_TEST_OPS=5000 KHEAP_TEST_SMALL=1 \
        valgrind -q --tool=drd --error-exitcode=98 "$bin"
done

# memcheck must see kheap objects: the probe leaks one and reads two
# freed ones on purpose.
out="$LOG/valgrind-probe.log"
if [ -x "$B/valgrind/tests/vg_probe" ] && command -v valgrind >/dev/null; then
    valgrind --leak-check=full "$B/valgrind/tests/vg_probe" >"$out" 2>&1
    if grep -q 'definitely lost: 104 bytes in 1 blocks' "$out" &&
        [ "$(grep -c 'Invalid read of size 1' "$out")" -eq 2 ]; then
        echo "ok - valgrind reports the leaked kheap object and both uses after free" >>"$out"
        count valgrind-probe "$out" 0
    else
        echo "not ok - valgrind did not report the probe's leak and uses after free" >>"$out"
        count valgrind-probe "$out" 1
    fi
else
    echo "  [valgrind-probe] not ok - not built"
    fail=$((fail + 1))
fi

# libkheap.so: its own tests (API, start-up, fork, threads, limits, RSS,
# bad frees, environment, glibc's extensions, live statistics), then real programs compared with glibc.
run malloc tests/malloc/run.sh "$B"
run real-programs tests/real/run.sh "$B"
# tools/kheap-top on a recorded file, its chart, and live in tmux.
run kheap-top tests/tools/kheap-top.sh "$B"

# Packaging: the port template of the single-file distribution, that
# distribution cross-built for a Cortex-M4, make install and uninstall with
# pkg-config, the CMake package both ways, the Debian packages.
run packaging tests/pkg/run.sh "$B"

# Every benchmark once with tiny counts: the workloads under kheap and
# glibc, bench/bench.c's modes under kheap (speed is measured by make
# bench, not here).
run bench-smoke python3 bench/suite.py --smoke --lib "$B/libkheap.so"

# The Rust crate (bindings/rust): its #[global_allocator] test programs
# with the crate's own Rust port (no_std) and with the hosted port (feature
# std). cargo is Debian's (tools/deps.sh) unless one is already on PATH.
for f in rust-port:"" rust-std:"--features std"; do
    # shellcheck disable=SC2086
    run "${f%%:*}" env CARGO_TARGET_DIR="$B/rust" \
        cargo test --offline --manifest-path bindings/rust/Cargo.toml ${f#*:}
done

# The libFuzzer harnesses (tests/fuzz/), a fixed seed and count each, on
# a copy of the committed corpus, so that the run leaves the tree as it was.
for h in fuzz_api fuzz_misuse; do
    bin="$B/fuzz/$h"
    if [ ! -x "$bin" ]; then
        echo "  [$h] not ok - not built"
        fail=$((fail + 1))
        continue
    fi
    work="$B/fuzz/check/$h"
    rm -rf "$work"
    mkdir -p "$work/corpus" "$work/crash"
    cp tests/fuzz/corpus/"$h"/* "$work/corpus/" 2>/dev/null
    out="$LOG/$h.log"
    # A fixed seed and number of runs: the same inputs on every machine,
    # so a run that passed passes again (make fuzz explores at random).
    case $h in fuzz_api) runs=10000 ;; *) runs=30000 ;; esac
    timeout "$TIMEOUT" "$bin" -seed="${KHEAP_FUZZ_SEED:-1}" -runs="${KHEAP_FUZZ_RUNS:-$runs}" \
        -max_total_time="${KHEAP_FUZZ_SECONDS:-240}" -max_len=4096 \
        -artifact_prefix="$work/crash/" "$work/corpus" >"$out" 2>&1
    rc=$?
    crash=$(find "$work/crash" -type f | head -n 1)
    if [ $rc -eq 0 ] && [ -z "$crash" ]; then
        runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1/p' "$out")
        secs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\2/p' "$out")
        echo "ok - $h: ${runs:-?} runs in ${secs:-?} s, corpus $(find "$work/corpus" -type f | wc -l)" >>"$out"
    else
        first=$(grep -m 1 -E '^fuzz: |ERROR: |SUMMARY: ' "$out")
        echo "not ok - $h: crash ${crash:-(no crash file)}: $first" >>"$out"
        [ $rc -ne 0 ] || rc=1
    fi
    count "$h" "$out" $rc
    if [ $rc -ne 0 ]; then
        grep -m 4 -E '^fuzz: |ERROR: |^    #[0-9] ' "$out" | sed 's/^/    /'
    fi
done

out="$LOG/demo.log"
if [ -x "$B/demo/hosted_demo" ]; then
    timeout "$TIMEOUT" "$B/demo/hosted_demo" 5000 >"$out" 2>&1
    rc=$?
    [ $rc -eq 0 ] && echo "ok - demo" >>"$out"
    count demo "$out" $rc
else
    echo "  [demo] not ok - not built"
    fail=$((fail + 1))
fi

# The bare-metal kernels: each runs its tests under QEMU with four CPUs
# (Cortex-M: one)
# and must end with "N passed, 0 failed" and QEMU's pass status within
# KHEAP_KERNEL_TIMEOUT seconds (demo/qemu.sh). LABEL is the architecture,
# optionally followed by -variant.
for k in $KERNELS; do
    label=${k%%=*} image=${k#*=}
    case $label in # the architecture is the label's first word
    cortex-m*) arch=cortex-m ;; # ... or "cortex-m", which has a dash
    *) arch=${label%%-*} ;;
    esac
    if [ ! -f "$image" ]; then
        echo "  [kernel-$label] not ok - not built"
        fail=$((fail + 1))
        continue
    fi
    out="$LOG/kernel-$label.log"
    start=$(date +%s)
    demo/qemu.sh "$arch" "$image" "${KHEAP_KERNEL_TIMEOUT:-120}" >"$out" 2>&1
    rc=$?
    echo "# $label kernel ran $(($(date +%s) - start)) s" >>"$out"
    count "kernel-$label" "$out" $rc
done

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
