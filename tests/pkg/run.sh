#!/bin/sh
# The packaging checks, for tests/run.sh (run from the tree's root).
#   tests/pkg/run.sh BUILD_DIR
# Prints "ok - " / "not ok - " lines:
#   - the port template of the single-file distribution, run hosted, and
#     the distribution cross-built for a Cortex-M4 with that template;
#   - make install into a DESTDIR: the files, the soname links, a program
#     built with `pkg-config --cflags --libs kheap` against the staged tree
#     (PKG_CONFIG_SYSROOT_DIR), -lkheap and LD_PRELOAD of the staged
#     libkheap.so.0, then make uninstall leaving nothing behind;
#   - CMake: a consumer through add_subdirectory (with build options as
#     cache variables), through find_package after `cmake --install`, and
#     through find_package on the tree make install wrote;
#   - the Debian packages (tools/deb-check.sh).
set -u
B=$1
T=$B/pkg
rm -rf "$T"
mkdir -p "$T"
T=$(cd "$T" && pwd)
ROOT=$(pwd)
VERSION=$(sed -n 's/^#define KHEAP_VERSION "\(.*\)"$/\1/p' include/kheap.h)
CC=${CC:-gcc}

ok() { echo "ok - $*"; }
notok() { echo "not ok - $*"; }
check() { # description command...
    what=$1
    shift
    if "$@" >"$T/last.log" 2>&1; then ok "$what"; else
        notok "$what"
        tail -n 15 "$T/last.log" | sed 's/^/#   /'
    fi
}
# A program's own ok / not ok lines; no lines or a failing status is a failure.
prog() { # label command...
    label=$1
    shift
    out=$("$@" 2>&1)
    rc=$?
    printf '%s\n' "$out" | sed "s/^\(ok\|not ok\) - /\1 - $label: /"
    if [ $rc -ne 0 ] && ! printf '%s\n' "$out" | grep -q '^not ok - '; then
        notok "$label: exited with status $rc"
        printf '%s\n' "$out" | tail -n 5 | sed 's/^/#   /'
    fi
}

# --- the single-file distribution ----------------------------------------
if [ -x "$B/amalg/template_test" ]; then
    prog amalgamation "$B/amalg/template_test"
else
    notok "amalgamation: $B/amalg/template_test was not built"
fi
check "amalgamation: kheap.c and the port template cross-build for arm-none-eabi (Cortex-M4)" \
    tools/cross.sh arm-none-eabi "$T/cross-amalg" -- "$B/dist/kheap.c" "$B/dist/kheap_port_template.c"
check "amalgamation: make amalgamation writes the four files of dist/" \
    sh -c "make --no-print-directory -s amalgamation B='$T/b' >/dev/null && \
           for f in kheap.c kheap.h kheap_port.h kheap_port_template.c; do test -s dist/\$f || exit 1; done && \
           cmp dist/kheap.c '$B/dist/kheap.c'"

# --- make install / uninstall and pkg-config -----------------------------
D=$T/destdir
P=/usr/local
L=$D$P/lib
check "make install DESTDIR=... (default PREFIX $P)" make --no-print-directory install DESTDIR="$D"
for f in include/kheap.h include/kheap_port.h include/kheap_config.h lib/libkheap.a \
         "lib/libkheap.so.$VERSION" lib/pkgconfig/kheap.pc lib/cmake/kheap/kheapConfig.cmake \
         lib/cmake/kheap/kheapConfigVersion.cmake share/man/man3/kheap.3; do
    [ -f "$D$P/$f" ] || notok "make install: $P/$f missing"
done
check "install: libkheap.so.0 -> libkheap.so.$VERSION, libkheap.so -> libkheap.so.0, soname libkheap.so.0" \
    sh -c "[ \"\$(readlink '$L/libkheap.so.0')\" = libkheap.so.$VERSION ] &&
           [ \"\$(readlink '$L/libkheap.so')\" = libkheap.so.0 ] &&
           readelf -d '$L/libkheap.so.$VERSION' | grep -q 'SONAME.*\[libkheap.so.0\]'"
check "install: man page kheap(3) formats without warnings" \
    sh -c "LC_ALL=C.UTF-8 man --warnings -E UTF-8 -l '$D$P/share/man/man3/kheap.3' 2>&1 >/dev/null | \
           { ! grep .; }"

export PKG_CONFIG_SYSROOT_DIR="$D" PKG_CONFIG_LIBDIR="$L/pkgconfig"
unset PKG_CONFIG_PATH
flags=$(pkg-config --cflags --libs kheap 2>"$T/pkg-config.err")
if [ $? -eq 0 ] && [ "$(pkg-config --modversion kheap)" = "$VERSION" ]; then
    ok "pkg-config --cflags --libs kheap: $flags"
else
    notok "pkg-config cannot find kheap $VERSION in $L/pkgconfig"
    sed 's/^/#   /' "$T/pkg-config.err"
fi
# shellcheck disable=SC2086
check "a program builds with \$(pkg-config --cflags --libs kheap) alone" \
    $CC -std=c11 -Wall -Wextra -Werror tests/pkg/consumer.c $flags -o "$T/consumer-pc"
unset PKG_CONFIG_SYSROOT_DIR PKG_CONFIG_LIBDIR
if [ -x "$T/consumer-pc" ]; then
    prog pkg-config "$T/consumer-pc" "$VERSION"
    check "pkg-config: the program links the kheap API statically (no libkheap.so needed, malloc stays the C library's)" \
        sh -c "! readelf -d '$T/consumer-pc' | grep -q 'NEEDED.*libkheap'"
fi

cat >"$T/uses_malloc.c" <<'EOF'
#include <stdlib.h>
#include <string.h>
int main(void)
{
    char *p = malloc(100);
    if (!p)
        return 1;
    strcpy(p, "kheap");
    free(p);
    return 0;
}
EOF
check "-lkheap links the malloc replacement through the libkheap.so link (NEEDED libkheap.so.0)" \
    sh -c "$CC '$T/uses_malloc.c' -L'$L' -lkheap -o '$T/uses_malloc' &&
           readelf -d '$T/uses_malloc' | grep -q 'NEEDED.*\[libkheap.so.0\]'"
check "the linked program runs on kheap (KHEAP_VERBOSE=1 reports the default heap)" \
    sh -c "KHEAP_VERBOSE=1 LD_LIBRARY_PATH='$L' '$T/uses_malloc' 2>&1 | grep -q '^kheap: libkheap.so: default heap'"
check "LD_PRELOAD of the installed libkheap.so.0: KHEAP_STATS=1 prints the statistics at exit" \
    sh -c "KHEAP_STATS=1 LD_PRELOAD='$L/libkheap.so.0' sort /dev/null 2>&1 | grep -q '^kheap: statistics at exit'"
check "LD_PRELOAD of the installed kheap/libkheap-debug.so: a program runs as under the C library" \
    sh -c "[ \"\$(LD_PRELOAD='$L/kheap/libkheap-debug.so' sort -r '$0')\" = \"\$(sort -r '$0')\" ]"

# --- CMake ----------------------------------------------------------------
cmake_consumer() { # label build-dir cmake-args...
    label=$1 dir=$2
    shift 2
    if cmake -S tests/pkg/cmake -B "$dir" "$@" >"$dir.log" 2>&1 &&
        cmake --build "$dir" -j2 >>"$dir.log" 2>&1; then
        ok "cmake: consumer builds through $label"
        prog "cmake $label" "$dir/consumer" "$VERSION" >"$dir.out"
        cat "$dir.out"
    else
        notok "cmake: consumer does not build through $label (see $dir.log)"
        tail -n 15 "$dir.log" | sed 's/^/#   /'
        : >"$dir.out"
    fi
}
if command -v cmake >/dev/null; then
    cmake_consumer add_subdirectory "$T/cmake-subdir" -DKHEAP_SOURCE_DIR="$ROOT" \
        -DKHEAP_PAGE_SHIFT=13 -DKHEAP_MIN_ADD_REGION_SIZE=32768
    if grep -q '^# page size 8192$' "$T/cmake-subdir.out"; then
        ok "cmake: the cache variable KHEAP_PAGE_SHIFT=13 reaches kheap and its user (8 KiB pages)"
    else
        notok "cmake: KHEAP_PAGE_SHIFT=13 did not give the consumer 8 KiB pages"
    fi
    check "cmake: kheap builds and installs on its own (cmake --install)" \
        sh -c "cmake -S . -B '$T/cmake-kheap' -DCMAKE_INSTALL_PREFIX='$T/cmake-prefix' &&
               cmake --build '$T/cmake-kheap' -j2 && cmake --install '$T/cmake-kheap'"
    cmake_consumer "find_package (cmake --install)" "$T/cmake-find" \
        -DCMAKE_PREFIX_PATH="$T/cmake-prefix"
    cmake_consumer "find_package (make install)" "$T/cmake-find-make" -DCMAKE_PREFIX_PATH="$D$P"
    grep -q "found kheap $VERSION in $D$P/lib/cmake/kheap" "$T/cmake-find-make.log" ||
        notok "cmake: find_package did not report kheap $VERSION from the make install tree"
else
    notok "cmake: not installed (tools/deps.sh package)"
fi

check "make uninstall DESTDIR=... removes every file make install wrote" \
    sh -c "make --no-print-directory uninstall DESTDIR='$D' && [ -z \"\$(find '$D' ! -type d)\" ]"

# --- the Debian packages ----------------------------------------------------
tools/deb-check.sh "$T/deb" check
