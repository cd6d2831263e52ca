#!/bin/sh
# kheap's benchmarks: install what they need, then bench/run.py.
#   bench/run.sh            full run, rewrites docs/BENCHMARKS.md
#   bench/run.sh --quick    reduced run (< 5 min), into bench/results/quick/
# Other arguments go to bench/run.py (--only hot,tput,pc,suite,real; --reps N).
set -eu
cd "$(dirname "$0")/.."
# Compilers and valgrind, then the peer allocators, hyperfine, gnuplot.
# A peer that cannot be installed is left out of the tables (run.py says
# so); a missing compiler or valgrind stops the run there.
tools/deps.sh build || echo "bench/run.sh: tools/deps.sh build failed; going on" >&2
tools/deps.sh bench || echo "bench/run.sh: tools/deps.sh bench failed; going on" >&2
tools/deps.sh real || echo "bench/run.sh: tools/deps.sh real failed; going on" >&2
exec python3 bench/run.py "$@"
