# Shared by the examples' kill tests (sourced, not run).

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

# Sleeps a random time below $1 milliseconds.
random_sleep() {
  sleep "$(awk -v r="$RANDOM" -v max="$1" 'BEGIN { printf "%.3f", (r % max) / 1000.0 }')"
}

# The newest committed step in manager directory $1, or "none".
newest_step() {
  local s
  s="$( (ls "$1" 2>/dev/null || true) | sed -n "s/^step_0*//p" | sort -n | tail -1)"
  echo "${s:-none}"
}
