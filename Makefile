# kheap - build, test, cross-build and demo.
#
#   make            build/libkheap.a (core + hosted POSIX port) and
#                   build/libkheap.so (the same plus the malloc shim)
#   make check      every test in every configuration; last line "N passed, N failed"
#   make demo       boot the bare-metal demo kernel (ARCH=riscv64, aarch64 or
#                   x86_64) in QEMU: kheap's default heap as a kernel heap
#   make demo-hosted  the hosted demo on the default static heap
#   make cross      the freestanding core for x86_64, i386, aarch64, riscv64,
#                   arm-none-eabi (Cortex-M4) with gcc, and the host with clang
#   make install    headers, libkheap.a, libkheap.so.0, kheap.pc, CMake files
#                   and kheap(3) under PREFIX (/usr/local), staged in DESTDIR;
#                   make uninstall removes them
#   make amalgamation  dist/kheap.c, dist/kheap.h, dist/kheap_port.h and
#                   dist/kheap_port_template.c: the core as two files
#   make deb        the Debian packages, built from a copy of the tree in
#                   build/deb/ (the .deb files land there)
#   make fuzz       the libFuzzer harnesses of tests/fuzz/, 10 minutes
#                   (FUZZ_SECONDS=N for another time), growing their corpus
#
# Build options (see include/kheap_config.h) pass through as variables, e.g.
#   make KHEAP_DEBUG=2 KHEAP_DEFAULT_SIZE=1073741824

ifeq ($(origin CC),default)
CC      := gcc
endif
ifeq ($(origin CXX),default)
CXX     := g++
endif
AR      ?= ar
# Quiet output: one line per file ("CC src/core/slab.c"); V=1 shows the
# full commands.
V       ?= 0
ifeq ($(V),1)
Q       :=
msg     := @true
else
Q       := @
msg     := @printf '  %-7s %s\n'
endif
B       := build
WARN    := -Wall -Wextra -Wundef -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CSTD    := -std=c11
OPT     ?= -O2 -g
OPTIONS := $(foreach o,KHEAP_PROFILE_SMALL KHEAP_DEBUG KHEAP_PAGE_SHIFT KHEAP_DEFAULT_SIZE KHEAP_MAX_REGIONS \
             KHEAP_DEFAULT_GROW KHEAP_EMPTY_SLABS_KEPT KHEAP_PURGE_SLACK KHEAP_PURGE_MIN KHEAP_DECAY_MS \
             KHEAP_REDZONE KHEAP_QUARANTINE_COUNT KHEAP_QUARANTINE_BYTES KHEAP_SAMPLE_RATE KHEAP_GUARD_SLOTS \
             KHEAP_HOMES KHEAP_HOMES_MIN_HEAP KHEAP_MAG_WIDE_MIN_HEAP,$(if $($(o)),-D$(o)=$($(o))))

CORE_SRC := $(addprefix src/core/,heap.c region.c pages.c slab.c cpu.c check.c cache.c guard.c kmalloc.c \
              stats.c init.c default.c)
PORT_SRC := src/port/hosted.c
HDRS     := $(wildcard include/*.h) src/core/kh_internal.h src/core/kh_front.h src/core/kh_fast.h src/port/hosted_cpu.h src/port/hosted_tx.h Makefile
TESTS    := $(patsubst tests/%.c,%,$(wildcard tests/test_*.c))
TEST_SUPPORT := support.o harness.o

# The release, from include/kheap.h; libkheap.so's soname carries the major
# number.
KHEAP_VERSION := $(shell sed -n 's/^\#define KHEAP_VERSION "\(.*\)"$$/\1/p' include/kheap.h)
SOVERSION     := $(firstword $(subst ., ,$(KHEAP_VERSION)))
SONAME        := libkheap.so.$(SOVERSION)

# Hosted configurations the test suite runs in: name and extra flags.
VARIANTS      := release asan tsan debug3 valgrind
FLAGS_release := $(OPT)
FLAGS_asan    := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
                 -fno-sanitize-recover=all -DKHEAP_DEBUG=2
FLAGS_tsan    := -O1 -g -fsanitize=thread -DKHEAP_DEBUG=1
LDFLAGS_tsan  := -fsanitize=thread
FLAGS_debug3  := -O1 -g -DKHEAP_DEBUG=3
FLAGS_valgrind:= -O1 -g -DKHEAP_VALGRIND=1
# The debug build's redzones around object-cache objects (tests/redzone.c):
# the core with KHEAP_REDZONE, as libkheap-debug.so has it, for the one
# test written for it (the rest of the suite counts on the release
# build's sizes and reuse).
FLAGS_redzone := -O1 -g -DKHEAP_DEBUG=2 -DKHEAP_REDZONE=1
LDFLAGS_asan  := -fsanitize=address,undefined

HOSTED_DEFS := -DKHEAP_LOCK_WORDS=8 -DKHEAP_PORT_PAGES=1 -DKHEAP_PORT_PURGE=1 -DKHEAP_PORT_CLOCK=1 -DKHEAP_PORT_PROTECT=1 -DKHEAP_PORT_COMMIT=1 -DKHEAP_PORT_CPU_HEADER='"port/hosted_cpu.h"' -Isrc

.PHONY: all check demo demo-hosted cross deps clean size-classes malloc-tests \
        install uninstall amalgamation deb fuzz fuzz-build
.DELETE_ON_ERROR:

all: $(B)/libkheap.a $(B)/libkheap.so $(B)/$(SONAME) $(B)/libkheap-debug.so $(B)/libkheap-percpu.so

deps:
	tools/deps.sh build

# --- the default library -------------------------------------------------
$(B)/obj/%.o: src/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(msg) CC $<
	$(Q)$(CC) $(CSTD) $(WARN) $(OPT) $(OPTIONS) $(HOSTED_DEFS) -fPIC -Iinclude -c $< -o $@

$(B)/libkheap.a: $(patsubst src/%.c,$(B)/obj/%.o,$(CORE_SRC) $(PORT_SRC))
	$(msg) AR $@
	$(Q)$(AR) rcs $@ $^

# --- libkheap.so: the malloc replacement --------------------------------------
# The default heap reserves a 64 GiB (32-bit hosts: 1 GiB) first region at
# first use (halved until the reservation fits; KHEAP_DEFAULT_RESERVE=0 for
# the static array) and grows beyond it. Only the malloc API is exported.
# Depots of the malloc classes may grow when freed blocks come back
# through the slabs (KHEAP_DEPOT_GROW, include/kheap_config.h).
KHEAP_DEFAULT_RESERVE ?= $(if $(filter 64,$(shell getconf LONG_BIT)),68719476736,1073741824)
SO_DEFS := -DKHEAP_DEFAULT_RESERVE=$(KHEAP_DEFAULT_RESERVE) -DKHEAP_KMALLOC_API=0 \
           $(if $(KHEAP_DEFAULT_GROW),,-DKHEAP_DEFAULT_GROW=1) -DKHEAP_DEPOT_GROW=256
SO_CFLAGS := $(CSTD) $(WARN) $(OPT) $(OPTIONS) $(HOSTED_DEFS) $(SO_DEFS) -fPIC \
             -fvisibility=hidden -fno-builtin-malloc -fno-builtin-calloc \
             -fno-builtin-realloc -fno-builtin-free -Iinclude -Isrc/core
SHIM_SRC := src/malloc/malloc.c

$(B)/so/obj/%.o: src/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(msg) CC $<
	$(Q)$(CC) $(SO_CFLAGS) -c $< -o $@

# The soname is libkheap.so.MAJOR; build/libkheap.so.MAJOR is a link to
# build/libkheap.so, so programs linked with -L build -lkheap find it.
$(B)/libkheap.so: $(patsubst src/%.c,$(B)/so/obj/%.o,$(CORE_SRC) $(PORT_SRC) $(SHIM_SRC))
	$(msg) LD $@
	$(Q)$(CC) -shared -Wl,-z,defs -Wl,-soname,$(SONAME) $(LDFLAGS) -o $@ $^ -lpthread

$(B)/$(SONAME): $(B)/libkheap.so
	$(Q)ln -sf libkheap.so $@

# libkheap-debug.so: the same malloc replacement built at KHEAP_DEBUG 2
# with redzones and the quarantine (include/kheap_config.h, KHEAP_REDZONE):
# LD_PRELOAD it instead of libkheap.so to find overflows, uses after free,
# double and mismatched frees. It is installed under LIBDIR/kheap/.
DEBUG_SO_FLAGS := $(filter-out -DKHEAP_DEBUG=% -DKHEAP_REDZONE=%,$(SO_CFLAGS)) -DKHEAP_DEBUG=2 -DKHEAP_REDZONE=1
$(B)/sodebug/obj/%.o: src/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(msg) CC $<
	$(Q)$(CC) $(DEBUG_SO_FLAGS) -c $< -o $@

$(B)/libkheap-debug.so: $(patsubst src/%.c,$(B)/sodebug/obj/%.o,$(CORE_SRC) $(PORT_SRC) $(SHIM_SRC))
	$(msg) LD $@
	$(Q)$(CC) -shared -Wl,-z,defs -Wl,-soname,libkheap-debug.so $(LDFLAGS) -o $@ $^ -lpthread

# libkheap-percpu.so: the same malloc replacement with per-CPU caches that
# every thread on a CPU shares, through restartable sequences
# (KHEAP_HOSTED_RSEQ: x86-64 Linux, glibc >= 2.35; per-thread slots where
# rseq is not registered). Installed under LIBDIR/kheap/ as the debug one.
PERCPU_SO_FLAGS := $(SO_CFLAGS) -DKHEAP_HOSTED_RSEQ=1
$(B)/sopercpu/obj/%.o: src/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(msg) CC $<
	$(Q)$(CC) $(PERCPU_SO_FLAGS) -c $< -o $@

$(B)/libkheap-percpu.so: $(patsubst src/%.c,$(B)/sopercpu/obj/%.o,$(CORE_SRC) $(PORT_SRC) $(SHIM_SRC))
	$(msg) LD $@
	$(Q)$(CC) -shared -Wl,-z,defs -Wl,-soname,libkheap-percpu.so $(LDFLAGS) -o $@ $^ -lpthread

# --- tests of libkheap.so ---------------------------------------------------
# Ordinary programs: api is linked with -lkheap, the others run under
# LD_PRELOAD (tests/malloc/run.sh); ctorlib.so is a library with an early
# constructor, preloaded with kheap.
MALLOC_TESTS := $(patsubst tests/malloc/%.c,%,$(filter-out tests/malloc/ctorlib.c,$(wildcard tests/malloc/*.c)))
MT_CFLAGS := $(CSTD) $(WARN) -Wno-missing-prototypes -O1 -g -D_GNU_SOURCE -Itests -Iinclude
# The hosted test support that needs no kheap (tests/harness.c).
TEST_HDRS := tests/harness.h tests/support.h tests/rand.h

$(B)/malloc/obj/harness.o: tests/harness.c $(TEST_HDRS)
	@mkdir -p $(dir $@)
	$(msg) CC $<
	$(Q)$(CC) $(MT_CFLAGS) -c $< -o $@

$(B)/malloc/api: tests/malloc/api.c $(B)/malloc/obj/harness.o $(TEST_HDRS) $(B)/libkheap.so $(B)/$(SONAME)
	@mkdir -p $(dir $@)
	$(msg) LD $@
	$(Q)$(CC) $(MT_CFLAGS) $< $(B)/malloc/obj/harness.o -o $@ -L$(B) -lkheap -Wl,-rpath,'$$ORIGIN/..' -ldl -lpthread

$(B)/malloc/ctorlib.so: tests/malloc/ctorlib.c
	@mkdir -p $(dir $@)
	$(msg) LD $@
	$(Q)$(CC) $(MT_CFLAGS) -fPIC -shared $< -o $@ -ldl

$(B)/malloc/%: tests/malloc/%.c $(B)/malloc/obj/harness.o $(TEST_HDRS) $(B)/libkheap.so
	@mkdir -p $(dir $@)
	$(msg) LD $@
	$(Q)$(CC) $(MT_CFLAGS) $< $(B)/malloc/obj/harness.o -o $@ -ldl -lpthread

# misuse calls the C++ operators by their symbols: linked with the C++
# library, so that the C library's run has them too.
$(B)/malloc/misuse: tests/malloc/misuse.c $(B)/libkheap.so $(B)/libkheap-debug.so
	@mkdir -p $(dir $@)
	$(msg) LD $@
	$(Q)$(CC) $(MT_CFLAGS) $< -o $@ -Wl,--no-as-needed -lstdc++ -Wl,--as-needed -ldl -lpthread

$(B)/malloc/cxx: tests/malloc/cxx.cpp
	@mkdir -p $(dir $@)
	$(msg) CXX $@
	$(Q)$(CXX) -std=c++17 -Wall -Wextra -Werror -O1 -g $< -o $@ -ldl

malloc-tests: $(addprefix $(B)/malloc/,$(MALLOC_TESTS) ctorlib.so cxx) $(B)/libkheap-debug.so \
              $(B)/libkheap-percpu.so

# --- test variants ----------------------------------------------------------
define variant
$(B)/$(1)/obj/%.o: src/%.c $(HDRS)
	@mkdir -p $$(dir $$@)
	$(msg) CC $$<
	$(Q)$(CC) $(CSTD) $(WARN) $(FLAGS_$(1)) $(OPTIONS) $(HOSTED_DEFS) -Iinclude -c $$< -o $$@

$(B)/$(1)/libkheap.a: $(patsubst src/%.c,$(B)/$(1)/obj/%.o,$(CORE_SRC) $(PORT_SRC))
	$(msg) AR $$@
	$(Q)$(AR) rcs $$@ $$^

# The shared test support (tests/support.c, tests/harness.c), built with
# the variant's flags and linked into every test.
$(B)/$(1)/tests/obj/%.o: tests/%.c $(TEST_HDRS) $(HDRS)
	@mkdir -p $$(dir $$@)
	$(msg) CC $$<
	$(Q)$(CC) $(CSTD) $(WARN) $(FLAGS_$(1)) $(OPTIONS) $(HOSTED_DEFS) -Iinclude -c $$< -o $$@

$(B)/$(1)/tests/%: tests/%.c $(TEST_HDRS) $(addprefix $(B)/$(1)/tests/obj/,$(TEST_SUPPORT)) $(B)/$(1)/libkheap.a
	@mkdir -p $$(dir $$@)
	$(msg) LD $$@
	$(Q)$(CC) $(CSTD) $(WARN) -Wno-missing-prototypes $(FLAGS_$(1)) $(OPTIONS) \
	  $(HOSTED_DEFS) -Iinclude -Isrc/core $$< $(addprefix $(B)/$(1)/tests/obj/,$(TEST_SUPPORT)) \
	  $(B)/$(1)/libkheap.a -o $$@ $(LDFLAGS_$(1)) -lpthread

# The shared test bodies (also run by the bare-metal kernels).
$(B)/$(1)/tests/test_bodies: tests/test_bodies.c tests/bodies.c tests/bodies.h $(TEST_HDRS) \
                             $(addprefix $(B)/$(1)/tests/obj/,$(TEST_SUPPORT)) $(B)/$(1)/libkheap.a
	@mkdir -p $$(dir $$@)
	$(msg) LD $$@
	$(Q)$(CC) $(CSTD) $(WARN) $(FLAGS_$(1)) $(OPTIONS) $(HOSTED_DEFS) -Iinclude -Isrc/core \
	  tests/test_bodies.c tests/bodies.c $(addprefix $(B)/$(1)/tests/obj/,$(TEST_SUPPORT)) \
	  $(B)/$(1)/libkheap.a -o $$@ $(LDFLAGS_$(1)) -lpthread

# Small heaps (tests/small.c, also run by the Cortex-M kernel).
$(B)/$(1)/tests/test_small: tests/test_small.c tests/small.c tests/small.h tests/bodies.c \
                            tests/bodies.h $(TEST_HDRS) \
                            $(addprefix $(B)/$(1)/tests/obj/,$(TEST_SUPPORT)) $(B)/$(1)/libkheap.a
	@mkdir -p $$(dir $$@)
	$(msg) LD $$@
	$(Q)$(CC) $(CSTD) $(WARN) $(FLAGS_$(1)) $(OPTIONS) $(HOSTED_DEFS) -Iinclude -Isrc/core \
	  tests/test_small.c tests/small.c tests/bodies.c \
	  $(addprefix $(B)/$(1)/tests/obj/,$(TEST_SUPPORT)) $(B)/$(1)/libkheap.a -o $$@ \
	  $(LDFLAGS_$(1)) -lpthread

$(1)-tests: $(addprefix $(B)/$(1)/tests/,$(TESTS))
endef
$(foreach v,$(VARIANTS) redzone,$(eval $(call variant,$(v))))

# --- fuzzing ------------------------------------------------------------------
# libFuzzer harnesses (tests/fuzz/): clang with the fuzzer, ASan and UBSan,
# the core and the hosted port built with the same flags at KHEAP_DEBUG=2.
# make fuzz runs fuzz_api for FUZZ_SECONDS and fuzz_misuse for a third of
# that, one after the other (one process each: the machines this runs on
# have two cores), growing the committed corpus in tests/fuzz/corpus/, then
# merges each corpus down to the inputs that add coverage. Crash inputs
# land in build/fuzz/crashes/. make check runs them on a copy (tests/run.sh).
FUZZ_CC        := clang
FUZZ_FLAGS     := -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
                  -fno-omit-frame-pointer -DKHEAP_DEBUG=2
FUZZ_HARNESSES := fuzz_api fuzz_misuse
FUZZ_SECONDS   ?= 600
FUZZ_MAX_LEN   := 4096
FUZZ_OBJS      := $(patsubst %.c,$(B)/fuzz/obj/%.o,$(CORE_SRC) $(PORT_SRC) tests/support.c tests/harness.c)

$(B)/fuzz/obj/%.o: %.c $(HDRS) $(TEST_HDRS)
	@mkdir -p $(dir $@)
	$(msg) CC $<
	$(Q)$(FUZZ_CC) $(CSTD) $(WARN) $(FUZZ_FLAGS) $(OPTIONS) $(HOSTED_DEFS) -Iinclude -c $< -o $@

$(addprefix $(B)/fuzz/,$(FUZZ_HARNESSES)): $(B)/fuzz/%: tests/fuzz/%.c tests/fuzz/fuzz.h $(FUZZ_OBJS)
	@mkdir -p $(dir $@)
	$(msg) LD $@
	$(Q)$(FUZZ_CC) $(CSTD) $(WARN) $(FUZZ_FLAGS) $(OPTIONS) $(HOSTED_DEFS) -Iinclude -Itests \
	  $< $(FUZZ_OBJS) -o $@ -lpthread

fuzz-build: $(addprefix $(B)/fuzz/,$(FUZZ_HARNESSES))

fuzz:
	@tools/deps.sh build
	@$(MAKE) --no-print-directory fuzz-build
	@set -e; for h in $(FUZZ_HARNESSES); do \
	  t=$(FUZZ_SECONDS); [ $$h = fuzz_api ] || t=$$(( $(FUZZ_SECONDS) / 3 + 1 )); \
	  mkdir -p tests/fuzz/corpus/$$h $(B)/fuzz/crashes; \
	  echo "$$h: $$t s, corpus tests/fuzz/corpus/$$h"; \
	  $(B)/fuzz/$$h -max_total_time=$$t -max_len=$(FUZZ_MAX_LEN) -print_final_stats=1 \
	    -artifact_prefix=$(B)/fuzz/crashes/$$h- tests/fuzz/corpus/$$h; \
	  rm -rf $(B)/fuzz/merge/$$h; mkdir -p $(B)/fuzz/merge/$$h; \
	  $(B)/fuzz/$$h -merge=1 -max_len=$(FUZZ_MAX_LEN) $(B)/fuzz/merge/$$h tests/fuzz/corpus/$$h \
	    2>$(B)/fuzz/merge/$$h.log; \
	  rm -f tests/fuzz/corpus/$$h/*; cp $(B)/fuzz/merge/$$h/* tests/fuzz/corpus/$$h/; \
	  echo "$$h: corpus merged to $$(ls tests/fuzz/corpus/$$h | wc -l) inputs," \
	    "$$(du -sk tests/fuzz/corpus/$$h | cut -f1) KiB"; \
	done

# --- cross builds of the freestanding core --------------------------------
# tools/cross.sh knows each target's compiler and flags; every target is
# built with -ffreestanding -nostdlib and no libc headers on the path.
CROSS_TARGETS := x86_64 i386 aarch64 riscv64 arm-none-eabi clang-x86_64

cross-%: $(CORE_SRC) $(HDRS)
	@tools/cross.sh $* $(B)/cross/$* $(OPTIONS) -- $(CORE_SRC)

cross: $(addprefix cross-,$(CROSS_TARGETS))

# --- demo -----------------------------------------------------------------
$(B)/demo/hosted_demo: demo/hosted_demo.c $(B)/libkheap.a
	@mkdir -p $(dir $@)
	$(msg) LD $@
	$(Q)$(CC) $(CSTD) -D_GNU_SOURCE $(WARN) $(OPT) $(OPTIONS) -Iinclude $< $(B)/libkheap.a -o $@ -lpthread

demo:
	@tools/deps.sh demo
	@$(MAKE) --no-print-directory kernel-$(ARCH)
	demo/qemu.sh $(ARCH) $(B)/kernel/$(ARCH)/$(KERNEL_IMAGE_$(ARCH))

demo-hosted:
	@tools/deps.sh build
	@$(MAKE) --no-print-directory $(B)/demo/hosted_demo
	$(B)/demo/hosted_demo

# --- documents generated from the code ------------------------------------
$(B)/tools/sizeclasses: tools/sizeclasses.c $(B)/release/libkheap.a
	@mkdir -p $(dir $@)
	$(msg) LD $@
	$(Q)$(CC) $(CSTD) $(WARN) -O2 $(OPTIONS) $(HOSTED_DEFS) -Iinclude -Isrc/core $< $(B)/release/libkheap.a -o $@ -lpthread

# ... and of the small-system profile, built in $(B)/small.
size-classes: $(B)/tools/sizeclasses
	$(B)/tools/sizeclasses > docs/SIZE_CLASSES.md
	$(MAKE) --no-print-directory B=$(B)/small KHEAP_PROFILE_SMALL=1 $(B)/small/tools/sizeclasses
	$(B)/small/tools/sizeclasses > docs/SIZE_CLASSES_SMALL.md

# --- install ----------------------------------------------------------------
# The GNU directory variables; DESTDIR stages the whole tree (packages).
# What goes where, and who uses what:
#   libkheap.a + kheap.pc + the CMake package: the kheap_* API with the
#     hosted port, linked statically (pkg-config --libs kheap names the
#     archive, so -lkheap's shared library never replaces the program's
#     malloc by surprise);
#   libkheap.so.MAJOR: the malloc replacement (LD_PRELOAD it, or link
#     -lkheap through the libkheap.so link); it exports only the malloc API;
#   kheap/libkheap-debug.so, kheap/libkheap-percpu.so: the debug and the
#     per-CPU malloc replacements, for LD_PRELOAD only, in a directory of
#     their own so the dynamic linker's cache and -lkheap never pick them
#     (installed when they have been built);
#   kheap_config.h: the options the library was built with written in, so
#     a program compiles against the same page size and API as the archive.
PREFIX       ?= /usr/local
EXEC_PREFIX  ?= $(PREFIX)
INCLUDEDIR   ?= $(PREFIX)/include
LIBDIR       ?= $(EXEC_PREFIX)/lib
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
CMAKEDIR     ?= $(LIBDIR)/cmake/kheap
MANDIR       ?= $(PREFIX)/share/man
INSTALL      ?= install
REAL_SO      := libkheap.so.$(KHEAP_VERSION)
INSTALL_HDRS := include/kheap.h include/kheap_port.h $(wildcard include/kheap_hosted.h)
INSTALLED_DEFS := $(patsubst -D%,%,$(OPTIONS)) KHEAP_PORT_PAGES=1 KHEAP_PORT_PURGE=1 KHEAP_PORT_CLOCK=1 KHEAP_PORT_PROTECT=1 KHEAP_PORT_COMMIT=1

$(B)/install/kheap_config.h: include/kheap_config.h Makefile
	@mkdir -p $(dir $@)
	$(msg) GEN $@
	$(Q){ sed -n '1,/^#define KHEAP_CONFIG_H/p' $<; \
	  printf '\n/* The options the installed libkheap.a was built with. */\n'; \
	  for d in $(INSTALLED_DEFS); do printf '#define %s %s\n' "$${d%%=*}" "$${d#*=}"; done; \
	  sed '1,/^#define KHEAP_CONFIG_H/d' $<; } >$@

$(B)/install/kheap.pc: tools/kheap.pc.in Makefile
	@mkdir -p $(dir $@)
	$(msg) GEN $@
	$(Q)sed -e 's|@PREFIX@|$(PREFIX)|' \
	  -e 's|@LIBDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR))|' \
	  -e 's|@INCLUDEDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))|' \
	  -e 's|@VERSION@|$(KHEAP_VERSION)|' $< >$@

# The CMake package finds its files relative to its own directory, so the
# installed tree can move (and works under DESTDIR).
$(B)/install/kheapConfig.cmake: cmake/kheapConfig-make.cmake.in Makefile
	@mkdir -p $(dir $@)
	$(msg) GEN $@
	$(Q)sed -e "s|@PREFIX_FROM_CMAKEDIR@|$$(realpath -m --relative-to=$(CMAKEDIR) $(PREFIX))|" \
	  -e "s|@LIBDIR_REL@|$$(realpath -m --relative-to=$(PREFIX) $(LIBDIR))|" \
	  -e "s|@INCLUDEDIR_REL@|$$(realpath -m --relative-to=$(PREFIX) $(INCLUDEDIR))|" \
	  -e 's|@VERSION@|$(KHEAP_VERSION)|' $< >$@

$(B)/install/kheapConfigVersion.cmake: cmake/kheapConfigVersion.cmake.in Makefile
	@mkdir -p $(dir $@)
	$(Q)sed -e 's|@VERSION@|$(KHEAP_VERSION)|' -e 's|@MAJOR@|$(SOVERSION)|' $< >$@

INSTALL_GEN := $(addprefix $(B)/install/,kheap_config.h kheap.pc kheapConfig.cmake \
                 kheapConfigVersion.cmake)

install: $(B)/libkheap.a $(B)/libkheap.so $(INSTALL_GEN)
	$(INSTALL) -d $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR) \
	  $(DESTDIR)$(CMAKEDIR) $(DESTDIR)$(MANDIR)/man3
	$(INSTALL) -m 644 $(INSTALL_HDRS) $(B)/install/kheap_config.h $(DESTDIR)$(INCLUDEDIR)/
	$(INSTALL) -m 644 $(B)/libkheap.a $(DESTDIR)$(LIBDIR)/libkheap.a
	$(INSTALL) -m 755 $(B)/libkheap.so $(DESTDIR)$(LIBDIR)/$(REAL_SO)
	ln -sf $(REAL_SO) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libkheap.so
	$(if $(wildcard $(B)/libkheap-debug.so),$(INSTALL) -d $(DESTDIR)$(LIBDIR)/kheap && \
	  $(INSTALL) -m 755 $(B)/libkheap-debug.so $(DESTDIR)$(LIBDIR)/kheap/)
	$(if $(wildcard $(B)/libkheap-percpu.so),$(INSTALL) -d $(DESTDIR)$(LIBDIR)/kheap && \
	  $(INSTALL) -m 755 $(B)/libkheap-percpu.so $(DESTDIR)$(LIBDIR)/kheap/)
	$(INSTALL) -m 644 $(B)/install/kheap.pc $(DESTDIR)$(PKGCONFIGDIR)/kheap.pc
	$(INSTALL) -m 644 $(B)/install/kheapConfig.cmake $(B)/install/kheapConfigVersion.cmake \
	  $(DESTDIR)$(CMAKEDIR)/
	$(INSTALL) -m 644 man/kheap.3 $(DESTDIR)$(MANDIR)/man3/kheap.3

uninstall:
	rm -f $(addprefix $(DESTDIR)$(INCLUDEDIR)/,$(notdir $(INSTALL_HDRS)) kheap_config.h) \
	  $(addprefix $(DESTDIR)$(LIBDIR)/,libkheap.a $(REAL_SO) $(SONAME) libkheap.so kheap/libkheap-debug.so \
	  kheap/libkheap-percpu.so) \
	  $(DESTDIR)$(PKGCONFIGDIR)/kheap.pc $(DESTDIR)$(MANDIR)/man3/kheap.3 \
	  $(addprefix $(DESTDIR)$(CMAKEDIR)/,kheapConfig.cmake kheapConfigVersion.cmake)
	-rmdir $(DESTDIR)$(CMAKEDIR) $(DESTDIR)$(LIBDIR)/kheap 2>/dev/null

# --- the single-file distribution ------------------------------------------
# Generated, not committed (dist/ is in .gitignore): see README, "Install".
AMALG_INPUTS := tools/amalgamate.sh $(CORE_SRC) $(wildcard src/core/*.h) \
                include/kheap.h include/kheap_config.h include/kheap_port.h src/port/template.c
define amalgamation
$(1)/kheap.c $(1)/kheap.h $(1)/kheap_port.h $(1)/kheap_port_template.c &: $(AMALG_INPUTS)
	$(msg) GEN $(1)/kheap.c
	$(Q)tools/amalgamate.sh $(1) $(KHEAP_VERSION) $(CORE_SRC)
endef
$(eval $(call amalgamation,dist))
$(eval $(call amalgamation,$(B)/dist))
amalgamation: dist/kheap.c

# --- Debian packages ---------------------------------------------------------
# dpkg-buildpackage writes its results next to the tree it builds, so it
# builds a copy under build/deb/ (tools/deb-check.sh also installs the
# packages when run as root, and runs lintian on them).
deb:
	@tools/deps.sh package
	tools/deb-check.sh $(B)/deb build

# --- check ------------------------------------------------------------------
check:
	@tools/deps.sh check
	@# Kernel images are linked again every time, so a kernel whose build
	@# fails now is counted as missing, not booted from an old image.
	@rm -f $(foreach k,$(CHECK_KERNELS),$(lastword $(subst =, ,$(k))))
	@$(MAKE) --no-print-directory -k $(addsuffix -tests,$(VARIANTS)) $(B)/redzone/tests/redzone $(B)/demo/hosted_demo \
	  $(B)/valgrind/tests/vg_probe $(B)/libkheap.so malloc-tests check-kernels amalgamation-checks fuzz-build \
	  || echo "build of some tests failed; the runner counts them"
	@CORE_SRC="$(CORE_SRC)" tests/run.sh "$(B)" "$(VARIANTS) amalg" "$(TESTS)" "$(CROSS_TARGETS)" "$(CHECK_KERNELS)"

clean:
	rm -rf $(B)

include demo/demo.mk
include tests/pkg/pkg.mk
include bench/bench.mk
