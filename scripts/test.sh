#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test (ctest). Extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
ctest --test-dir "${DCP_BUILD_DIR:-build}" --output-on-failure -j "${DCP_JOBS:-2}" "$@"
