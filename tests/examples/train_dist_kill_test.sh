#!/usr/bin/env bash
# End to end on 2 real ranks over Gloo: train_dist (data-parallel, fc1
# sharded) is started with scripts/launch.sh and SIGKILLed at random moments
# (one rank, or both as a lost node would), started again after each kill,
# and must end with the final_params_sha256 of an uninterrupted 2-rank run
# with the same seed. Then SIGTERM to both ranks: they agree, save, exit 0,
# and the next run resumes at exactly that step.
#
#   train_dist_kill_test.sh <train_dist binary> <scripts/launch.sh> [kills (default 6)]
set -euo pipefail
BIN="$1"
LAUNCH="$2"
KILLS="${3:-6}"
STEPS=800
source "$(dirname "$0")/kill_lib.sh"
kill_test_setup "$BIN"
# The line a run prints once it has resumed (or started fresh): its manager,
# and so its signal handlers, is set up.
STARTED='^\[rank 0\] (resumed from|no checkpoint in)'
write_often_config "$work/often.yaml"
ARGS=(--config "$work/often.yaml" --steps "$STEPS" --print-every 1)  # steps as they happen (sleep_into_run)
rank_pids() { pgrep -f "^$BIN_RE .*--dir $(re_escape "$1")\$" || true; }
RUN=("$LAUNCH" 2 -- "$BIN")
PREFIX='\[rank 0\] '
run_reference

dir="$work/killed"
kills=0 during_save=0 attempts=0 steps_seen=""
while [ "$kills" -lt "$KILLS" ]; do
  attempts=$((attempts + 1))
  if [ "$attempts" -gt $((KILLS * 3)) ]; then
    echo "FAIL: $attempts attempts gave only $kills kills"
    exit 1
  fi
  start_run "$dir" "$work/run.log"
  launcher=$!
  # Then a few ms a step, a save every 5 steps; at most an eighth of the
  # steps per run, so that KILLS runs do not usually reach the end.
  wait_for_line "$launcher" "$work/run.log" "$STARTED" || true
  sleep_into_run "$work/run.log" 1200 $((STEPS / (KILLS + 2)))
  mapfile -t pids < <(rank_pids "$dir")
  if [ "${#pids[@]}" -eq 0 ]; then
    wait "$launcher" || true
    series_finished "$work/run.log"
    continue
  fi
  if [ $((attempts % 2)) -eq 1 ]; then
    victims=("${pids[$((RANDOM % ${#pids[@]}))]}")  # one rank
  else
    victims=("${pids[@]}")  # the whole node
  fi
  saving=0
  compgen -G "$dir/.tmp.*" >/dev/null && saving=1
  kill -KILL "${victims[@]}" 2>/dev/null || true
  wait "$launcher" || true  # the launcher stops the surviving rank
  kills=$((kills + 1))
  during_save=$((during_save + saving))
  steps_seen="$steps_seen $(newest_step "$dir")(${#victims[@]})"
done
echo "kills: $kills, $during_save while a save was in progress; newest committed step (ranks killed) after each:$steps_seen"

finish_and_compare "$dir" "$kills kills on 2 ranks"

# SIGTERM to both ranks (as a scheduler's preemption does): they agree on one
# step, save it, exit 0.
term_targets() {
  local -a pids
  mapfile -t pids < <(rank_pids "$2")
  [ "${#pids[@]}" -eq 2 ] || { echo "FAIL: expected 2 ranks running, found ${#pids[@]}" >&2; return 1; }
  printf '%s\n' "${pids[@]}"
}
sigterm_test
echo PASS
