#!/usr/bin/env bash
# ckpt ls / diff / stats on a real run directory (train_mlp, a CheckpointManager):
#  ls: one row per checkpoint, the newest committed marked; a leftover .tmp.*,
#      a moved-aside .damaged.*, a step_N without its record, and with --verify a
#      checkpoint with a flipped byte; --json parses.
#  diff: two steps (changed by checksum, --values figures), a key removed and
#      added, across formats (dcp++ vs the same state as torch.save, PyTorch DCP,
#      safetensors: compared by value), a dtype change.
#  stats: a line per save in dcp_manager.stats, the summary, --json.
#
#   ckpt_ls_test.sh <ckpt> <train_mlp>
set -euo pipefail
CKPT="$1"
MLP="$2"
PY=${DCP_PYTHON:-/usr/bin/python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*"; [ -f "$WORK/out" ] && cat "$WORK/out"; exit 1; }
unset DCP_CHECKPOINT_DIR DCP_RESUME_FROM
printf 'checkpoint:\n  save: {every_steps: 10, at_end: true}\n  async: {enabled: true}\n  keep: {last: 3}\n' \
  > "$WORK/run.yaml"
"$MLP" --config "$WORK/run.yaml" --dir "$WORK/run" --steps 50 > /dev/null 2>&1
R="$WORK/run"
S() { printf '%s/step_%010d' "$R" "$1"; }

# ---- ls ----
"$CKPT" ls "$R" > "$WORK/out"
grep -q "3 committed checkpoint(s), newest step 50" "$WORK/out" || fail "ls header"
grep -Eq '^\* 50 .* dcp\+\+ +committed +step_0000000050  loss=' "$WORK/out" || fail "newest row"
grep -Eq '^  30 .* committed +step_0000000030' "$WORK/out" || fail "row of step 30"
# What a crash leaves, what resume moves aside, a step_N without its record.
mkdir "$R/.tmp.step_0000000060.9"
printf 'x' > "$R/.tmp.step_0000000060.9/__0_0.distcp"
cp -r "$(S 30)" "$R/.damaged.step_0000000030.0"
cp -r "$(S 40)" "$R/step_0000000045"
rm "$R/step_0000000045/dcp_manager.record"
"$CKPT" ls "$R" > "$WORK/out"
grep -Eq '^  60 .* leftover +\.tmp\.step_0000000060\.9' "$WORK/out" || fail "leftover row"
grep -Eq '^  30 .* moved-aside +\.damaged\.step_0000000030\.0' "$WORK/out" || fail "moved-aside row"
grep -Eq '^  45 .* uncommitted +step_0000000045 .*dcp_manager.record' "$WORK/out" || fail "uncommitted row"
grep -Eq '^\* 50 ' "$WORK/out" || fail "newest still 50"
"$CKPT" ls --json "$R" > "$WORK/ls.json"
"$PY" -c '
import json, sys
d = json.load(open(sys.argv[1]))
rows = {c["name"]: c for c in d["checkpoints"]}
n = rows["step_0000000050"]
assert n["state"] == "committed" and n["newest"] and n["step"] == 50, n
assert n["items"] > 0 and n["bytes"] > 0 and n["world_size"] == 1 and n["format"] == "dcp++", n
assert "loss" in n["metrics"] and n["committed_at"] > 1e9, n
assert not rows["step_0000000040"]["newest"]
assert rows[".tmp.step_0000000060.9"]["state"] == "leftover"
assert rows[".damaged.step_0000000030.0"]["state"] == "moved-aside"
assert rows["step_0000000045"]["state"] == "uncommitted"
assert [c["step"] for c in d["checkpoints"]] == sorted(c["step"] for c in d["checkpoints"])
' "$WORK/ls.json" || { cat "$WORK/ls.json"; fail "ls --json"; }
# --verify: a flipped byte in the newest makes it damaged; step 40 is newest then.
FILE=$(ls -S "$(S 50)"/*.distcp | head -1)
printf '\xff' | dd of="$FILE" bs=1 seek=$(( $(stat -c %s "$FILE") / 2 )) conv=notrunc status=none
"$CKPT" ls --verify "$R" > "$WORK/out"
grep -Eq '^  50 .* damaged +step_0000000050 .*checksum mismatch' "$WORK/out" || fail "damaged row"
grep -Eq '^\* 40 .* committed' "$WORK/out" || fail "newest intact after --verify"
"$CKPT" ls "$R" > "$WORK/out"  # without --verify it is committed
grep -Eq '^\* 50 .* committed' "$WORK/out" || fail "committed without --verify"
# Not a directory.
if "$CKPT" ls "$WORK/nothing" > "$WORK/out" 2>&1; then fail "ls of a missing directory"; fi
# A checkpoint given instead of its run directory: one row saying so.
"$CKPT" ls "$(S 40)/" > "$WORK/out" || fail "ls of a checkpoint"
grep -Eq '^  40 .* dcp\+\+ +checkpoint +step_0000000040 .*the path given is a checkpoint' "$WORK/out" ||
  { cat "$WORK/out"; fail "ls of a checkpoint: its row"; }

# ---- diff ----
A="$(S 30)"; B="$(S 40)"
if "$CKPT" diff "$A" "$B" > "$WORK/out"; then fail "diff of two steps exits 0"; fi
grep -q "^changed  model.fc1.weight  (checksum)$" "$WORK/out" || fail "changed by checksum"
grep -q "^0 added, 0 removed, .* by checksum, 0 by value)$" "$WORK/out" || fail "diff summary"
"$CKPT" diff "$A" "$A" > "$WORK/out" || fail "diff of a checkpoint with itself"
grep -q "0 changed" "$WORK/out" || fail "itself: 0 changed"
set +e; "$CKPT" diff --values "$A" "$B" > "$WORK/out"; rc=$?; set -e
[ "$rc" = 1 ] || fail "diff exit code $rc"
grep -Eq '^changed  model.fc1.weight  \(checksum\)  max \|a-b\| = [0-9.e-]+$' "$WORK/out" || fail "--values"
# The figure is the largest absolute difference (Python's, on the same tensors).
"$CKPT" convert "$A" "$WORK/a.pt" --to torch > /dev/null
"$CKPT" convert "$B" "$WORK/b.pt" --to torch > /dev/null
WANT=$("$PY" -c '
import sys, torch
a, b = (torch.load(p)["model"]["fc1.weight"].double() for p in sys.argv[1:3])
print("%.6g" % (a - b).abs().max().item())
' "$WORK/a.pt" "$WORK/b.pt")
grep -q "^changed  model.fc1.weight  (checksum)  max |a-b| = $WANT\$" "$WORK/out" || fail "figure is not $WANT"
# Across formats: the same state as torch.save, PyTorch DCP, safetensors.
"$CKPT" convert "$A" "$WORK/a_pd" --to pytorch-dcp > /dev/null
"$CKPT" convert "$A" "$WORK/a_st" --to safetensors > /dev/null 2>&1
"$CKPT" diff "$A" "$WORK/a.pt" > "$WORK/out" || fail "dcp++ vs torch.save differ"
grep -q "0 changed, .* (0 compared by checksum, .* by value)" "$WORK/out" || fail "by value"
"$CKPT" ls "$WORK/a.pt" > "$WORK/out2" || fail "ls of a torch.save file"
grep -Eq ' torch.save.* +checkpoint +a.pt ' "$WORK/out2" || { cat "$WORK/out2"; fail "ls of a .pt: its row"; }
"$CKPT" diff "$WORK/a_pd" "$A" > "$WORK/out" || fail "pytorch-dcp vs dcp++ differ"
if "$CKPT" diff "$A" "$WORK/a_st" > "$WORK/out"; then fail "safetensors has no plain values"; fi
grep -q "^removed  progress.step$" "$WORK/out" || fail "plain values removed in safetensors"
grep -q " removed, 0 changed, " "$WORK/out" || fail "dcp++ vs safetensors: tensors equal"
if "$CKPT" diff "$WORK/a_st" "$B" > "$WORK/out"; then fail "safetensors vs another step"; fi
grep -q "^added    progress.step$" "$WORK/out" || fail "added"
grep -Eq '^changed  model.fc1.weight  \(values\)$' "$WORK/out" || fail "changed by value"
# A dtype change (bf16): changed, with its figure.
"$CKPT" convert "$A" "$WORK/a_bf16" --to dcp++ --dtype bf16 > /dev/null
if "$CKPT" diff --values "$A" "$WORK/a_bf16" > "$WORK/out"; then fail "bf16 equal"; fi
grep -Eq '^changed  model.fc1.weight  \(dtype: float32 -> bfloat16\)  max \|a-b\| = [0-9.e-]+$' "$WORK/out" \
  || fail "dtype change"
"$CKPT" diff --json --values "$A" "$B" > "$WORK/diff.json" || true
"$PY" -c '
import json, sys
d = json.load(open(sys.argv[1]))
c = {x["key"]: x for x in d["changed"]}
assert c["model.fc1.weight"]["by"] == "checksum" and c["model.fc1.weight"]["max_abs_diff"] > 0, c
assert d["added"] == [] and d["removed"] == [] and d["compared_by_value"] == 0, d
' "$WORK/diff.json" || { cat "$WORK/diff.json"; fail "diff --json"; }
set +e; "$CKPT" diff "$A" "$WORK/nothing" > "$WORK/out" 2>&1; rc=$?; set -e
[ "$rc" = 2 ] || fail "diff of a missing checkpoint: exit $rc, not 2"

# ---- stats ----
STATS="$R/dcp_manager.stats"
[ "$(wc -l < "$STATS")" = 5 ] || { cat "$STATS"; fail "5 lines in dcp_manager.stats"; }
"$PY" -c '
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert [l["step"] for l in lines] == [10, 20, 30, 40, 50], lines
for l in lines:
    assert l["bytes"] > 0 and l["durable_seconds"] >= l["blocking_seconds"] >= 0, l
    assert l["start_time"] > 1e9 and l["gbps"] > 0, l
assert all(l["async"] is True for l in lines), lines  # periodic saves are async here
' "$STATS" || fail "stats lines"
"$CKPT" stats "$R" > "$WORK/out"
grep -Eq '^  10 +yes ' "$WORK/out" || fail "stats row"
grep -Eq '^  50 +yes ' "$WORK/out" || fail "stats row of step 50"
grep -Eq '^5 saves, .*median blocking [0-9.]+ s, median until durable [0-9.]+ s; blocked [0-9.]+% of wall time' \
  "$WORK/out" || fail "stats summary"
printf '{"step": 60, "async": tr' >> "$STATS"  # a torn last line (a crash)
"$CKPT" stats --json "$R" > "$WORK/stats.json"
"$PY" -c '
import json, sys, statistics
d = json.load(open(sys.argv[1]))
s = d["summary"]
assert s["saves"] == 5 and len(d["saves"]) == 5 and s["skipped_lines"] == 1, s
assert abs(s["median_blocking_seconds"] - statistics.median(x["blocking_seconds"] for x in d["saves"])) < 1e-12
assert abs(s["median_durable_seconds"] - statistics.median(x["durable_seconds"] for x in d["saves"])) < 1e-12
span = d["saves"][-1]["start_time"] - d["saves"][0]["start_time"]
blocked = sum(x["blocking_seconds"] for x in d["saves"][:-1])
assert abs(s["blocked_fraction"] - blocked / span) < 1e-9, s
' "$WORK/stats.json" || { cat "$WORK/stats.json"; fail "stats --json"; }
mkdir "$WORK/empty"
"$CKPT" stats "$WORK/empty" > "$WORK/out"
grep -q "no save statistics" "$WORK/out" || fail "stats of a directory without them"
echo "ckpt ls/diff/stats ok"
