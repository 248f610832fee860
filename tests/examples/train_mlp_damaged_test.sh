#!/usr/bin/env bash
# End to end, with the real example binary: a run whose newest checkpoint is
# a periodic one (step 140) has that checkpoint damaged, in each of four
# ways: a flipped bit in a data file, .metadata deleted, dcp_manager.record
# deleted, the record overwritten with garbage. The next run must resume from
# step 120, move the damaged directory aside, save step 140 again, train to
# the end and print the final_params_sha256 of an uninterrupted run.
# Then a finished run is resumed from an older step (resume.from: 260): it
# must train past its newer checkpoints (superseded) to the same digest.
#
#   train_mlp_damaged_test.sh <train_mlp binary>
set -euo pipefail
BIN="$1"
unset DCP_CHECKPOINT_DIR DCP_RESUME_FROM
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat >"$work/policy.yaml" <<'YAML'
checkpoint:
  save: {every_steps: 20, at_end: true, on_signals: [SIGTERM]}
  async: {enabled: true}
  keep: {last: 3}
YAML
run() { "$BIN" --config "$work/policy.yaml" --print-every 0 "$@"; }
sha() { sed -n 's/^final_params_sha256=//p' "$1"; }
fail() { echo "FAIL: $1"; [ -z "${2:-}" ] || cat "$2"; exit 1; }

run --dir "$work/ref" --steps 300 >"$work/ref.log" 2>&1 || fail "the uninterrupted run failed" "$work/ref.log"
ref="$(sha "$work/ref.log")"
[ -n "$ref" ] || fail "no digest from the uninterrupted run" "$work/ref.log"
echo "uninterrupted: $ref"

# The run to damage: it stops at step 140, whose checkpoint is the periodic one.
run --dir "$work/base" --steps 140 >"$work/base.log" 2>&1 || fail "the first run failed" "$work/base.log"
[ -f "$work/base/step_0000000140/.metadata" ] || fail "no checkpoint of step 140" "$work/base.log"

for kind in flipped_bit no_metadata no_record garbage_record; do
  dir="$work/$kind"
  cp -a "$work/base" "$dir"
  ck="$dir/step_0000000140"
  case "$kind" in
    flipped_bit)
      file="$(ls -S "$ck"/*.distcp | head -1)"
      off=$(($(stat -c %s "$file") / 2))
      byte="$(od -An -tu1 -j "$off" -N1 "$file" | tr -d ' ')"
      printf "$(printf '\\%03o' $((byte ^ 1)))" | dd of="$file" bs=1 seek="$off" conv=notrunc status=none
      ;;
    no_metadata) rm "$ck/.metadata" ;;
    no_record) rm "$ck/dcp_manager.record" ;;
    garbage_record) printf '\x01garbage\n' >"$ck/dcp_manager.record" ;;
  esac
  log="$work/$kind.log"
  run --dir "$dir" --steps 300 >"$log" 2>&1 || fail "$kind: the run after the damage exited $?" "$log"
  grep -q "resumed from .* at step 120 " "$log" || fail "$kind: did not resume from step 120" "$log"
  grep -q "moved '$ck' aside to '$dir/.damaged.step_0000000140.0'" "$log" ||
    fail "$kind: the damaged checkpoint was not moved aside" "$log"
  grep -q "checkpoint of step 140 committed" "$log" || fail "$kind: step 140 was not saved again" "$log"
  got="$(sha "$log")"
  [ "$got" = "$ref" ] || fail "$kind: final_params_sha256=$got, uninterrupted $ref" "$log"
  # Removed by retention once a later step committed.
  if compgen -G "$dir/.damaged.*" >/dev/null; then fail "$kind: .damaged.* left behind" "$log"; fi
  echo "$kind: resumed from 120, saved 140 again, same final digest"
done

# A finished run resumed from an older step trains past its newer checkpoints.
log="$work/from260.log"
DCP_RESUME_FROM=260 run --dir "$work/ref" --steps 300 >"$log" 2>&1 ||
  fail "resume.from 260 of a finished run exited $?" "$log"
grep -q "resumed from .* at step 260 " "$log" || fail "did not resume from step 260" "$log"
grep -q "aside to '$work/ref/.superseded.step_0000000300.0'" "$log" ||
  fail "step 300 was not superseded" "$log"
[ "$(sha "$log")" = "$ref" ] || fail "resume.from 260: final_params_sha256=$(sha "$log"), uninterrupted $ref" "$log"
echo "resume.from 260 of a finished run: trained past the superseded checkpoints, same final digest"
echo PASS
