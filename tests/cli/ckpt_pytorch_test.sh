#!/usr/bin/env bash
# ckpt show / verify on checkpoints PyTorch writes (made here by Debian's
# python3-torch 1.13: a DCP directory, a 2.x-flavoured one with zstd items,
# a torch.save file) and on a safetensors file written by the spec; then
# each damaged: verify fails naming the file.
#
#   ckpt_pytorch_test.sh <ckpt> <make_fixtures.py>
set -euo pipefail
CKPT="$1"
FIXTURES="$2"
PY=${DCP_PYTHON:-/usr/bin/python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

check() {  # check <path> <format line> <a key>
  "$CKPT" show "$1" > "$WORK/show.txt"
  grep -q "format: $2" "$WORK/show.txt" || { cat "$WORK/show.txt"; exit 1; }
  grep -q "^$3 " "$WORK/show.txt" || { cat "$WORK/show.txt"; exit 1; }
  "$CKPT" verify "$1" > "$WORK/verify.txt"
  grep -q "intact" "$WORK/verify.txt" || { cat "$WORK/verify.txt"; exit 1; }
}

for kind in dcp113_1rank_per_rank dcp2_flavour_zstd torchsave_model; do
  CK=$("$PY" "$FIXTURES" "$kind" "$WORK/$kind" | tail -1)
  case $kind in
    dcp113*) check "$CK" "PyTorch DCP (1.13)" "t_float32"; FILE="$CK/__0_0.distcp" ;;
    dcp2*) check "$CK" "PyTorch DCP (2.x)" "model.proj.weight"; FILE=$(ls -S "$CK"/*.distcp | head -1) ;;
    torchsave*) check "$CK" "torch.save" "fc1.weight"; FILE="$CK" ;;
  esac
  grep -q "CRC-32" "$WORK/verify.txt"
  # One flipped byte near the end of the largest data file (tensor records
  # and their zip directories live there).
  SIZE=$(stat -c %s "$FILE")
  printf '\xff' | dd of="$FILE" bs=1 seek=$((SIZE * 2 / 3)) conv=notrunc status=none
  if "$CKPT" verify "$CK" > "$WORK/out.txt" 2>&1; then
    echo "verify passed a damaged $kind checkpoint"; cat "$WORK/out.txt"; exit 1
  fi
  grep -q "$(basename "$FILE")" "$WORK/out.txt" || { cat "$WORK/out.txt"; exit 1; }
done

# A safetensors file, as the spec lays it out.
"$PY" - "$WORK/model.safetensors" <<'PYEOF'
import json, struct, sys
data = struct.pack("<6f", *range(6)) + struct.pack("<2q", 7, 8)
h = {"__metadata__": {"format": "pt"},
     "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
     "n": {"dtype": "I64", "shape": [2], "data_offsets": [24, 40]}}
hb = json.dumps(h).encode()
hb += b" " * (-len(hb) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(hb)) + hb + data)
PYEOF
check "$WORK/model.safetensors" "safetensors" "w"
grep -q "no checksums" "$WORK/verify.txt"
# A header that lies: a tensor's data runs past the file.
printf 'x' | dd of="$WORK/model.safetensors" bs=1 seek=$(( $(stat -c %s "$WORK/model.safetensors") - 1 )) conv=notrunc status=none
truncate -s -8 "$WORK/model.safetensors"
if "$CKPT" show "$WORK/model.safetensors" > "$WORK/out.txt" 2>&1; then
  echo "show accepted a truncated safetensors file"; exit 1
fi
grep -q "model.safetensors" "$WORK/out.txt" || { cat "$WORK/out.txt"; exit 1; }
echo "ckpt on PyTorch's formats ok"
