#!/usr/bin/env bash
# ckpt show / verify on a real checkpoint (written by the training example),
# then on the same checkpoint with one flipped byte: verify must fail and name
# the file and the key. Then a CheckpointManager's checkpoint (train_mlp):
# in the pytorch-dcp format (Python 1.13 loads it; verify uses dcp++'s
# sidecar checksums), and verify also checks its dcp_manager.record.
#
#   ckpt_test.sh <ckpt> <train_resume> <train_mlp>
set -euo pipefail
CKPT="$1"
TRAIN="$2"
MLP="$3"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$TRAIN" --dir "$WORK/run" --steps 10 --save-every 10 > /dev/null 2>&1
CK="$WORK/run/step_10"
"$CKPT" show "$CK" > "$WORK/show.txt"
grep -q "model.fc1.weight .*float32 .*\[64, 16\]" "$WORK/show.txt"
grep -q "5 keys, 5 items" "$WORK/show.txt"
"$CKPT" show --items "$CK" > "$WORK/cmd.out"  # no `| grep -q`: SIGPIPE under pipefail
grep -q "__0_" "$WORK/cmd.out"
"$CKPT" verify "$CK" > "$WORK/cmd.out"  # no `| grep -q`: SIGPIPE under pipefail
grep -q "intact: 5 items" "$WORK/cmd.out"
# Flip one byte in the middle of the largest data file.
FILE=$(ls -S "$CK"/*.distcp | head -1)
SIZE=$(stat -c %s "$FILE")
OFF=$((SIZE / 2))
printf '\xff' | dd of="$FILE" bs=1 seek="$OFF" conv=notrunc status=none
if "$CKPT" verify "$CK" > "$WORK/out.txt" 2>&1; then
  echo "verify passed a damaged checkpoint"; cat "$WORK/out.txt"; exit 1
fi
grep -q "checksum mismatch" "$WORK/out.txt"
grep -q "$(basename "$FILE")" "$WORK/out.txt"
# A directory that is not a checkpoint.
mkdir "$WORK/empty"
if "$CKPT" show "$WORK/empty" > "$WORK/out2.txt" 2>&1; then exit 1; fi
grep -q "not a committed checkpoint" "$WORK/out2.txt"

# A manager's checkpoint in the pytorch-dcp format: Python 1.13's DCP loads
# it; ckpt shows it and verifies it with dcp++'s checksums (the sidecar).
PY=${DCP_PYTHON:-/usr/bin/python3}
CHECK="$(dirname "$0")/../interop/py/check_written_dcp.py"
unset DCP_CHECKPOINT_DIR DCP_RESUME_FROM
printf 'checkpoint:\n  save: {every_steps: 10}\n  async: {enabled: false}\n  storage: {format: pytorch-dcp, pytorch_version: "1.13"}\n' \
  > "$WORK/pt.yaml"
"$MLP" --config "$WORK/pt.yaml" --dir "$WORK/pt" --steps 10 > /dev/null 2>&1
P="$WORK/pt/step_0000000010"
"$PY" "$CHECK" loadall113 "$P" > "$WORK/py.txt" || { cat "$WORK/py.txt"; exit 1; }
grep -q "^OK " "$WORK/py.txt" || { cat "$WORK/py.txt"; exit 1; }
"$CKPT" show "$P" > "$WORK/cmd.out"
grep -q "format: PyTorch DCP (1.13), written by dcp++" "$WORK/cmd.out" || { cat "$WORK/cmd.out"; exit 1; }
grep -q "manager record: step 10" "$WORK/cmd.out"
"$CKPT" verify "$P" > "$WORK/cmd.out"
grep -q "intact: .*XXH3-64 checksum from .metadata.dcp" "$WORK/cmd.out" || { cat "$WORK/cmd.out"; exit 1; }
FILE=$(ls -S "$P"/*.distcp | head -1)
printf '\xff' | dd of="$FILE" bs=1 seek=$(( $(stat -c %s "$FILE") / 2 )) conv=notrunc status=none
if "$CKPT" verify "$P" > "$WORK/out.txt" 2>&1; then
  echo "verify passed a damaged pytorch-dcp checkpoint"; cat "$WORK/out.txt"; exit 1
fi
grep -q "$(basename "$FILE")" "$WORK/out.txt" || { cat "$WORK/out.txt"; exit 1; }

# A manager's checkpoint: verify checks the record too.
unset DCP_CHECKPOINT_DIR DCP_RESUME_FROM
printf 'checkpoint:\n  save: {every_steps: 10}\n  async: {enabled: false}\n  keep: {last: 0}\n' \
  > "$WORK/mlp.yaml"
"$MLP" --config "$WORK/mlp.yaml" --dir "$WORK/mgr" --steps 20 > /dev/null 2>&1
M="$WORK/mgr/step_0000000010"
"$CKPT" verify "$M" > "$WORK/m.txt"
grep -q "intact: .*manager record: step 10, world size 1" "$WORK/m.txt" || { cat "$WORK/m.txt"; exit 1; }
"$CKPT" show "$M" > "$WORK/cmd.out"  # no `| grep -q`: SIGPIPE under pipefail
grep -q "manager record: step 10" "$WORK/cmd.out"
# expect_record_failure DIR PATTERN: verify fails and prints PATTERN.
expect_record_failure() {
  if "$CKPT" verify "$1" > "$WORK/bad.txt" 2>&1; then
    echo "verify passed a checkpoint with a bad record ($2)"; cat "$WORK/bad.txt"; exit 1
  fi
  grep -q -- "$2" "$WORK/bad.txt" || { echo "expected '$2'"; cat "$WORK/bad.txt"; exit 1; }
}
R="$M/dcp_manager.record"
cp "$R" "$WORK/record.good"
# Another step than the directory's name.
sed 's/^step=10$/step=20/' "$WORK/record.good" > "$R"
expect_record_failure "$M" "is of step 20, the directory's name says step 10"
# An unknown format version.
sed 's/^format_version=1$/format_version=7/' "$WORK/record.good" > "$R"
expect_record_failure "$M" "format_version 7 is not known"
# Garbage.
printf 'not a record\n' > "$R"
expect_record_failure "$M" "line 1 is not key=value"
# No record at all, in a directory named as the manager names them.
rm "$R"
expect_record_failure "$M" "no dcp_manager.record"
cp "$WORK/record.good" "$R"
"$CKPT" verify "$M" > "$WORK/cmd.out"  # no `| grep -q`: SIGPIPE under pipefail
grep -q "intact" "$WORK/cmd.out"
echo "ckpt show/verify ok"
