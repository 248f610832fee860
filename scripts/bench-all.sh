#!/usr/bin/env bash
# Every benchmark in one run, for the README's performance table: what the
# machine is, then each program's output, then the figures of all of them
# (name=value, one per line) under a header with the date, the commit and
# the machine. Run it on an otherwise idle machine: the figures are ratios
# and medians, but a busy disk or CPU moves them by ±50%.
#
#   scripts/bench-all.sh [log]      (after scripts/build.sh; ~15 min here)
#
# log (default: bench-all-<date>.log in the current directory) gets the whole
# output; the figures also go to stdout. DCP_BUILD_DIR: the build (default
# build). DCP_BENCH_DIR: where the benchmarks write (default /tmp/dcp_bench).
# Each program runs with its defaults except dcp_bench_async --windows 5
# and dcp_bench_plan_sim --repeats 3; the Python peers (scripts/bench-peers.sh,
# step vs_python_dcp) need /usr/bin/python3 with torch.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${DCP_BUILD_DIR:-build}
DIR=${DCP_BENCH_DIR:-/tmp/dcp_bench}
LOG=${1:-bench-all-$(date -u +%Y%m%d-%H%M).log}
B=$BUILD/tests/bench
for p in dcp_bench_core dcp_bench_async dcp_bench_dist dcp_bench_plan_sim dcp_bench_interop; do
  [ -x "$B/$p" ] || { echo "bench-all: $B/$p is missing: run scripts/build.sh" >&2; exit 2; }
done

machine() {
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "cpu: $(nproc) x $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
  echo "memory: $(free -g | awk '/^Mem:/ {print $2}') GiB"
  echo "kernel: $(uname -r)"
  echo "disk under $DIR: $(df -h "$(dirname "$DIR")" | awk 'NR == 2 {print $1, $2}')"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
}

run() {  # name, command...: its output to the log, its figures kept
  local name=$1
  shift
  echo "=== $name: $*" | tee -a "$LOG" >&2
  local t0=$SECONDS
  "$@" 2>&1 | tee -a "$LOG" | grep -E '^[a-z_0-9]+=[^ ]+$' >>"$LOG.figures" || true
  echo "=== $name took $((SECONDS - t0)) s" | tee -a "$LOG" >&2
}

: >"$LOG"
: >"$LOG.figures"
machine | tee -a "$LOG"
mkdir -p "$DIR"
run core "$B/dcp_bench_core" --dir "$DIR"
run async "$B/dcp_bench_async" --dir "$DIR" --windows 5
run dist "$B/dcp_bench_dist" --dir "$DIR"
run plan_sim "$B/dcp_bench_plan_sim" --repeats 3
run vs_python_dcp env DCP_BENCH_STEPS=vs_python_dcp DCP_BUILD_DIR="$BUILD" scripts/bench-peers.sh
{
  echo
  echo "# figures, $(date -u '+%Y-%m-%d'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "# load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  cat "$LOG.figures"
} | tee -a "$LOG"
rm -f "$LOG.figures"
