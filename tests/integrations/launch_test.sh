#!/usr/bin/env bash
# scripts/launch.sh end to end.
#   launch_test.sh <launch.sh> <dcp_integrations_test binary>
# 1. Two ranks of the binary's launch_smoke worker all-reduce over Gloo:
#    exit 0, every line prefixed by its rank.
# 2. A rank that fails stops the others: the script exits with its status
#    at once, not when the others would have ended.
# 3. Bad usage exits 2.
set -uo pipefail
launch="$1"
bin="$2"
fail() { echo "FAIL: $*" >&2; exit 1; }

out="$(DCP_WORKER=launch_smoke DCP_WORKER_PG_TIMEOUT_MS=20000 "$launch" 2 -- "$bin" 2>&1)"
rc=$?
echo "$out"
[ "$rc" -eq 0 ] || fail "launch.sh 2 -- launch_smoke exited $rc"
for r in 0 1; do
  # A here-string, not `echo | grep -q`: under pipefail, grep -q leaving
  # early makes echo die of SIGPIPE and the pipeline fail (seen under load).
  grep -q "^\[rank $r\] launch_smoke rank $r of 2 local_rank $r source=torchrun sum=3$" <<<"$out" \
    || fail "no launch_smoke line from rank $r"
done
grep -v -q '^\[rank [01]\] ' <<<"$out" && fail "a line without a rank prefix"

start=$SECONDS
# shellcheck disable=SC2016  # expanded by each rank's shell
out="$("$launch" 3 -- bash -c 'echo "up $RANK/$WORLD_SIZE port $MASTER_PORT"; if [ "$RANK" = 1 ]; then sleep 0.5; exit 3; fi; sleep 30' 2>&1)"
rc=$?
took=$((SECONDS - start))
echo "$out"
[ "$rc" -eq 3 ] || fail "expected the failing rank's status 3, got $rc"
[ "$took" -lt 15 ] || fail "the other ranks were not stopped (took ${took}s)"
grep -q '^\[rank 2\] up 2/3 port [0-9]*$' <<<"$out" || fail "no output from rank 2"
grep -q 'rank 1 exited with status 3' <<<"$out" || fail "no report of the failing rank"

"$launch" 0 -- true 2>/dev/null
[ $? -eq 2 ] || fail "N=0 accepted"
"$launch" 2 true 2>/dev/null
[ $? -eq 2 ] || fail "missing -- accepted"
echo "launch_test: ok"
