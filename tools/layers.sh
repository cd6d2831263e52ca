#!/bin/sh
# The core's layering, checked on its object files: each file of the core
# may use only symbols defined in files below it (earlier in the list) or
# in itself, or outside the core (the port, the compiler's runtime).
#
#   tools/layers.sh OBJDIR FILE...     (FILE: the core's .c files, bottom up)
#
# Prints one line per upward reference (file, symbol, the file above that
# defines it) and exits 1 if there is any; else one "ok" line.
set -eu
dir=$1
shift
[ $# -gt 0 ] || { echo "not ok - layers: no core files given"; exit 1; }
nm=${NM:-nm}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

i=0
for f in "$@"; do
  o="$dir/$(basename "$f" .c).o"
  [ -f "$o" ] || { echo "layers: $o missing (build it first)" >&2; exit 2; }
  i=$((i + 1))
  # Defined (text, data, bss, read-only) and undefined symbols.
  $nm -P "$o" | awk -v i="$i" -v f="$f" '$2 ~ /^[TDBRVWCGSi]$/ { print $1, i, f }' >>"$tmp/defs"
  $nm -P -u "$o" | awk -v i="$i" -v f="$f" '{ print $1, i, f }' >>"$tmp/uses"
done

bad=$(awk 'NR == FNR { layer[$1] = $2; file[$1] = $3; next }
           ($1 in layer) && layer[$1] > $2 {
             printf "%s uses %s, defined above it in %s\n", $3, $1, file[$1] }' \
      "$tmp/defs" "$tmp/uses")
if [ -n "$bad" ]; then
  echo "$bad"
  echo "not ok - layers: the core calls up (order: $*)"
  exit 1
fi
echo "ok - layers: $# core files, each calls only the files below it and the port"
