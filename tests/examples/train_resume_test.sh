#!/usr/bin/env bash
# End to end: an interrupted-and-resumed run of the training example ends with
# the same parameters as an uninterrupted one.
set -euo pipefail
BIN="$1"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
digest() { grep '^final_params_digest=' | cut -d= -f2; }
full=$("$BIN" --dir "$WORK/full" --steps 80 --save-every 10 | digest)
"$BIN" --dir "$WORK/resumed" --steps 80 --save-every 10 --stop-after 25 > "$WORK/cmd.out"  # no `| grep -q`: SIGPIPE under pipefail
grep -q "stopping after 25" "$WORK/cmd.out"
"$BIN" --dir "$WORK/resumed" --steps 80 --save-every 10 --stop-after 30 > "$WORK/cmd.out"  # no `| grep -q`: SIGPIPE under pipefail
grep -q "resumed from .*step_20 at step 20" "$WORK/cmd.out"
resumed=$("$BIN" --dir "$WORK/resumed" --steps 80 --save-every 10 | tee "$WORK/log" | digest)
grep -q "resumed from .*step_50 at step 50" "$WORK/log"
echo "uninterrupted=$full resumed=$resumed"
[ -n "$full" ] && [ "$full" = "$resumed" ]
