#!/usr/bin/env bash
# The main job: installs dependencies, builds, and runs the training example
# examples/train_mlp.cpp with configs/example.yaml (examples/main_job.sh):
# run 1 trains with async checkpoints and is preempted (SIGTERM) after 130
# steps, run 2 resumes from the newest committed checkpoint and finishes, and
# its final_params_sha256 is checked against an uninterrupted run's.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
exec ./examples/main_job.sh "${DCP_BUILD_DIR:-build}/examples/train_mlp" configs/example.yaml
