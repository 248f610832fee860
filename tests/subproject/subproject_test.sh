#!/usr/bin/env bash
# dcp++ built inside another project (tests/subproject/CMakeLists.txt), as
# add_subdirectory() or FetchContent would: the consumer keeps its C++20 and
# its build type (none), dcp++ adds none of its tests, examples or
# benchmarks, the dcp:: targets are those find_package(dcp) gives, and a
# program linking dcp::core and dcp::manager saves, loads, catches the
# libraries' errors by type and runs a manager.
#
#   subproject_test.sh <dcp++ source dir> <work dir> <mode>:<via>...
#     mode build:     configure, build the consumer (and the dcp++ libraries
#                     it links, in C++20), run it
#     mode configure: configure only (the checks of CMakeLists.txt)
#     via:            add_subdirectory | FetchContent
#
# The work directory is emptied first; it stays at the same path from run to
# run so that ccache (when installed) serves the compiles of a rerun.
set -euo pipefail
SRC="$(cd "$1" && pwd)"
WORK="$2"
shift 2
HERE="$(cd "$(dirname "$0")" && pwd)"

launcher=()
if command -v ccache > /dev/null; then
  # The parent's launcher, which dcp++ must use as it is. The sloppiness lets
  # ccache cache compiles that use a precompiled header.
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
fi

fail() {
  echo "subproject ($via): $*" >&2
  exit 1
}

for variant in "$@"; do
  mode=${variant%%:*}
  via=${variant#*:}
  build="$WORK/$via"
  rm -rf "$build"
  mkdir -p "$build"
  start=$SECONDS
  cmake -S "$HERE" -B "$build" -G Ninja -DDCP_VIA="$via" -DDCP_SRC="$SRC" \
    -DCMAKE_EXPORT_COMPILE_COMMANDS=ON "${launcher[@]}" > "$build/configure.log" 2>&1 ||
    { cat "$build/configure.log"; fail "configure failed"; }
  grep -q '^CMAKE_BUILD_TYPE:STRING=$' "$build/CMakeCache.txt" ||
    fail "the build type in the cache is $(grep '^CMAKE_BUILD_TYPE' "$build/CMakeCache.txt")"
  grep -q '^DCP_BUILD_TESTS:BOOL=OFF$' "$build/CMakeCache.txt" || fail "DCP_BUILD_TESTS is not OFF"
  if ninja -C "$build" -t targets all | grep -E '(^|/)(dcp_core_test|dcp_test_common|train_mlp)(:| )'; then
    fail "the build has targets of dcp++'s tests or examples"
  fi
  if [ "$mode" = build ]; then
    cmake --build "$build" --target consumer -j "${DCP_JOBS:-2}" > "$build/build.log" 2>&1 ||
      { cat "$build/build.log"; fail "build failed"; }
    # dcp++'s own sources compiled with the parent's standard.
    python3 - "$build/compile_commands.json" << 'PY' || fail "dcp++ was not compiled as C++20"
import json, sys
cmds = [c["command"] for c in json.load(open(sys.argv[1])) if c["file"].endswith("dcp/src/checkpoint.cpp")]
sys.exit(0 if cmds and all("-std=c++20" in c for c in cmds) else 1)
PY
    if find "$build" -name 'dcp_*_test*' -type f | grep .; then fail "test binaries were built"; fi
    "$build/consumer" "$build/ck"
  fi
  echo "subproject ($via): $mode passed in $((SECONDS - start)) s"
done
