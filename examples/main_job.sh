#!/usr/bin/env bash
# The main job (scripts/run-main.sh runs it after the build): train_mlp with
# configs/example.yaml, preempted part-way, resumed, and checked against an
# uninterrupted run.
#
#   examples/main_job.sh [train_mlp binary] [config] [checkpoint dir]
#
# Run 1 trains with async checkpoints every 20 steps; after 130 steps it sends
# itself SIGTERM, as a scheduler's preemption would: it saves step 130 and
# exits 0. Run 2 resumes from the newest committed checkpoint (step 130) and
# trains to step 300. A third, uninterrupted run in another directory must end
# with the same final_params_sha256.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${1:-$root/build/examples/train_mlp}"
CONFIG="${2:-$root/configs/example.yaml}"
# Deleted first, with DIR.uninterrupted: never taken from the environment.
DIR="${3:-checkpoints/train_mlp}"
unset DCP_CHECKPOINT_DIR DCP_RESUME_FROM  # --dir says where
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

rm -rf "$DIR" "$DIR.uninterrupted"
echo "== run 1: train, checkpoint every 20 steps (async), SIGTERM after 130 steps"
"$BIN" --config "$CONFIG" --dir "$DIR" --stop-after 130
echo "== run 2: resume from the newest committed checkpoint in $DIR and finish"
"$BIN" --config "$CONFIG" --dir "$DIR" | tee "$log"
resumed="$(sed -n 's/^final_params_sha256=//p' "$log")"
echo "== run 3: the same training without interruption (in $DIR.uninterrupted)"
"$BIN" --config "$CONFIG" --dir "$DIR.uninterrupted" --print-every 100 2>/dev/null | tee "$log"
plain="$(sed -n 's/^final_params_sha256=//p' "$log")"
if [ -z "$resumed" ] || [ "$resumed" != "$plain" ]; then
  echo "FAIL: preempted and resumed: '$resumed'; uninterrupted: '$plain'"
  exit 1
fi
echo "preempted and resumed == uninterrupted: final_params_sha256=$resumed"
