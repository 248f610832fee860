#!/usr/bin/env bash
# Resume at another world size: train_dist trains at 4 ranks and checkpoints;
# the checkpoint is then loaded at 2 ranks and at 1 (fc1 and its Adam state
# resharded to the new rows), and training goes on at 3 ranks (uneven rows:
# 22, 21, 21). Each resumed run prints the SHA-256 of the parameters and of
# the Adam state it loaded, which must be those the 4-rank run saved.
#
#   examples/resume_other_world_size.sh [train_dist binary (default build/examples/train_dist)]
#                                       [checkpoint dir]
#
# Exits 0 when every loaded digest equals the saved one.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${1:-$root/build/examples/train_dist}"
# Deleted first: never taken from the environment.
DIR="${2:-$root/checkpoints/train_dist_world_size}"
unset DCP_CHECKPOINT_DIR DCP_RESUME_FROM  # --dir says where
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

# At 2 and 1 rank(s) only the load (the checkpoint is of the last step); at 3
# ranks training goes on for 20 steps.
for run in "2 $STEPS" "1 $STEPS" "3 $((STEPS + 20))"; do
  read -r n steps <<<"$run"
  echo "== $n rank(s): load the 4-rank checkpoint, train to step $steps"
  "$LAUNCH" "$n" -- "$BIN" --config "$CONFIG" --dir "$DIR" --steps "$steps" >"$log" 2>&1 ||
    { cat "$log"; exit 1; }
  grep -v "\[dcp\]" "$log"
  if [ "$(digest loaded_params_sha256)" != "$saved" ]; then
    echo "FAIL: at $n rank(s) the loaded parameters differ from the saved ones"
    exit 1
  fi
  if [ "$(digest loaded_optim_sha256)" != "$saved_optim" ]; then
    echo "FAIL: at $n rank(s) the loaded Adam state differs from the saved one"
    exit 1
  fi
  grep -q "^\[rank 0\] trained to step $steps\$" "$log" ||
    { echo "FAIL: the $n-rank run did not reach step $steps"; exit 1; }
done
echo "saved at 4 ranks, loaded at 2, 1 and 3 ranks: the same parameters ($saved)"
echo "and the same Adam state ($saved_optim)"
