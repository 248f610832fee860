#!/usr/bin/env bash
# Resume at another world size: train_dist trains at 4 ranks and checkpoints;
# the checkpoint is then loaded at 2 ranks and at 1 (fc1 and its Adam state
# resharded to the new rows), and training goes on at 3 ranks (uneven rows:
# 22, 21, 21). Each resumed run prints the SHA-256 of the parameters and of
# the Adam state it loaded, which must be those the 4-rank run saved.
#
#   examples/resume_other_world_size.sh [build dir (default build)] [checkpoint dir]
#
# Exits 0 when every loaded digest equals the saved one.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${1:-$root/build}"
DIR="${2:-$root/checkpoints/train_dist_world_size}"
BIN="$BUILD/examples/train_dist"
LAUNCH="$root/scripts/launch.sh"
CONFIG="$root/configs/example.yaml"
STEPS=60

rm -rf "$DIR"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
digest() { sed -n "s/^\[rank 0\] $1=//p" "$log"; }

echo "== 4 ranks: train $STEPS steps, checkpoint every 20"
"$LAUNCH" 4 -- "$BIN" --config "$CONFIG" --dir "$DIR" --steps "$STEPS" >"$log" 2>&1 ||
  { cat "$log"; exit 1; }
grep -v "\[dcp\]" "$log"
saved="$(digest final_params_sha256)"
saved_optim="$(digest final_optim_sha256)"
[ -n "$saved" ] && [ -n "$saved_optim" ] || { echo "FAIL: the 4-rank run printed no digests"; exit 1; }

for n in 2 1; do
  echo "== $n rank(s): load the 4-rank checkpoint"
  "$LAUNCH" "$n" -- "$BIN" --config "$CONFIG" --dir "$DIR" --steps "$STEPS" >"$log" 2>&1 ||
    { cat "$log"; exit 1; }
  grep -v "\[dcp\]" "$log"
  loaded="$(digest loaded_params_sha256)"
  if [ "$loaded" != "$saved" ]; then
    echo "FAIL: at $n rank(s) the loaded parameters' digest is '$loaded', the saved one $saved"
    exit 1
  fi
  if [ "$(digest loaded_optim_sha256)" != "$saved_optim" ]; then
    echo "FAIL: at $n rank(s) the loaded Adam state differs from the saved one"
    exit 1
  fi
done

echo "== 3 ranks: resume from the 4-rank checkpoint and train 20 more steps"
"$LAUNCH" 3 -- "$BIN" --config "$CONFIG" --dir "$DIR" --steps $((STEPS + 20)) >"$log" 2>&1 ||
  { cat "$log"; exit 1; }
grep -v "\[dcp\]" "$log"
loaded="$(digest loaded_params_sha256)"
if [ "$loaded" != "$saved" ]; then
  echo "FAIL: at 3 ranks the loaded parameters' digest is '$loaded', the saved one $saved"
  exit 1
fi
grep -q "^\[rank 0\] trained to step $((STEPS + 20))" "$log" ||
  { echo "FAIL: the 3-rank run did not reach step $((STEPS + 20))"; exit 1; }
echo "saved at 4 ranks, loaded at 2, 1 and 3 ranks: the same parameters ($saved)"
echo "and the same Adam state ($saved_optim)"
