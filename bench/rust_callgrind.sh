#!/bin/sh
# Instructions per operation of the Rust crate's kernel-like trace replay
# (bindings/rust/benches/kheap_bench.rs, steady state only), under
# callgrind, for kheap, glibc through Rust's System, the first-fit list and
# the bare loop, at 10^3 .. 10^6 live objects. Prints a markdown table.
#   bench/rust_callgrind.sh BENCH_BINARY
set -eu
bin=$1
ops=40960
row() { # live
    printf '| %s |' "$1"
    for which in kheap system firstfit loop; do
        if [ "$which" = firstfit ] && [ "$1" -gt 10000 ]; then
            printf ' not run |'
            continue
        fi
        n=$(KHEAP_BENCH_ALLOC=$which KHEAP_BENCH_LIVE=$1 valgrind --tool=callgrind \
            --collect-atstart=no --toggle-collect='*steady_state*' \
            --callgrind-out-file=/dev/null "$bin" 2>&1 >/dev/null |
            sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
        eval "ir_$which=$n"
        printf ' %s |' "$(echo "$n $ops" | awk '{printf "%.0f", $1 / $2}')"
    done
    # The allocator's own share: total minus the loop's.
    for which in kheap system; do
        eval "v=\$ir_$which"
        printf ' %s |' "$(echo "$v $ir_loop $ops" | awk '{printf "%.0f", ($1 - $2) / $3}')"
    done
    echo
}
echo "### Instructions per operation (callgrind, steady state of the trace replay, 20480 steps)"
echo
echo "The crate's Rust port (default features). First-fit runs up to 10^4 live objects here (slow under valgrind)."
echo "Counted in the replay's steady-state function only (one free and one allocation per step, the"
echo "loop's own work included); the last two columns subtract the bare loop. Instruction counts do not"
echo "depend on the machine's load or caches: they show the work per operation staying flat while the"
echo "first-fit list's grows with the live set."
echo
echo "| live objects | kheap Ir/op | System Ir/op | first-fit Ir/op | loop Ir/op | kheap minus loop | System minus loop |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
for live in 1000 10000 100000 1000000; do
    row "$live"
done
echo
