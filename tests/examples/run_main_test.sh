#!/usr/bin/env bash
# The README's main job (examples/main_job.sh, which scripts/run-main.sh runs
# after the build): a save, a SIGTERM, a resume and the final line, equal to
# an uninterrupted run's.
#
#   run_main_test.sh <train_mlp binary> <configs/example.yaml>
set -euo pipefail
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$(dirname "$0")/../../examples/main_job.sh" "$1" "$2" "$work/ckpt" >"$work/out.log" 2>&1 ||
  { cat "$work/out.log"; echo "FAIL: the main job failed"; exit 1; }
for pattern in "checkpoint of step 20 committed" "SIGTERM received: saving step 130" \
  "preempted: checkpoint of step 130 saved" "resumed from .* at step 130 " \
  "^trained to step 300" "^preempted and resumed == uninterrupted: final_params_sha256=[0-9a-f]{64}$"; do
  grep -Eq "$pattern" "$work/out.log" ||
    { cat "$work/out.log"; echo "FAIL: no line matching '$pattern'"; exit 1; }
done
echo PASS
