#!/usr/bin/env bash
# Starts N local ranks of a command, the way torchrun would on one host.
#
#   scripts/launch.sh [--port P] N -- cmd args...
#
# Each rank gets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR=127.0.0.1 and
# MASTER_PORT (a free port unless --port is given) in its environment; its
# stdout and stderr lines are printed prefixed "[rank i] ". When every rank
# exits 0, so does this script. When one exits non-zero (or is killed by a
# signal: 128+n), the others get SIGTERM, then SIGKILL after 5 s, and the
# script exits with the first failing rank's status. Ctrl-C / SIGTERM to the
# script stops every rank the same way. Needs no root; leaves nothing behind.
set -uo pipefail

usage() {
  echo "usage: $0 [--port P] N -- cmd [args...]" >&2
  exit 2
}

port=""
while [ $# -gt 0 ]; do
  case "$1" in
    --port) [ $# -ge 2 ] || usage; port="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) break ;;
  esac
done
[ $# -ge 3 ] || usage
n="$1"
shift
[ "$1" = "--" ] || usage
shift
if ! [[ "$n" =~ ^[1-9][0-9]*$ ]]; then
  echo "launch.sh: N='$n' is not a positive integer" >&2
  exit 2
fi
if [ -n "$port" ] && ! [[ "$port" =~ ^[0-9]+$ && "$port" -ge 1 && "$port" -le 65535 ]]; then
  echo "launch.sh: --port '$port' is not a TCP port (1..65535)" >&2
  exit 2
fi

# A port nothing listens on. python3 asks the kernel for one; otherwise try
# random ports below the usual ephemeral range until nothing answers there.
free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])' \
      2>/dev/null && return 0
  fi
  local p i
  for i in $(seq 1 100); do
    p=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  echo "launch.sh: found no free port" >&2
  return 1
}
[ -n "$port" ] || port="$(free_port)" || exit 1

workdir="$(mktemp -d "${TMPDIR:-/tmp}/dcp-launch.XXXXXX")" || exit 1
declare -a pids=() readers=()
done_ranks=()

# shellcheck disable=SC2317  # also invoked from traps
# Stops every rank still running: SIGTERM to its process group, SIGKILL after 5 s.
stop_all() {
  local pid i
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null; done
  for i in $(seq 1 50); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && return
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null; done
}
# shellcheck disable=SC2317  # invoked from traps
cleanup() {
  # A reader whose rank never started still waits for a writer: be one, briefly.
  local f
  for f in "$workdir"/rank*; do [ -p "$f" ] && : <>"$f"; done 2>/dev/null
  wait "${readers[@]}" 2>/dev/null
  rm -rf "$workdir"
}
trap 'stop_all; cleanup; exit 130' INT
trap 'stop_all; cleanup; exit 143' TERM
trap cleanup EXIT

for ((i = 0; i < n; i++)); do
  fifo="$workdir/rank$i"
  mkfifo "$fifo"
  # The reader prefixes each line; it ends when the rank (and its children) close the fifo.
  sed -u "s/^/[rank $i] /" <"$fifo" &
  readers+=($!)
  # setsid: each rank leads its own process group, so stopping it stops its children too.
  RANK=$i WORLD_SIZE=$n LOCAL_RANK=$i MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
    setsid -w "$@" >"$fifo" 2>&1 </dev/null &
  pids+=($!)
  done_ranks+=(0)
done

status=0
remaining=$n
while [ "$remaining" -gt 0 ]; do
  for ((i = 0; i < n; i++)); do
    [ "${done_ranks[$i]}" = 1 ] && continue
    kill -0 "${pids[$i]}" 2>/dev/null && continue
    wait "${pids[$i]}"
    rc=$?
    done_ranks[i]=1
    remaining=$((remaining - 1))
    if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then
      status=$rc
      echo "launch.sh: rank $i exited with status $rc; stopping the other ranks" >&2
      stop_all
    fi
  done
  [ "$remaining" -gt 0 ] && sleep 0.05
done
exit "$status"
