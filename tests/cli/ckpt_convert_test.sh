#!/usr/bin/env bash
# ckpt convert end to end, checked by Python (Debian's python3-torch 1.13):
# a 2-rank PyTorch DCP checkpoint (ShardedTensors split over 2 Gloo ranks,
# made by make_fixtures.py) converted to dcp++ and from there to safetensors
# (one file; bf16; shards by --max-shard-size; --only), torch and
# pytorch-dcp (1.13 and 2 flavours), each output checked by
# check_converted.py against the consolidated state dict, and read back by
# dcp++ (safetensors -> torch -> checked again). Then: an existing DST is
# refused, and a conversion that fails (a damaged source) leaves nothing
# under DST's name nor a temporary beside it.
#
#   ckpt_convert_test.sh <ckpt> <make_fixtures.py> <check_converted.py>
set -euo pipefail
CKPT="$1"
FIXTURES="$2"
CHECK="$3"
PY=${DCP_PYTHON:-/usr/bin/python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

SRC=$("$PY" "$FIXTURES" dcp113_2rank_per_rank "$WORK/fixture" | tail -1)

# Python's 2-rank checkpoint -> dcp++ (sharded tensors consolidated by the load path).
"$CKPT" convert "$SRC" "$WORK/native" --to dcp++ > "$WORK/out.txt"
grep -q "(PyTorch DCP)" "$WORK/out.txt" || { cat "$WORK/out.txt"; exit 1; }
grep -q "intact" <<<"$("$CKPT" verify "$WORK/native")"
grep -q "written by dcp++" <<<"$("$CKPT" show "$WORK/native")"

# safetensors: one file; the plain values are left out (and said so).
"$CKPT" convert "$WORK/native" "$WORK/st" --to safetensors > "$WORK/out.txt"
grep -q "left out step: " "$WORK/out.txt" || { cat "$WORK/out.txt"; exit 1; }
"$PY" "$CHECK" safetensors "$WORK/st"
# dcp++ reads it back equal: safetensors -> torch, checked against the same values.
"$CKPT" convert "$WORK/st" "$WORK/st_back.pt" --to torch > /dev/null
grep -q "weights_only=True" <<<"$("$PY" "$CHECK" torch "$WORK/st_back.pt" --tensors-only)"
# bf16 (floating tensors only; rep_b stays int64).
"$CKPT" convert "$WORK/native" "$WORK/st_bf16" --to safetensors --dtype bf16 > "$WORK/out.txt"
grep -q "3 tensors converted to bf16" "$WORK/out.txt" || { cat "$WORK/out.txt"; exit 1; }
"$PY" "$CHECK" safetensors "$WORK/st_bf16" --dtype bf16
# Shards: st_cols (280 B) + rep_b (32 B) + rep_w (24 B) + st_rows (140 B) at
# 300 B a file: [rep_b, rep_w] [st_cols] [st_rows] in key order.
"$CKPT" convert "$WORK/native" "$WORK/st_sharded" --to safetensors --max-shard-size 300 \
  > "$WORK/out.txt"
"$PY" "$CHECK" safetensors "$WORK/st_sharded" --shards 3 --max-shard 300
# --only, straight from Python's 2-rank checkpoint.
"$CKPT" convert "$SRC" "$WORK/st_only" --to safetensors --only st_rows > /dev/null
"$PY" "$CHECK" safetensors "$WORK/st_only" --only st_rows

# torch: everything (floats: opcodes and globals against 2.x's allow-list),
# and tensors only (1.13's torch.load(weights_only=True) itself).
"$CKPT" convert "$WORK/native" "$WORK/all.pt" --to torch > /dev/null
grep -q "BINFLOAT" <<<"$("$PY" "$CHECK" torch "$WORK/all.pt")"
"$CKPT" convert "$SRC" "$WORK/rows2.pt" --to torch --only st_rows > /dev/null
grep -q "weights_only=True" <<<"$("$PY" "$CHECK" torch "$WORK/rows2.pt" --only st_rows)"

# pytorch-dcp: 1.13's flavour loads in 1.13; 2's is read back by dcp++.
"$CKPT" convert "$WORK/native" "$WORK/pt113" --to pytorch-dcp --pytorch-version 1.13 > /dev/null
"$PY" "$CHECK" pytorch-dcp "$WORK/pt113"
"$CKPT" convert "$WORK/native" "$WORK/pt2" --to pytorch-dcp > /dev/null
grep -q "PyTorch DCP (2.x)" <<<"$("$CKPT" show "$WORK/pt2")"
"$CKPT" convert "$WORK/pt2" "$WORK/pt2.pt" --to torch > /dev/null
"$PY" "$CHECK" torch "$WORK/pt2.pt" > /dev/null

# An existing DST is refused (and left as it was); --overwrite replaces it.
before=$(md5sum "$WORK/st/model.safetensors")
if "$CKPT" convert "$WORK/native" "$WORK/st" --to safetensors > "$WORK/out.txt" 2>&1; then
  echo "convert replaced an existing DST"; exit 1
fi
grep -q "exists" "$WORK/out.txt" || { cat "$WORK/out.txt"; exit 1; }
[ "$before" = "$(md5sum "$WORK/st/model.safetensors")" ]
"$CKPT" convert "$WORK/native" "$WORK/st" --to safetensors --dtype bf16 --overwrite > /dev/null
"$PY" "$CHECK" safetensors "$WORK/st" --dtype bf16 > /dev/null
# A torch file too.
if "$CKPT" convert "$WORK/native" "$WORK/all.pt" --to torch > /dev/null 2>&1; then
  echo "convert replaced an existing DST file"; exit 1
fi

# A failed conversion leaves nothing under DST's name: a damaged source
# (one flipped byte in its largest data file) fails its checksum while the
# output is being written.
cp -r "$WORK/native" "$WORK/damaged"
FILE=$(ls -S "$WORK"/damaged/*.distcp "$WORK"/damaged/*.dcp 2>/dev/null | head -1 || true)
[ -n "$FILE" ] || FILE=$(find "$WORK/damaged" -type f -size +200c | head -1)
SIZE=$(stat -c %s "$FILE")
printf '\xff' | dd of="$FILE" bs=1 seek=$((SIZE / 3)) conv=notrunc status=none
for to in safetensors torch dcp++ pytorch-dcp; do
  if "$CKPT" convert "$WORK/damaged" "$WORK/fail_out" --to $to > "$WORK/out.txt" 2>&1; then
    echo "convert --to $to of a damaged source succeeded"; cat "$WORK/out.txt"; exit 1
  fi
  grep -qi "checksum\|corrupt" "$WORK/out.txt" || { cat "$WORK/out.txt"; exit 1; }
  leftovers=$(ls "$WORK" | grep "^fail_out" || true)
  [ -z "$leftovers" ] || { echo "--to $to left: $leftovers"; exit 1; }
done
echo "ckpt convert ok"
