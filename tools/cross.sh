#!/bin/sh
# Build the freestanding kheap core for one target.
#   tools/cross.sh TARGET OUTDIR [-DOPTION=...] -- SOURCES...
# The core may include only freestanding headers: -nostdinc leaves only the
# compiler's own include directory (stddef.h, stdint.h, stdbool.h) on the
# path, so a libc header would fail the build.
set -eu
target=$1 out=$2
shift 2
defs=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do defs="$defs $1"; shift; done
[ $# -gt 0 ] && shift

case $target in
  x86_64)        cc=gcc; ar=ar; flags="-m64 -fno-pic -mno-red-zone -mcmodel=kernel -mgeneral-regs-only" ;;
  i386)          cc=gcc; ar=ar; flags="-m32 -fno-pic -mgeneral-regs-only" ;;
  aarch64)       cc=aarch64-linux-gnu-gcc; ar=aarch64-linux-gnu-ar; flags="-mgeneral-regs-only -mno-outline-atomics" ;;
  riscv64)       cc=riscv64-linux-gnu-gcc; ar=riscv64-linux-gnu-ar; flags="-march=rv64imac -mabi=lp64 -mcmodel=medany" ;;
  arm-none-eabi) cc=arm-none-eabi-gcc; ar=arm-none-eabi-ar; flags="-mcpu=cortex-m4 -mthumb" ;;
  clang-x86_64)  cc=clang; ar=ar; flags="--target=x86_64-unknown-none-elf -mno-red-zone -mcmodel=kernel -mgeneral-regs-only" ;;
  *) echo "cross.sh: unknown target $target" >&2; exit 2 ;;
esac
command -v $cc >/dev/null 2>&1 || { echo "cross $target: $cc not installed (run tools/deps.sh)" >&2; exit 1; }

inc=$($cc $flags -print-file-name=include)
mkdir -p "$out"
rm -f "$out"/*.o "$out"/libkheap.a
for s in "$@"; do
  o="$out/$(basename "$s" .c).o"
  # shellcheck disable=SC2086
  $cc -std=c11 -ffreestanding -nostdlib -nostdinc -isystem "$inc" -fno-common \
    -Wall -Wextra -Wundef -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
    -O2 $flags $defs -Iinclude -c "$s" -o "$o"
done
$ar rcs "$out/libkheap.a" "$out"/*.o
echo "cross $target: ok ($cc $flags)"
