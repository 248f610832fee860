#!/usr/bin/env bash
# thread_safety_test.sh <clang++> <dcp include dir> <source dir>
# The annotations of dcp/thread_annotations.h are checked, not decoration:
# thread_safety_ok.cpp compiles with -Wthread-safety -Werror, and clang
# reports each line of thread_safety_bad.cpp marked "expected".
set -euo pipefail
CXX=$1 INC=$2 SRC=$3
"$CXX" -std=c++17 -fsyntax-only -Wthread-safety -Werror -I"$INC" "$SRC/thread_safety_ok.cpp"
echo "thread_safety_ok.cpp: no findings"
out=$("$CXX" -std=c++17 -fsyntax-only -Wthread-safety -I"$INC" "$SRC/thread_safety_bad.cpp" 2>&1 || true)
expected=$(grep -n "// expected" "$SRC/thread_safety_bad.cpp" | cut -d: -f1)
status=0
for line in $expected; do
  if grep -q "thread_safety_bad.cpp:$line:.*\[-Wthread-safety" <<<"$out"; then
    echo "line $line: reported"
  else
    echo "line $line: NOT reported by -Wthread-safety" >&2
    status=1
  fi
done
[ $status -eq 0 ] || { echo "$out" >&2; exit 1; }
echo "thread_safety_bad.cpp: all $(wc -w <<<"$expected") findings reported"
