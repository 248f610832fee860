# Shared by the examples' kill tests (sourced, not run).

# re_escape S: S as an extended regex that matches S literally (pgrep -f).
re_escape() { printf '%s' "$1" | sed 's/[][\.*^$+?(){}|]/\\&/g'; }

# kill_test_setup BIN: the scratch directory $work, removed at exit together
# with any run of BIN still using it; BIN_RE and WORK_RE, the two as regexes.
# The directories are the tests' own (--dir), never the environment's.
kill_test_setup() {
  unset DCP_CHECKPOINT_DIR DCP_RESUME_FROM
  BIN_RE="$(re_escape "$1")"
  work="$(mktemp -d)"
  WORK_RE="$(re_escape "$work")"
  trap 'pkill -KILL -f "^$BIN_RE .*--dir $WORK_RE/" 2>/dev/null || true; rm -rf "$work"' EXIT
}

# start_run DIR LOG: starts a run in DIR in the background (its pid in $!),
# LOG emptied first so that nothing of an earlier run is read as this one's.
start_run() {
  : >"$2"
  "${RUN[@]}" "${ARGS[@]}" --dir "$1" >"$2" 2>&1 &
}

# Writes a policy that saves every 5 steps in the background and keeps two:
# a random kill often lands inside a save.
write_often_config() {
  cat >"$1" <<'YAML'
checkpoint:
  save: {every_steps: 5, at_end: true}
  async: {enabled: true}
  keep: {last: 2}
YAML
}

# wait_for_line PID LOG REGEX: waits (up to 120 s) until LOG has a line
# matching REGEX; fails early when PID has exited.
wait_for_line() {
  local i
  for i in $(seq 1 1200); do
    grep -Eq "$3" "$2" && return 0
    kill -0 "$1" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# printed_step LOG: the last step the run printed ("step N ..." lines, from
# --print-every 1), or nothing.
printed_step() { sed -n "s/^${PREFIX}step  *\([0-9][0-9]*\) .*/\1/p" "$1" | tail -1; }

# sleep_into_run LOG MS MAX_STEPS: sleeps a random time below MS
# milliseconds, but no longer than until the run has trained MAX_STEPS steps
# past the first step it was seen at: however fast the machine, the runs
# cannot reach the end before the test has made its kills.
sleep_into_run() {
  local start="" s now deadline
  now=$(($(date +%s%N) / 1000000))
  deadline=$((now + RANDOM % $2))
  while [ "$now" -lt "$deadline" ]; do
    s="$(printed_step "$1")"
    if [ -n "$s" ]; then
      [ -n "$start" ] || start=$s
      [ $((s - start)) -lt "$3" ] || return 0
    fi
    sleep 0.01
    now=$(($(date +%s%N) / 1000000))
  done
}

# The newest committed step in manager directory $1, or "none".
newest_step() {
  local s
  s="$( (ls "$1" 2>/dev/null || true) | sed -n "s/^step_0*//p" | sort -n | tail -1)"
  echo "${s:-none}"
}

# start_run and the functions below use what the test sets: RUN (the
# command that starts a run, up to the example's flags), ARGS (the flags,
# without --dir), PREFIX (the regex that starts the lines rank 0 prints) and
# work (scratch).

# final_sha LOG: the final_params_sha256 a run printed.
final_sha() { sed -n "s/^${PREFIX}final_params_sha256=//p" "$1"; }

# run_reference: an uninterrupted run in $work/ref; sets ref to its digest.
run_reference() {
  "${RUN[@]}" "${ARGS[@]}" --dir "$work/ref" >"$work/ref.log" 2>&1 ||
    { echo "FAIL: the uninterrupted run exited $?"; cat "$work/ref.log"; exit 1; }
  ref="$(final_sha "$work/ref.log")"
  [ -n "$ref" ] || { echo "FAIL: the uninterrupted run printed no final_params_sha256"; cat "$work/ref.log"; exit 1; }
  echo "uninterrupted: $ref"
}

# finish_and_compare DIR WHAT: runs to the end in DIR; its digest must be ref.
finish_and_compare() {
  local got
  "${RUN[@]}" "${ARGS[@]}" --dir "$1" >"$work/final.log" 2>&1 ||
    { echo "FAIL: the run after $2 exited $?"; cat "$work/final.log"; exit 1; }
  got="$(final_sha "$work/final.log")"
  grep -E "resumed from|starting from scratch" "$work/final.log" || true
  if [ "$got" != "$ref" ]; then
    echo "FAIL: after $2 final_params_sha256=$got, uninterrupted $ref"
    cat "$work/final.log"
    exit 1
  fi
  echo "$2, resumed to the end: $got (equal)"
}

# series_finished LOG: a run trained to the end before the test could kill
# it (a fast or loaded machine); it must have ended with the reference
# digest. Counts the series ($series) and moves $dir to a fresh directory,
# where the test goes on.
series_finished() {
  local got
  got="$(final_sha "$1")"
  if [ "$got" != "$ref" ]; then
    echo "FAIL: a run that trained to the end after kills printed final_params_sha256='$got', uninterrupted $ref"
    cat "$1"
    exit 1
  fi
  series=$((${series:-0} + 1))
  dir="$work/killed$series"
  echo "series $series trained to the end before the test made its kills (digest equal); going on in a fresh directory"
}

# sigterm_test: a run in $work/term gets SIGTERM once started (sent to the
# pids the test's term_targets PID DIR prints; PID is what start_run
# started). It must save a step and exit 0; the next run must resume at
# exactly that step and end with the reference digest.
sigterm_test() {
  local tdir="$work/term" pid status=0 saved resumed
  local -a targets
  start_run "$tdir" "$work/term.log"
  pid=$!
  wait_for_line "$pid" "$work/term.log" "$STARTED" ||
    { echo "FAIL: the run did not start"; cat "$work/term.log"; exit 1; }
  sleep 0.5
  mapfile -t targets < <(term_targets "$pid" "$tdir")
  [ "${#targets[@]}" -gt 0 ] || { echo "FAIL: no process to signal"; cat "$work/term.log"; exit 1; }
  kill -TERM "${targets[@]}"
  wait "$pid" || status=$?
  saved="$(sed -n "s/^${PREFIX}preempted: checkpoint of step \([0-9]*\) saved.*/\1/p" "$work/term.log")"
  if [ "$status" -ne 0 ] || [ -z "$saved" ]; then
    echo "FAIL: after SIGTERM the run exited $status; saved step '${saved}'"
    cat "$work/term.log"
    exit 1
  fi
  "${RUN[@]}" "${ARGS[@]}" --dir "$tdir" >"$work/term2.log" 2>&1 ||
    { echo "FAIL: the run after SIGTERM exited $?"; cat "$work/term2.log"; exit 1; }
  resumed="$(sed -n "s/^${PREFIX}resumed from .* at step \([0-9]*\) .*/\1/p" "$work/term2.log")"
  if [ "$resumed" != "$saved" ] || [ "$(final_sha "$work/term2.log")" != "$ref" ]; then
    echo "FAIL: SIGTERM saved step $saved; the next run resumed at '${resumed}' and ended with"
    grep final_params "$work/term2.log" || cat "$work/term2.log"
    exit 1
  fi
  echo "SIGTERM at step $saved: exit 0, resumed at step $resumed, same final digest"
}
