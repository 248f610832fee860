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
work="$(mktemp -d)"
trap 'pkill -KILL -f "^$BIN .*--dir $work/" 2>/dev/null || true; rm -rf "$work"' EXIT

source "$(dirname "$0")/kill_lib.sh"
# The line a run prints once it has resumed (or started fresh): its manager,
# and so its signal handlers, is set up.
STARTED='^(resumed from|no checkpoint in)'
write_often_config "$work/often.yaml"
ARGS=(--config "$work/often.yaml" --steps "$STEPS" --print-every 0)
sha_of() { sed -n 's/^final_params_sha256=//p' "$1"; }

"$BIN" "${ARGS[@]}" --dir "$work/ref" >"$work/ref.log" 2>&1
ref="$(sha_of "$work/ref.log")"
[ -n "$ref" ] || { echo "FAIL: the uninterrupted run printed no final_params_sha256"; cat "$work/ref.log"; exit 1; }
echo "uninterrupted: $ref"

dir="$work/killed"
kills=0 during_save=0 attempts=0 steps_seen=""
while [ "$kills" -lt "$KILLS" ] || [ "$during_save" -lt 2 ]; do
  attempts=$((attempts + 1))
  if [ "$attempts" -gt $((KILLS * 4)) ]; then
    echo "FAIL: $attempts attempts gave $kills kills, $during_save of them during a save"
    exit 1
  fi
  "$BIN" "${ARGS[@]}" --dir "$dir" >"$work/run.log" 2>&1 &
  pid=$!
  # Then ~1 ms a step here, a save every 5 steps.
  wait_for_line "$pid" "$work/run.log" "$STARTED" || true
  random_sleep 500
  if ! kill -KILL "$pid" 2>/dev/null; then
    wait "$pid" || true
    echo "run $attempts finished before the kill"
    break
  fi
  wait "$pid" 2>/dev/null || true
  kills=$((kills + 1))
  if compgen -G "$dir/.tmp.*" >/dev/null; then during_save=$((during_save + 1)); fi
  steps_seen="$steps_seen $(newest_step "$dir")"
done
if [ "$kills" -lt "$KILLS" ]; then
  echo "FAIL: only $kills kills before a run finished (the machine is faster than this test assumes)"
  exit 1
fi
echo "kills: $kills, $during_save of them during a save; newest committed step after each:$steps_seen"

"$BIN" "${ARGS[@]}" --dir "$dir" >"$work/final.log" 2>&1
got="$(sha_of "$work/final.log")"
grep -E "resumed from|starting from scratch" "$work/final.log" || true
if [ "$got" != "$ref" ]; then
  echo "FAIL: after $kills kills final_params_sha256=$got, uninterrupted $ref"
  cat "$work/final.log"
  exit 1
fi
echo "killed and resumed: $got (equal)"

# SIGTERM: save, exit 0, resume at exactly that step.
tdir="$work/term"
"$BIN" "${ARGS[@]}" --dir "$tdir" >"$work/term.log" 2>&1 &
pid=$!
wait_for_line "$pid" "$work/term.log" "$STARTED" || { echo "FAIL: train_mlp did not start"; cat "$work/term.log"; exit 1; }
sleep 0.3
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
if [ "$status" -ne 0 ]; then
  echo "FAIL: SIGTERM made train_mlp exit $status, not 0"
  cat "$work/term.log"
  exit 1
fi
saved="$(sed -n 's/^preempted: checkpoint of step \([0-9]*\) saved.*/\1/p' "$work/term.log")"
if [ -z "$saved" ]; then
  echo "FAIL: no 'preempted: checkpoint of step N saved' after SIGTERM"
  cat "$work/term.log"
  exit 1
fi
"$BIN" "${ARGS[@]}" --dir "$tdir" >"$work/term2.log" 2>&1
resumed="$(sed -n 's/^resumed from .* at step \([0-9]*\) .*/\1/p' "$work/term2.log")"
if [ "$resumed" != "$saved" ]; then
  echo "FAIL: SIGTERM saved step $saved, the next run resumed at '${resumed}'"
  cat "$work/term2.log"
  exit 1
fi
if [ "$(sha_of "$work/term2.log")" != "$ref" ]; then
  echo "FAIL: the run resumed after SIGTERM ends with another final_params_sha256"
  exit 1
fi
echo "SIGTERM at step $saved: exit 0, resumed at step $resumed, same final digest"
echo PASS
