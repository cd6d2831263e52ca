# The bare-metal demo kernels: kheap's default heap as the heap of a small
# kernel on riscv64, aarch64, x86_64 and Cortex-M (one CPU) under QEMU
# (included by Makefile).
#
#   make demo [ARCH=riscv64|aarch64|x86_64|cortex-m]   build, boot, show the output
#   make kernels                                       build all four
#   make kernel-rust-x86_64                            the x86_64 kernel with the
#                                                      Rust library of demo/rust
#
# Each kernel is the freestanding core, the bare-metal port
# (src/port/baremetal.c), the shared test bodies (tests/bodies.c, tests/support.c), the
# shared kernel (demo/kernel.c, demo/libc.c) and the architecture's own
# files (demo/<arch>/: start.S, arch.c, kernel.ld).
# KERNEL_IMAGE_<arch> is what QEMU boots.

ARCH           ?= riscv64
KERNEL_ARCHES  := riscv64 aarch64 x86_64 cortex-m
# Test sizes of the kernels (TCG emulation is slow; four CPUs slower).
DEMO_MODEL_OPS ?= 100000
DEMO_STRESS_OPS?= 300000

KERNEL_IMAGE_riscv64 := kernel.elf
KERNEL_IMAGE_aarch64 := kernel.elf
KERNEL_IMAGE_x86_64  := kernel32.elf
KERNEL_IMAGE_cortex-m := kernel.elf

KCC_riscv64    := riscv64-linux-gnu-gcc
KFLAGS_riscv64 := -march=rv64imac_zicsr_zifencei -mabi=lp64 -mcmodel=medany -mno-relax
KCC_aarch64    := aarch64-linux-gnu-gcc
KFLAGS_aarch64 := -mcpu=cortex-a57 -mgeneral-regs-only -mno-outline-atomics -mstrict-align
KCC_x86_64     := gcc
KFLAGS_x86_64  := -m64 -march=x86-64 -mno-red-zone -mgeneral-regs-only -mcmodel=small
KLINK_x86_64   := -m64 -Wl,-z,max-page-size=4096
KLIBS_aarch64  := -lgcc
KLIBS_x86_64   := -lgcc
# Cortex-M3 (ARMv7-M, Thumb-2, no FPU) on QEMU mps2-an385; the code runs
# on a Cortex-M4 too. One CPU, and a heap the size of a microcontroller's
# RAM rather than the 8 MiB default: CM_HEAP_SIZE bytes (16 KiB) in the
# small-system profile (KHEAP_PROFILE_SMALL=1; KHEAP_DEFAULT_SIZE=...
# overrides the size). make check also boots the default profile on
# CM_DEFAULT_HEAP_SIZE bytes (512 KiB, the smallest power of two with
# which it passes the kernel's tests): kernel-cmdefault-cortex-m.
KCC_cortex-m    := arm-none-eabi-gcc
KFLAGS_cortex-m := -mcpu=cortex-m3 -mthumb -mfloat-abi=soft
KLIBS_cortex-m  := -lgcc
CM_HEAP_SIZE    ?= 16384
CM_DEFAULT_HEAP_SIZE ?= 524288
CM_OPTIONS      := $(filter-out -DKHEAP_DEFAULT_SIZE=% -DKHEAP_MAX_CPUS=% -DKHEAP_PROFILE_SMALL=%,$(OPTIONS))
KOPTS_cortex-m  := $(CM_OPTIONS) -DKHEAP_PROFILE_SMALL=1 -DDEMO_SMALL=1 \
                   -DKHEAP_DEFAULT_SIZE=$(or $(KHEAP_DEFAULT_SIZE),$(CM_HEAP_SIZE)) -DKHEAP_MAX_CPUS=1
KOPTS_cmdefault := $(CM_OPTIONS) -DKHEAP_DEFAULT_SIZE=$(CM_DEFAULT_HEAP_SIZE) -DKHEAP_MAX_CPUS=1

KERNEL_SRC = $(CORE_SRC) src/port/baremetal.c tests/bodies.c tests/support.c tests/small.c \
             demo/kernel.c demo/libc.c \
             demo/$(1)/arch.c demo/$(1)/start.S
KERNEL_HDRS := $(HDRS) src/port/baremetal_cpu.h include/kheap_baremetal.h tests/bodies.h \
               tests/support.h tests/small.h tests/rand.h demo/arch.h demo/demo.mk

# $(1) architecture, $(2) build directory under $(B), $(3) build options.
define kernel
$(B)/$(2)/$(1)/%.o: %.c $(KERNEL_HDRS)
	@mkdir -p $$(dir $$@)
	$(msg) CC $$<
	$(Q)$(KCC_$(1)) -std=c11 -ffreestanding -nostdinc -isystem $$$$($(KCC_$(1)) $(KFLAGS_$(1)) -print-file-name=include) \
	  -fno-common -fno-pie -fno-stack-protector -fno-tree-loop-distribute-patterns \
	  $(WARN) -O2 -g $(KFLAGS_$(1)) $(3) \
	  -DKHEAP_PORT_CPU_HEADER='"port/baremetal_cpu.h"' \
	  -DDEMO_MODEL_OPS=$(DEMO_MODEL_OPS) -DDEMO_STRESS_OPS=$(DEMO_STRESS_OPS) \
	  -Iinclude -Isrc -Isrc/core -Itests -Idemo -c $$< -o $$@

$(B)/$(2)/$(1)/%.o: %.S demo/demo.mk
	@mkdir -p $$(dir $$@)
	$(msg) AS $$<
	$(Q)$(KCC_$(1)) $(KFLAGS_$(1)) -fno-pie -c $$< -o $$@

$(B)/$(2)/$(1)/kernel.elf: $(KEXTRA_$(2)) $(addprefix $(B)/$(2)/$(1)/,$(patsubst %.S,%.o,$(patsubst %.c,%.o,$(call KERNEL_SRC,$(1))))) demo/$(1)/kernel.ld
	$(msg) LD $$@
	$(Q)$(KCC_$(1)) $(KFLAGS_$(1)) $(KLINK_$(1)) -nostdlib -static -no-pie -Wl,--build-id=none -Wl,--no-warn-rwx-segments \
	  -T demo/$(1)/kernel.ld $$(filter %.o,$$^) $(KEXTRA_$(2)) $(KLIBS_$(1)) -o $$@

$(2)-$(1): $(B)/$(2)/$(1)/kernel.elf
endef

# QEMU's multiboot loader takes 32-bit ELF only; the addresses fit.
$(B)/kernel/x86_64/kernel32.elf: $(B)/kernel/x86_64/kernel.elf
	$(msg) OBJCOPY $@
	$(Q)objcopy -O elf32-i386 $< $@
kernel-x86_64: $(B)/kernel/x86_64/kernel32.elf

# What make check boots: label=image, the label's first word the
# architecture.
CHECK_KERNELS := $(foreach a,$(KERNEL_ARCHES),$(a)=$(B)/kernel/$(a)/$(KERNEL_IMAGE_$(a))) \
                 riscv64-debug2=$(B)/kernel-debug2/riscv64/kernel.elf
$(foreach a,$(KERNEL_ARCHES),$(eval $(call kernel,$(a),kernel,$(or $(KOPTS_$(a)),$(OPTIONS)))))
# make check also boots the RISC-V kernel built with KHEAP_DEBUG=2
# (assertions and poisoning on every slow path).
$(eval $(call kernel,riscv64,kernel-debug2,$(filter-out -DKHEAP_DEBUG=%,$(OPTIONS)) -DKHEAP_DEBUG=2))
$(B)/kernel-debug2/riscv64/kernel.elf: demo/riscv64/kernel.ld
# ... and the Cortex-M kernel in the default profile.
$(eval $(call kernel,cortex-m,kernel-cmdefault,$(KOPTS_cmdefault)))
CHECK_KERNELS += cortex-m-default=$(B)/kernel-cmdefault/cortex-m/kernel.elf

# The x86_64 kernel with a Rust library (demo/rust) whose
# #[global_allocator] is the kheap crate (bindings/rust, feature
# extern-core: the kernel links kheap's core and port once, in C). Built
# for the installed x86_64-unknown-linux-gnu core/alloc with
# panic = "abort" and a static relocation model; SSE is on in this kernel
# (start.S), and the Rust code runs with interrupts masked (red zone).
RUST_KERNEL_LIB := $(B)/rust-kernel/x86_64-unknown-linux-gnu/release/libkheap_demo.a
KEXTRA_kernel-rust := $(RUST_KERNEL_LIB)
# Rust before 1.68 (Debian 12: 1.63) needs the then-unstable default alloc
# error handler for a no_std library (demo/rust/build.rs): allowed for
# those versions only.
RUST_OLD = $(shell $${RUSTC:-rustc} --version 2>/dev/null | awk '{split($$2, v, "."); print (v[1] == 1 && v[2] < 68)}')
$(RUST_KERNEL_LIB): include/kheap.h $(wildcard demo/rust/src/*.rs demo/rust/Cargo.* demo/rust/build.rs bindings/rust/src/*.rs bindings/rust/Cargo.* bindings/rust/build.rs)
	$(msg) CARGO $@
	$(Q)$(if $(filter 1,$(RUST_OLD)),RUSTC_BOOTSTRAP=1) \
	  CARGO_TARGET_DIR=$(B)/rust-kernel RUSTFLAGS="-C relocation-model=static -C code-model=small" \
	  cargo build --offline --release --quiet --manifest-path demo/rust/Cargo.toml \
	  --target x86_64-unknown-linux-gnu
$(eval $(call kernel,x86_64,kernel-rust,$(OPTIONS) -DDEMO_RUST=1))
$(B)/kernel-rust/x86_64/kernel32.elf: $(B)/kernel-rust/x86_64/kernel.elf
	$(msg) OBJCOPY $@
	$(Q)objcopy -O elf32-i386 $< $@
kernel-rust-x86_64: $(B)/kernel-rust/x86_64/kernel32.elf
CHECK_KERNELS += x86_64-rust=$(B)/kernel-rust/x86_64/kernel32.elf

.PHONY: kernels check-kernels kernel-rust-x86_64 $(addprefix kernel-,$(KERNEL_ARCHES)) kernel-debug2-riscv64 \
        kernel-cmdefault-cortex-m
kernels: $(addprefix kernel-,$(KERNEL_ARCHES))
check-kernels: kernels kernel-debug2-riscv64 kernel-cmdefault-cortex-m kernel-rust-x86_64
