#!/bin/sh
# Install every Debian package kheap's build, tests, demo and benchmarks use.
# Idempotent and non-interactive: packages already present are skipped, and
# `apt-get update` runs at most once, only when something is missing.
#
#   tools/deps.sh            everything
#   tools/deps.sh build      compilers and test tools only (make)
#   tools/deps.sh demo       compilers and QEMU for the bare-metal kernels
#   tools/deps.sh real       compilers and the real programs run under
#                            libkheap.so (tests/real, bench/real.py), and
#                            what only the benchmarks run: Redis
#                            (bench/redis.py) and CPython's regression
#                            tests (bench/cpython.py)
#   tools/deps.sh package    compilers and the packaging tools (make
#                            install, the .deb, CMake, pkg-config)
#   tools/deps.sh tools      tmux and gnuplot, for the tests of tools/kheap-top
#   tools/deps.sh rust       Debian's cargo and rustc, when no cargo is on
#                            PATH (the Rust crate, bindings/rust)
#   tools/deps.sh check      all of these but bench and the benchmarks'
#                            own real programs (make check)
set -eu

# clang with libclang-rt (sanitizers, libFuzzer) builds the cross check
# clang-x86_64 and the fuzzing harnesses of tests/fuzz/.
build_pkgs="make gcc g++ clang libc6-dev libclang-rt-14-dev valgrind
  gcc-aarch64-linux-gnu gcc-riscv64-linux-gnu gcc-i686-linux-gnu
  gcc-arm-none-eabi libnewlib-arm-none-eabi"
# QEMU for the bare-metal kernels (RISC-V 64 is in -misc; the OpenSBI
# firmware behind -bios default comes with qemu-system-data, SeaBIOS with
# -x86). Cross compilers are in build_pkgs; the x86_64 kernel uses gcc.
demo_pkgs="qemu-system-misc qemu-system-arm qemu-system-x86"
# Programs no one here wrote, run under LD_PRELOAD=libkheap.so by make check
# (tests/real/run.sh) and the real-program benchmark (bench/real.py).
real_pkgs="python3 sqlite3 git perl lua5.4 coreutils"
# Real programs that only the benchmarks run: Redis (bench/redis.py) and
# CPython's regression tests (bench/cpython.py), whose package is named
# after the version of /usr/bin/python3, so it is known only once python3
# is installed (then the script runs once more to add it). Where services
# may start, redis-server's install starts one on port 6379; bench/redis.py
# runs its own servers on a socket of their own either way.
real_bench_pkgs="redis-server redis-tools"
if [ -x /usr/bin/python3 ]; then
  real_bench_pkgs="$real_bench_pkgs $(/usr/bin/python3 -c \
    'import sys; print("libpython%d.%d-testsuite" % sys.version_info[:2])')"
fi
# Packaging: make install's pkg-config test, the Debian package and its
# lintian check (tools/deb-check.sh), the CMake consumers.
package_pkgs="dpkg-dev debhelper fakeroot lintian pkg-config cmake"
# tools/kheap-top: its live view is tested in tmux, its chart drawn by gnuplot.
tool_pkgs="python3 tmux gnuplot-nox"
bench_pkgs="hyperfine time gnuplot-nox libjemalloc2 libmimalloc2.0
  libtcmalloc-minimal4"

# The Rust crate (bindings/rust) builds with Debian 12's cargo/rustc 1.63
# and with newer ones: a cargo already on PATH (e.g. from rustup) is used
# as it is, else Debian's is installed.
rust_pkgs=""
if ! command -v cargo >/dev/null 2>&1; then
  rust_pkgs="cargo rustc"
fi

case "${1:-all}" in
  build) want="$build_pkgs" ;;
  demo)  want="$build_pkgs $demo_pkgs" ;;
  real)  want="$build_pkgs $real_pkgs $real_bench_pkgs" ;;
  package) want="$build_pkgs $package_pkgs" ;;
  tools) want="$tool_pkgs" ;;
  rust)  want="$build_pkgs $rust_pkgs" ;;
  check) want="$build_pkgs $demo_pkgs $real_pkgs $package_pkgs $tool_pkgs $rust_pkgs" ;;
  bench) want="$bench_pkgs" ;;
  *) want="$build_pkgs $demo_pkgs $real_pkgs $real_bench_pkgs $package_pkgs $tool_pkgs $rust_pkgs
       $bench_pkgs" ;;
esac

missing=""
for p in $want; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0

SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "deps.sh: need root to install:$missing" >&2; exit 1
  fi
fi
echo "deps.sh: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq </dev/null
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing </dev/null
# python3 has just come with this group: once more, for its test suite.
case "$want" in
  *redis-server*-testsuite*) ;;
  *redis-server*) [ ! -x /usr/bin/python3 ] || exec "$0" "$@" ;;
esac
