#!/usr/bin/env bash
# Configures and builds dcp++ in ./build (Release, ccache when present, 2 jobs by default).
set -euo pipefail
cd "$(dirname "$0")/.."
"./scripts/install-deps.sh"
BUILD_DIR=${DCP_BUILD_DIR:-build}
JOBS=${DCP_JOBS:-2}
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=${DCP_BUILD_TYPE:-Release} \
    -DCMAKE_EXPORT_COMPILE_COMMANDS=ON "$@"
fi
cmake --build "$BUILD_DIR" -j "$JOBS"
