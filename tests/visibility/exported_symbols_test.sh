#!/usr/bin/env bash
# The shared libraries export dcp++'s public API and nothing of its
# internals: fails, listing them, when a library's dynamic symbol table
# defines a symbol whose own scope is the internal namespace dcp::internal
# (docs/DESIGN.md, "Visibility"). Symbols of std or c10 templates
# instantiated on internal types are not the library's own and do not count:
# the test reads the mangled names, so `std::vector<dcp::internal::X>::...`
# (_ZNSt6vector...) is not taken for `dcp::internal::...` (_ZN3dcp8internal...).
# Prints per library how many symbols it exports, how many of them are dcp's.
#
#   exported_symbols_test.sh <lib.so>...
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: $0 <lib.so>..." >&2; exit 2; }

# A mangled name's own scope: after the special-name prefixes (vtable,
# typeinfo, typeinfo name, VTT, guard variable, thunks, TLS wrappers, a
# function's local entities) comes the nested name, N, its cv- and
# ref-qualifiers, then the namespaces.
PREFIX='^_Z(TV|TT|TI|TS|TH|TW|GV|GR|Th[n]?[0-9]+_|Tv[n]?[0-9]+_n?[0-9]+_|Z)*N[rVKRO]*'

# The pattern itself, on names it must and must not take for internal ones.
for name in _ZN3dcp8internal4wire6encodeB5cxx11ERKNS_8SavePlanE \
            _ZNK3dcp8internal11DistWrapper4rankEv _ZTVN3dcp8internal3EnvE \
            _ZTIN3dcp8internal3EnvE _ZZN3dcp8internal10BufferPool8instanceEvE4pool \
            _ZGVZN3dcp8internal10BufferPool8instanceEvE4pool \
            _ZThn8_N3dcp8internal13PosixWritable6appendEPKvm; do
  printf '%s\n' "$name" | grep -qE "${PREFIX}3dcp(7manager)?8internal" ||
    { echo "self-check: $name ($(c++filt "$name")) not recognised as internal" >&2; exit 2; }
done
for name in _ZNSt6vectorIN3dcp8internal3EnvESaIS2_EE9push_backEOS2_ _ZN3dcp4saveERKSt3mapE \
            _ZN3c104guts5applyIN3dcp8internal3FooEEEvv _ZN3dcp7manager7validateERKNS0_1OE; do
  printf '%s\n' "$name" | grep -qE "${PREFIX}3dcp(7manager)?8internal" &&
    { echo "self-check: $name ($(c++filt "$name")) taken for internal" >&2; exit 2; }
done

status=0
for lib in "$@"; do
  symbols=$(nm -D --defined-only "$lib" | awk 'NF >= 3 { print $3 }')
  total=$(printf '%s\n' "$symbols" | grep -c . || true)
  dcp=$(printf '%s\n' "$symbols" | grep -cE "${PREFIX}3dcp" || true)
  internal=$(printf '%s\n' "$symbols" | grep -E "${PREFIX}3dcp(7manager)?8internal" || true)
  count=$(printf '%s\n' "$internal" | grep -c . || true)
  echo "$(basename "$lib"): $total exported symbols, $dcp in namespace dcp, $count in dcp::internal"
  if [ "$count" -gt 0 ]; then
    printf '%s\n' "$internal" | c++filt | sed 's/^/    /'
    status=1
  fi
done
exit $status
