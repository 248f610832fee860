#!/usr/bin/env bash
# A bad --config stops train_mlp before anything is touched: exit status 1
# (not a crash), an error naming file, line and key, and the checkpoint
# directory as it was (its leftover .tmp.x kept, no .lock).
#
#   bad_config_test.sh <train_mlp binary>
set -euo pipefail
BIN="$1"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
unset DCP_CHECKPOINT_DIR DCP_RESUME_FROM
ck="$work/ck"
mkdir -p "$ck/.tmp.x"
echo leftover >"$ck/.tmp.x/.metadata"

# expect <config> <text the error must hold> [VAR=value for the environment]
expect() {
  local status=0
  env ${3:+"$3"} "$BIN" --config "$1" --dir "$ck" --steps 5 >"$work/out" 2>"$work/err" || status=$?
  if [ "$status" -ne 1 ] || ! grep -Fq -- "$2" "$work/err"; then
    cat "$work/out" "$work/err"
    echo "FAIL: $1: status $status (want 1), error without '$2'"
    exit 1
  fi
  if [ ! -f "$ck/.tmp.x/.metadata" ] || [ -e "$ck/.lock" ]; then
    ls -la "$ck"
    echo "FAIL: $1: the checkpoint directory was touched"
    exit 1
  fi
}

# Was a crash (terminate, status 134): the value wrapped to 0 in an int.
printf 'checkpoint:\n  keep: {last: 2}\n  async:\n    max_in_flight: 4294967296\n' >"$work/in_flight.yaml"
expect "$work/in_flight.yaml" "in_flight.yaml:4: checkpoint.async.max_in_flight: must be in 1..64"
# Was "train_mlp: stoll".
printf 'checkpoint:\n  resume:\n    from: 12345678901234567890\n' >"$work/from.yaml"
expect "$work/from.yaml" "from.yaml:3: checkpoint.resume.from: a step must be in 0..9223372036854775807"
# Was accepted: the later keep won.
printf 'checkpoint:\n  keep: {last: 5}\n  keep: {last: 1}\n' >"$work/duplicate.yaml"
expect "$work/duplicate.yaml" "duplicate.yaml:3: checkpoint.keep: duplicate key (first on line 2)"
# Was accepted as an empty config (the defaults).
expect "$work" "checkpoint config '$work' is a directory"
printf 'checkpoint:\n  keep: {last: 2}\n' >"$work/good.yaml"
expect "$work/good.yaml" '$DCP_RESUME_FROM: checkpoint.resume.from' DCP_RESUME_FROM=-1
echo PASS
