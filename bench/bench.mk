# kheap's benchmarks; included from the Makefile (`include bench/bench.mk`).
#
#   make bench          full run (about an hour): the hot path, thread
#                       scaling, producer/consumer, the workload suite, the
#                       real programs, memory that follows use, Redis and
#                       CPython's regression tests; bench/results/*.csv,
#                       docs/BENCHMARKS.md and its charts
#                       (docs/bench-time.png, docs/bench-rss.png)
#   make bench-quick    reduced run (under 5 minutes): bench/results/quick/
#   make bench-real     the real programs alone (python3, sqlite3, git, gcc,
#                       perl, lua, sort, g++): bench/results/real.csv and
#                       their section of docs/BENCHMARKS.md
#   make bench-follow   memory that follows use alone: cycles of large
#                       blocks, Python's LZMA compressor, buffers shrunk by
#                       realloc, the large workload (about two minutes):
#                       bench/results/follow.csv
#                       and its section of docs/BENCHMARKS.md
#   make bench-redis    Redis alone: SET requests/s, and RSS after FLUSHALL
#                       while idle (about 12 minutes): bench/results/redis.csv
#                       and its section of docs/BENCHMARKS.md
#   make bench-cpython  CPython's regression tests alone: time, peak RSS and
#                       their results under each allocator (about 15
#                       minutes): bench/results/cpython.csv and its section
#   make bench-clean    remove bench/build/
#   make bench-rust     the Rust crate (bindings/rust): GlobalAlloc against
#                       Rust's System allocator and kernel-like trace
#                       replays against a first-fit list (a few minutes);
#                       its section of docs/BENCHMARKS.md
#
# bench/run.sh builds what it needs itself (libkheap.a with a 256 MiB
# default heap into bench/build/ for bench/bench.c; build/libkheap.so for
# the workloads and real programs, through the Makefile's release rules).

.PHONY: bench bench-quick bench-real bench-follow bench-redis bench-cpython bench-clean

bench:
	bench/run.sh

bench-quick:
	bench/run.sh --quick

bench-real:
	tools/deps.sh real
	tools/deps.sh bench || echo "bench-real: some peers could not be installed" >&2
	python3 bench/real.py

bench-follow:
	tools/deps.sh real
	tools/deps.sh bench || echo "bench-follow: some peers could not be installed" >&2
	python3 bench/follow.py

bench-redis:
	tools/deps.sh real
	tools/deps.sh bench || echo "bench-redis: some peers could not be installed" >&2
	python3 bench/redis.py

bench-cpython:
	tools/deps.sh real
	tools/deps.sh bench || echo "bench-cpython: some peers could not be installed" >&2
	python3 bench/cpython.py

bench-clean:
	rm -rf bench/build

# The Rust crate (bindings/rust/benches/kheap_bench.rs, a plain binary):
# GlobalAlloc against Rust's System allocator, and kernel-like trace
# replays against a first-fit list like the seed's, with the crate's Rust
# port and with the hosted port. Markdown tables on stdout, then into
# their own section of docs/BENCHMARKS.md (bench/rust_doc.py; the rest of
# the file is left alone).
bench-rust:
	@tools/deps.sh rust
	@mkdir -p $(B)
	cd bindings/rust && for f in "" "--features std"; do \
	  CARGO_TARGET_DIR=$(CURDIR)/$(B)/rust cargo bench --offline --quiet $$f || exit 1; \
	done > $(CURDIR)/$(B)/bench-rust.md
	bench/rust_callgrind.sh "$$(cd bindings/rust && CARGO_TARGET_DIR=$(CURDIR)/$(B)/rust \
	  cargo bench --offline --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))/\1/p')" \
	  >> $(B)/bench-rust.md
	cat $(B)/bench-rust.md
	python3 bench/rust_doc.py < $(B)/bench-rust.md
.PHONY: bench-rust
