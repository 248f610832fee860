#!/usr/bin/env bash
# ckpt show / verify on a real checkpoint (written by the training example),
# then on the same checkpoint with one flipped byte: verify must fail and name
# the file and the key.
set -euo pipefail
CKPT="$1"
TRAIN="$2"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$TRAIN" --dir "$WORK/run" --steps 10 --save-every 10 > /dev/null 2>&1
CK="$WORK/run/step_10"
"$CKPT" show "$CK" > "$WORK/show.txt"
grep -q "model.fc1.weight .*float32 .*\[64, 16\]" "$WORK/show.txt"
grep -q "5 keys, 5 items" "$WORK/show.txt"
"$CKPT" show --items "$CK" | grep -q "__0_"
"$CKPT" verify "$CK" | grep -q "intact: 5 items"
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
echo "ckpt show/verify ok"
