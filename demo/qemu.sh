#!/bin/sh
# Boot one demo kernel in QEMU and pass its console through.
#   demo/qemu.sh ARCH KERNEL_ELF [TIMEOUT_SECONDS]   (env: KHEAP_KERNEL_CPUS,
#   KHEAP_KERNEL_TIMEOUT, KHEAP_QEMU_EXTRA)
# Exit status 0 only when QEMU reported the kernel's pass status and the
# kernel's last word was "N passed, 0 failed"; 1 otherwise (a failure,
# a crash, or no end within the timeout).
set -u
arch=$1 kernel=$2 limit=${3:-${KHEAP_KERNEL_TIMEOUT:-120}}
smp=${KHEAP_KERNEL_CPUS:-4}
case $arch in
  riscv64)
    qemu=qemu-system-riscv64
    args="-machine virt -bios default -smp $smp -m 128M"
    pass=0 ;;
  aarch64)
    qemu=qemu-system-aarch64
    args="-machine virt -cpu cortex-a57 -smp $smp -m 128M -semihosting"
    pass=0 ;;
  x86_64)
    qemu=qemu-system-x86_64
    # isa-debug-exit: the kernel writes v, QEMU exits with (v << 1) | 1.
    args="-machine pc -smp $smp -m 128M -no-reboot
          -device isa-debug-exit,iobase=0xf4,iosize=0x04"
    pass=1 ;;
  cortex-m)
    # One CPU (the board has one); semihosting SYS_EXIT_EXTENDED gives
    # the status.
    qemu=qemu-system-arm
    args="-machine mps2-an385 -semihosting-config enable=on,target=native"
    pass=0 ;;
  *) echo "qemu.sh: unknown architecture $arch" >&2; exit 2 ;;
esac
# KHEAP_QEMU_EXTRA: more QEMU options, e.g. "-icount shift=0" (one
# virtual nanosecond per instruction: the kernels' hit-path line then
# gives instruction counts).
args="$args ${KHEAP_QEMU_EXTRA:-}"
command -v $qemu >/dev/null 2>&1 || { echo "qemu.sh: $qemu not installed (tools/deps.sh demo)" >&2; exit 2; }
log=$(mktemp)
# shellcheck disable=SC2086
{ timeout "$limit" $qemu $args -display none -monitor none -serial stdio -kernel "$kernel" \
    </dev/null; echo $? >"$log.rc"; } | tr -d '\r' | tee "$log"
rc=$(cat "$log.rc")
set -- $(sed -n 's/^\([0-9][0-9]*\) passed, \([0-9][0-9]*\) failed$/\1 \2/p' "$log" | tail -n 1)
rm -f "$log" "$log.rc"
if [ "$rc" -eq 124 ]; then
  echo "qemu.sh: $arch kernel did not finish within $limit s"; exit 1
fi
if [ "$rc" -ne "$pass" ]; then
  echo "qemu.sh: QEMU exited with status $rc; the kernel's pass status is $pass"; exit 1
fi
[ $# -eq 2 ] && [ "$2" -eq 0 ] || { echo "qemu.sh: no 'N passed, 0 failed' line"; exit 1; }
exit 0
