#!/usr/bin/env bash
# Every example and ckpt (and each of its subcommands) behaves like a tool:
# --help prints the usage on stdout and exits 0 (touching nothing); an
# unknown option is an error (exit 2) that names it and prints the usage on
# stderr.
#
#   help_test.sh <ckpt binary> <example binary>...
set -euo pipefail
CKPT="$(realpath "$1")"
shift
bins=()
for b in "$@"; do bins+=("$(realpath "$b")"); done
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"  # the examples' default directories are relative: none may appear

# check <name> <want in the usage> <command...>
check() {
  local name="$1" want="$2" status=0
  shift 2
  "$@" --help >"$work/out" 2>"$work/err" || status=$?
  if [ "$status" -ne 0 ] || ! grep -Fq -- "$want" "$work/out" || ! grep -Fq -- "--help" "$work/out"; then
    cat "$work/out" "$work/err"
    echo "FAIL: $name --help: status $status (want 0), stdout without '$want' or --help"
    exit 1
  fi
  status=0
  "$@" --no-such-option >"$work/out" 2>"$work/err" || status=$?
  if [ "$status" -ne 2 ] || ! grep -Fq -- "--no-such-option" "$work/err" ||
    ! grep -Fq -- "$want" "$work/err"; then
    cat "$work/out" "$work/err"
    echo "FAIL: $name --no-such-option: status $status (want 2), stderr without the option or '$want'"
    exit 1
  fi
  echo "ok: $name"
}

for bin in "${bins[@]}"; do
  check "$(basename "$bin")" "usage:" "$bin"
done
check "ckpt" "Usage:" "$CKPT"
# With the arguments a subcommand requires, so that the unknown option is the error.
check "ckpt show" "ckpt show" "$CKPT" show ck
check "ckpt verify" "ckpt verify" "$CKPT" verify ck
check "ckpt convert" "ckpt convert" "$CKPT" convert ck out --to torch
# Without a subcommand: an error with the usage.
status=0
"$CKPT" >"$work/out" 2>"$work/err" || status=$?
if [ "$status" -ne 2 ] || ! grep -Fq "Usage:" "$work/err"; then
  cat "$work/out" "$work/err"
  echo "FAIL: ckpt alone: status $status (want 2), no usage"
  exit 1
fi
if [ -n "$(ls -A "$work" | grep -v -e '^out$' -e '^err$' || true)" ]; then
  ls -la "$work"
  echo "FAIL: something was created"
  exit 1
fi
echo PASS
