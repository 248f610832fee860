#!/usr/bin/env bash
# The main job: installs dependencies, builds, and runs the training example
# twice: the first run is stopped part-way (as a preemption would stop it),
# the second resumes from the newest checkpoint and finishes.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
BIN="${DCP_BUILD_DIR:-build}/examples/train_resume"
DIR="${DCP_CHECKPOINT_DIR:-checkpoints/train_resume}"
rm -rf "$DIR"
echo "== run 1: trains, checkpoints every 25 steps, stops after 60 steps"
"$BIN" --dir "$DIR" --steps 200 --save-every 25 --stop-after 60
echo "== run 2: resumes from the newest checkpoint and finishes"
"$BIN" --dir "$DIR" --steps 200 --save-every 25
