#!/usr/bin/env bash
# `cmake --install` then find_package(dcp) from another project: the consumer
# links dcp::core, dcp::dist, dcp::manager and dcp::trainer, saves and loads a
# checkpoint, catches the CheckpointError of a failed load by type, and runs a
# manager through the trainer hooks.
set -euo pipefail
BUILD_DIR="$1"
HERE="$(cd "$(dirname "$0")" && pwd)"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cmake --install "$BUILD_DIR" --prefix "$WORK/prefix" > "$WORK/install.log"
mkdir -p "$WORK/consumer"
cp "$HERE/consumer_CMakeLists.txt" "$WORK/consumer/CMakeLists.txt"
cp "$HERE/consumer_main.cpp" "$WORK/consumer/main.cpp"
cmake -S "$WORK/consumer" -B "$WORK/consumer/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$WORK/prefix" > "$WORK/configure.log" || { cat "$WORK/configure.log"; exit 1; }
cmake --build "$WORK/consumer/build" > "$WORK/build.log" || { cat "$WORK/build.log"; exit 1; }
"$WORK/consumer/build/consumer" "$WORK/ck"
echo "find_package(dcp) consumer built and ran"
