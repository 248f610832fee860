#!/usr/bin/env bash
# End to end, with the real example binary: train_mlp is killed with SIGKILL
# at random moments (many of them while a checkpoint is being saved), started
# again after each kill, and must end with the final_params_sha256 of an
# uninterrupted run with the same seed. Then SIGTERM: the run saves, exits 0,
# and the next run resumes at exactly the saved step.
#
#   train_mlp_kill_test.sh <train_mlp binary> [kills (default 8)]
set -euo pipefail
BIN="$1"
KILLS="${2:-8}"
STEPS=5000
source "$(dirname "$0")/kill_lib.sh"
kill_test_setup "$BIN"
# The line a run prints once it has resumed (or started fresh): its manager,
# and so its signal handlers, is set up.
STARTED='^(resumed from|no checkpoint in)'
write_often_config "$work/often.yaml"
ARGS=(--config "$work/often.yaml" --steps "$STEPS" --print-every 1)  # steps as they happen (sleep_into_run)
RUN=("$BIN")
PREFIX=''
run_reference

dir="$work/killed"
kills=0 during_save=0 attempts=0 steps_seen=""
while [ "$kills" -lt "$KILLS" ] || [ "$during_save" -lt 2 ]; do
  attempts=$((attempts + 1))
  if [ "$attempts" -gt $((KILLS * 4)) ]; then
    echo "FAIL: $attempts attempts gave $kills kills, $during_save of them during a save"
    exit 1
  fi
  start_run "$dir" "$work/run.log"
  pid=$!
  # Then ~1 ms a step here, a save every 5 steps; a run goes no further than
  # its share of the steps, so that the attempts do not usually reach the end.
  wait_for_line "$pid" "$work/run.log" "$STARTED" || true
  sleep_into_run "$work/run.log" 500 $((STEPS / (KILLS * 4 + 2)))
  if ! kill -KILL "$pid" 2>/dev/null; then
    wait "$pid" || true
    series_finished "$work/run.log"
    continue
  fi
  wait "$pid" 2>/dev/null || true
  kills=$((kills + 1))
  if compgen -G "$dir/.tmp.*" >/dev/null; then during_save=$((during_save + 1)); fi
  steps_seen="$steps_seen $(newest_step "$dir")"
done
echo "kills: $kills, $during_save of them during a save; newest committed step after each:$steps_seen"

finish_and_compare "$dir" "$kills kills"

# SIGTERM: save, exit 0, resume at exactly that step.
term_targets() { echo "$1"; }
sigterm_test
echo PASS
