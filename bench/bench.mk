# kheap's benchmarks; included from the Makefile (`include bench/bench.mk`).
#
#   make bench          full run (a few minutes): bench/results/*.csv and
#                       docs/BENCHMARKS.md
#   make bench-quick    reduced run (< 3 minutes): bench/results/quick/
#   make bench-real     real programs (python3, sqlite3, git, gcc, perl, lua,
#                       sort, g++) under kheap's libkheap.so and the peers:
#                       bench/results/real.csv and a section of
#                       docs/BENCHMARKS.md (about 5 minutes)
#   make bench-clean    remove bench/build/
#
# bench/run.sh builds what it needs itself (libkheap.a with a 256 MiB
# default heap, through the Makefile's release rules, into bench/build/).

.PHONY: bench bench-quick bench-real bench-clean

bench:
	bench/run.sh

bench-quick:
	bench/run.sh --quick

bench-real:
	tools/deps.sh real
	tools/deps.sh bench || echo "bench-real: some peers could not be installed" >&2
	python3 bench/real.py

bench-clean:
	rm -rf bench/build
