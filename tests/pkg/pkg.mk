# The packaging checks of make check (included by Makefile):
#   amalgamation-checks  builds, from the single-file distribution
#                        ($(B)/dist, written as `make amalgamation` writes
#                        dist/): libkheap.a with the hosted port and the
#                        hosted tests over it ($(B)/amalg/tests/, run by
#                        tests/run.sh as the variant "amalg"), a program on
#                        the port template ($(B)/amalg/template_test), and
#                        the RISC-V 64 demo kernel (booted with the others)
# tests/pkg/run.sh then checks make install, pkg-config, CMake and the
# Debian packages.

AMALG      := $(B)/amalg
AMALG_HDRS := $(B)/dist/kheap.h $(B)/dist/kheap_port.h
# The port headers a port's own files include, next to the distribution's
# headers so their "kheap_port.h" is the distribution's.
AMALG_PORT_HDRS := $(wildcard include/kheap_hosted.h include/kheap_baremetal.h)

$(AMALG)/inc/.stamp: $(AMALG_HDRS) $(AMALG_PORT_HDRS)
	@mkdir -p $(dir $@)
	$(Q)cp $^ $(dir $@) && touch $@

$(AMALG)/obj/kheap.o: $(B)/dist/kheap.c $(AMALG)/inc/.stamp
	@mkdir -p $(dir $@)
	$(msg) CC $<
	$(Q)$(CC) $(CSTD) $(WARN) $(FLAGS_release) $(OPTIONS) $(HOSTED_DEFS) -I$(AMALG)/inc -c $< -o $@

$(AMALG)/obj/hosted.o: src/port/hosted.c src/port/hosted_cpu.h $(AMALG)/inc/.stamp
	@mkdir -p $(dir $@)
	$(msg) CC $<
	$(Q)$(CC) $(CSTD) $(WARN) $(FLAGS_release) $(OPTIONS) $(HOSTED_DEFS) -I$(AMALG)/inc -c $< -o $@

$(AMALG)/libkheap.a: $(AMALG)/obj/kheap.o $(AMALG)/obj/hosted.o
	$(msg) AR $@
	$(Q)$(AR) rcs $@ $^

# The hosted tests over the amalgamation (the white-box ones still read
# src/core's internal headers, which the amalgamation inlines).
# The test support (tests/support.c, tests/harness.c) is compiled with each.
AMALG_TEST_SUPPORT := tests/support.c tests/harness.c

$(AMALG)/tests/%: tests/%.c $(TEST_HDRS) $(AMALG_TEST_SUPPORT) $(AMALG)/libkheap.a
	@mkdir -p $(dir $@)
	$(msg) LD $@
	$(Q)$(CC) $(CSTD) $(WARN) -Wno-missing-prototypes $(FLAGS_release) $(OPTIONS) \
	  $(HOSTED_DEFS) -I$(AMALG)/inc -Isrc/core $< $(AMALG_TEST_SUPPORT) $(AMALG)/libkheap.a \
	  -o $@ -lpthread

$(AMALG)/tests/test_bodies: tests/test_bodies.c tests/bodies.c tests/bodies.h $(TEST_HDRS) \
                            $(AMALG_TEST_SUPPORT) $(AMALG)/libkheap.a
	@mkdir -p $(dir $@)
	$(msg) LD $@
	$(Q)$(CC) $(CSTD) $(WARN) $(FLAGS_release) $(OPTIONS) $(HOSTED_DEFS) -I$(AMALG)/inc -Isrc/core \
	  tests/test_bodies.c tests/bodies.c $(AMALG_TEST_SUPPORT) $(AMALG)/libkheap.a -o $@ -lpthread

$(AMALG)/tests/test_small: tests/test_small.c tests/small.c tests/small.h tests/bodies.c \
                           tests/bodies.h $(TEST_HDRS) $(AMALG_TEST_SUPPORT) $(AMALG)/libkheap.a
	@mkdir -p $(dir $@)
	$(msg) LD $@
	$(Q)$(CC) $(CSTD) $(WARN) $(FLAGS_release) $(OPTIONS) $(HOSTED_DEFS) -I$(AMALG)/inc -Isrc/core \
	  tests/test_small.c tests/small.c tests/bodies.c $(AMALG_TEST_SUPPORT) $(AMALG)/libkheap.a \
	  -o $@ -lpthread

amalg-tests: $(addprefix $(AMALG)/tests/,$(TESTS))

# The port template as shipped, run hosted: only the distribution's files.
$(AMALG)/template_test: tests/pkg/template_main.c $(B)/dist/kheap.c $(B)/dist/kheap_port_template.c \
                        $(AMALG_HDRS)
	@mkdir -p $(dir $@)
	$(msg) LD $@
	$(Q)$(CC) $(CSTD) $(WARN) -Wno-missing-prototypes -O2 -g -I$(B)/dist tests/pkg/template_main.c \
	  $(B)/dist/kheap.c $(B)/dist/kheap_port_template.c -o $@

# The RISC-V 64 demo kernel with kheap.c in place of src/core/*.c.
AMALG_KSRC := $(B)/dist/kheap.c src/port/baremetal.c tests/bodies.c tests/support.c demo/kernel.c demo/libc.c \
              demo/riscv64/arch.c demo/riscv64/start.S
$(B)/kernel-amalg/riscv64/kernel.elf: $(AMALG_KSRC) $(AMALG)/inc/.stamp src/port/baremetal_cpu.h \
                                      tests/bodies.h tests/support.h tests/rand.h demo/arch.h \
                                      demo/riscv64/kernel.ld demo/demo.mk
	@mkdir -p $(dir $@)
	$(msg) LD $@
	$(Q)$(KCC_riscv64) -std=c11 -ffreestanding -nostdinc \
	  -isystem $$($(KCC_riscv64) $(KFLAGS_riscv64) -print-file-name=include) \
	  -fno-common -fno-pie -fno-stack-protector -fno-tree-loop-distribute-patterns \
	  $(WARN) -O2 -g $(KFLAGS_riscv64) $(OPTIONS) \
	  -DKHEAP_PORT_CPU_HEADER='"port/baremetal_cpu.h"' \
	  -DDEMO_MODEL_OPS=$(DEMO_MODEL_OPS) -DDEMO_STRESS_OPS=$(DEMO_STRESS_OPS) \
	  -I$(AMALG)/inc -Isrc -Itests -Idemo \
	  -nostdlib -static -no-pie -Wl,--build-id=none -Wl,--no-warn-rwx-segments \
	  -T demo/riscv64/kernel.ld $(AMALG_KSRC) $(KLIBS_riscv64) -o $@
CHECK_KERNELS += riscv64-amalgamation=$(B)/kernel-amalg/riscv64/kernel.elf

.PHONY: amalgamation-checks amalg-tests
amalgamation-checks: amalg-tests $(AMALG)/template_test $(B)/kernel-amalg/riscv64/kernel.elf
