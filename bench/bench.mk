# kheap's benchmarks; included from the Makefile (`include bench/bench.mk`).
#
#   make bench          full run (a few minutes): bench/results/*.csv and
#                       docs/BENCHMARKS.md
#   make bench-quick    reduced run (< 3 minutes): bench/results/quick/
#   make bench-clean    remove bench/build/
#
# bench/run.sh builds what it needs itself (libkheap.a with a 256 MiB
# default heap, through the Makefile's release rules, into bench/build/).

.PHONY: bench bench-quick bench-clean

bench:
	bench/run.sh

bench-quick:
	bench/run.sh --quick

bench-clean:
	rm -rf bench/build
