#!/bin/sh
# Build the Debian packages from a copy of the tree, and check them.
#   tools/deb-check.sh WORKDIR build   build only (make deb)
#   tools/deb-check.sh WORKDIR check   build and check (make check)
# dpkg-buildpackage writes the packages next to the tree it builds, so the
# tree is copied to WORKDIR/kheap-VERSION first (git's file list when this
# is a git checkout: tracked and untracked files, not the ignored ones) and
# the .deb files land in WORKDIR. "check" also runs lintian (no errors
# allowed), installs libkheap0 and libkheap-dev (as root, or through sudo
# -n), runs python3 under LD_PRELOAD=libkheap.so.0 and a program built with
# the system's pkg-config, and removes the packages again if it installed
# them. Prints "ok - " / "not ok - " lines.
set -u
W=$1 MODE=${2:-check}
VERSION=$(sed -n 's/^#define KHEAP_VERSION "\(.*\)"$/\1/p' include/kheap.h)
ok() { echo "ok - deb: $*"; }
notok() { echo "not ok - deb: $*"; }

for t in dpkg-buildpackage dh lintian; do
    command -v $t >/dev/null || { notok "$t is not installed (tools/deps.sh package)"; exit 1; }
done

deb_version=$(dpkg-parsechangelog -l debian/changelog -S Version)
if [ "${deb_version%-*}" = "$VERSION" ]; then
    ok "debian/changelog's version $deb_version is kheap.h's $VERSION"
else
    notok "debian/changelog says $deb_version, include/kheap.h $VERSION"
fi

rm -rf "$W"
mkdir -p "$W"
W=$(cd "$W" && pwd)
SRC=$W/kheap-$VERSION
mkdir -p "$SRC"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -co --exclude-standard -z | xargs -0 sh -c \
        'for f; do [ -e "$f" ] && printf "%s\n" "$f"; done' sh | tar -cf - -T - | tar -xf - -C "$SRC"
else
    tar -cf - --exclude=./build --exclude=./dist . | tar -xf - -C "$SRC"
fi

start=$(date +%s)
if (cd "$SRC" && dpkg-buildpackage -us -uc -b -j2) >"$W/build.log" 2>&1; then
    ok "dpkg-buildpackage -us -uc -b built $(cd "$W" && ls ./*.deb | sed 's|^\./||' | tr '\n' ' ')in $(($(date +%s) - start)) s"
else
    notok "dpkg-buildpackage failed (see $W/build.log)"
    tail -n 20 "$W/build.log" | sed 's/^/#   /'
    exit 1
fi
[ "$MODE" = check ] || exit 0

arch=$(dpkg-architecture -qDEB_HOST_ARCH)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
lib=$W/libkheap0_${deb_version}_$arch.deb
dev=$W/libkheap-dev_${deb_version}_$arch.deb
dbg=$W/libkheap0-dbgsym_${deb_version}_$arch.deb
for f in "$lib" "$dev" "$dbg"; do
    [ -f "$f" ] && ok "built $(basename "$f")" || notok "$(basename "$f") was not built"
done
[ -f "$lib" ] && [ -f "$dev" ] || exit 1

if dpkg-deb -c "$lib" | grep -q "usr/lib/$multiarch/libkheap.so.0 -> libkheap.so.$VERSION" &&
    dpkg-deb -c "$dev" | grep -q "usr/lib/$multiarch/pkgconfig/kheap.pc" &&
    dpkg-deb -c "$dev" | grep -q "usr/lib/$multiarch/libkheap.so -> libkheap.so.0"; then
    ok "libkheap0 holds libkheap.so.0 in /usr/lib/$multiarch, libkheap-dev the link, kheap.pc"
else
    notok "the packages do not hold the files where they belong"
fi

lintian --fail-on error --no-tag-display-limit "$W"/*.changes >"$W/lintian.log" 2>&1
rc=$?
summary="$(grep -c '^E:' "$W/lintian.log") errors, $(grep -c '^W:' "$W/lintian.log") warnings"
if [ $rc -eq 0 ]; then
    ok "lintian: $summary"
else
    notok "lintian: $summary (see $W/lintian.log)"
fi
sed 's/^/#   /' "$W/lintian.log"

# Installing needs root; the check counts as failed without it.
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
        notok "installing the packages needs root or sudo -n"
        exit 1
    fi
fi
was_installed=$(dpkg-query -W -f='${Status}' libkheap0 2>/dev/null | grep -c 'ok installed')
if DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=120 "$lib" "$dev" >"$W/install.log" 2>&1 </dev/null; then
    ok "apt-get install of libkheap0 and libkheap-dev"
else
    notok "apt-get install failed (see $W/install.log)"
    tail -n 10 "$W/install.log" | sed 's/^/#   /'
    exit 1
fi

script='import json, sqlite3
d = {str(i): [i] * (i % 50) for i in range(20000)}
s = json.dumps(d)
db = sqlite3.connect(":memory:")
db.execute("create table t (k, v)")
db.executemany("insert into t values (?, ?)", ((k, json.dumps(v)) for k, v in d.items()))
print(len(s), db.execute("select count(*), sum(length(v)) from t").fetchone())'
want=$(python3 -c "$script" 2>&1)
got=$(cd / && KHEAP_STATS=1 LD_PRELOAD=libkheap.so.0 python3 -c "$script" 2>"$W/python.err")
if [ -n "$want" ] && [ "$got" = "$want" ] && grep -q '^kheap: statistics at exit' "$W/python.err"; then
    ok "LD_PRELOAD=libkheap.so.0 python3 -c ... (json, sqlite3) prints what it prints on glibc, and kheap's statistics"
else
    notok "python3 under the installed libkheap.so.0: got '$got', want '$want'"
    tail -n 5 "$W/python.err" | sed 's/^/#   /'
fi

if cc -std=c11 -Wall -Werror tests/pkg/consumer.c $(pkg-config --cflags --libs kheap) \
    -o "$W/consumer" 2>"$W/consumer.log" && "$W/consumer" "$VERSION" >"$W/consumer.out" 2>&1 &&
    ! grep -q '^not ok' "$W/consumer.out"; then
    ok "a program built with the installed pkg-config kheap runs ($(grep -c '^ok' "$W/consumer.out") checks)"
else
    notok "a program built with the installed pkg-config kheap fails"
    cat "$W/consumer.log" "$W/consumer.out" 2>/dev/null | tail -n 8 | sed 's/^/#   /'
fi

if [ "$was_installed" = 0 ]; then
    if DEBIAN_FRONTEND=noninteractive $SUDO apt-get purge -y -qq -o DPkg::Lock::Timeout=120 \
        libkheap0 libkheap-dev >>"$W/install.log" 2>&1 </dev/null; then
        ok "the packages are removed again"
    else
        notok "apt-get purge of the packages failed (see $W/install.log)"
    fi
fi
