#!/usr/bin/env bash
# The peers dcp++'s figures are compared with, measured on this machine:
# PyTorch 1.13's own DCP and torch.save/torch.load on the same bytes
# (tests/bench/py_peers.py, /usr/bin/python3), and dcp++ reading what they
# wrote in the same run (dcp_bench_interop, built by scripts/build.sh).
# Prints name=value lines; *_vs_python > 1: dcp++ is faster.
#
#   scripts/bench-peers.sh [work_dir]
#
# DCP_BENCH_GIB: the size of the state dict in GiB (default 2; 0.25 for a
# quick run). DCP_BENCH_SMALL: the tensors of the small dict of step
# vs_python_dcp (default 20000). DCP_BENCH_REPEATS: the repeats of that
# step's medians (default 3). DCP_BENCH_STEPS: the steps to run (default:
# all, in order).
# work_dir (default: a fresh directory under $TMPDIR, removed at the end)
# needs about twice DCP_BENCH_GIB free; each step removes what it wrote.
#
# Each step is a function step_<name>; to add one (the C++ side, say),
# write the function and append <name> to STEPS.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${DCP_PYTHON:-/usr/bin/python3}
export DCP_BENCH_GIB=${DCP_BENCH_GIB:-2}
export DCP_BENCH_SMALL=${DCP_BENCH_SMALL:-20000}
export DCP_BENCH_REPEATS=${DCP_BENCH_REPEATS:-3}
STEPS=(vs_python_dcp python_dcp python_torch_save safetensors pytorch_format convert)
CKPT=${DCP_BUILD_DIR:-build}/integrations/cli/ckpt
PYTHON_DCP_SAVE=""  # python_dcp_save_seconds, once step_python_dcp has run
BENCH=${DCP_BUILD_DIR:-build}/tests/bench/dcp_bench_interop
if [ -n "${DCP_BENCH_STEPS:-}" ]; then read -r -a STEPS <<<"$DCP_BENCH_STEPS"; fi

if [ $# -ge 1 ]; then
  WORK=$1
  mkdir -p "$WORK"
else
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/dcp_bench_peers.XXXXXX")
  trap 'rm -rf "$WORK"' EXIT
fi

py_peer() { "$PY" tests/bench/py_peers.py "$@"; }
cpp_bench() {
  [ -x "$BENCH" ] || { echo "bench-peers: $BENCH is missing: run scripts/build.sh" >&2; exit 2; }
  "$BENCH" --dir "$WORK/cpp" "$@"
}
# DCP_BENCH_GIB in MiB.
mib() { "$PY" -c "print(int($DCP_BENCH_GIB * 1024))"; }
# The value of `name` in name=value lines.
figure() { sed -n "s/^$1=//p" <<<"$2"; }

# PyTorch 1.13 DCP: save_state_dict, then load_state_dict in place (warm);
# dcp++ loads the same directory in place.
step_python_dcp() {
  local dir="$WORK/python_dcp" out
  rm -rf "$dir"
  out=$(py_peer dcp113_save_2g "$dir")
  echo "$out"
  PYTHON_DCP_SAVE=$(figure python_dcp_save_seconds "$out")
  out=$(py_peer dcp113_load_inplace "$dir")
  echo "$out"
  cpp_bench --pydcp "$dir" --python-dcp-load "$(figure python_dcp_load_seconds "$out")" \
    --safetensors-mib 0
  rm -rf "$dir"
}

# dcp++ against PyTorch 1.13 DCP, each saving and loading its own format:
# the large dict (DCP_BENCH_GIB in 16 tensors) and the small one
# (DCP_BENCH_SMALL tensors of 1-16 KiB), saved with fsync into a fresh
# directory (medians of DCP_BENCH_REPEATS) and loaded in place into
# preallocated tensors with a warm page cache (a warm-up load, medians).
# Prints save_large_vs_python_dcp, load_large_vs_python_dcp,
# save_small_vs_python_dcp and load_small_vs_python_dcp (> 1: dcp++ faster).
vs_python_dcp_round() {
  local dir="$WORK/python_dcp_vs" out sl ll ss ls
  out=$(py_peer dcp113_save_large "$dir")
  echo "$out"
  sl=$(figure python_dcp_save_large_seconds "$out")
  out=$(py_peer dcp113_load_large "$dir")
  echo "$out"
  ll=$(figure python_dcp_load_large_seconds "$out")
  out=$(py_peer dcp113_save_small "$dir")
  echo "$out"
  ss=$(figure python_dcp_save_small_seconds "$out")
  out=$(py_peer dcp113_load_small "$dir")
  echo "$out"
  ls=$(figure python_dcp_load_small_seconds "$out")
  rm -rf "$dir"
  cpp_bench --safetensors-mib 0 --repeats "$DCP_BENCH_REPEATS" \
    --vs-python-dcp-mib "$(mib)" --vs-python-dcp-small "$DCP_BENCH_SMALL" \
    --python-dcp-save-large "$sl" --python-dcp-load-large "$ll" \
    --python-dcp-save-small "$ss" --python-dcp-load-small "$ls"
}

# DCP_BENCH_ROUNDS=N (default 1): N rounds of Python then dcp++, each
# round's lines prefixed "round k:", then the median of each figure over
# the rounds as name=value (on a shared machine whose load drifts, rounds
# keep each ratio's two sides minutes apart at most).
step_vs_python_dcp() {
  local rounds=${DCP_BENCH_ROUNDS:-1} k all=""
  if [ "$rounds" -le 1 ]; then
    vs_python_dcp_round
    return
  fi
  for ((k = 1; k <= rounds; k++)); do
    local out
    out=$(vs_python_dcp_round)
    sed "s/^/round $k: /" <<<"$out"
    all+="$out"$'\n'
  done
  "$PY" -c '
import re, statistics, sys
figs = {}
for line in sys.stdin:
    m = re.match(r"^([a-z_0-9]+)=([-0-9.eE+]+)$", line.strip())
    if m:
        figs.setdefault(m.group(1), []).append(float(m.group(2)))
for name, vals in figs.items():
    print(f"{name}={statistics.median(vals):.3f}")
' <<<"$all"
}

# torch.save of the same dict, then torch.load (warm); dcp++'s load_all of it.
step_python_torch_save() {
  local file="$WORK/python_torch.pt" out
  rm -f "$file"
  py_peer torchsave_2g "$file"
  out=$(py_peer torchload "$file")
  echo "$out"
  cpp_bench --torchsave "$file" --python-torch-load "$(figure python_torch_load_seconds "$out")" \
    --safetensors-mib 0
  rm -f "$file"
}

# A safetensors file (written by the spec) against dcp++'s native format.
step_safetensors() {
  cpp_bench --safetensors-mib "$(mib)"
}

# Saving in PyTorch's DCP format against the native format, and against
# Python DCP 1.13 saving the same bytes (from step python_dcp, or measured here).
step_pytorch_format() {
  if [ -z "$PYTHON_DCP_SAVE" ]; then
    local dir="$WORK/python_dcp" out
    rm -rf "$dir"
    out=$(py_peer dcp113_save_2g "$dir")
    echo "$out"
    PYTHON_DCP_SAVE=$(figure python_dcp_save_seconds "$out")
    rm -rf "$dir"
  fi
  cpp_bench --save-mib "$(mib)" --python-dcp-save "$PYTHON_DCP_SAVE" --safetensors-mib 0
}

# ckpt convert of a native checkpoint to safetensors against a raw write.
step_convert() {
  [ -x "$CKPT" ] || { echo "bench-peers: $CKPT is missing: run scripts/build.sh" >&2; exit 2; }
  "${DCP_BUILD_DIR:-build}/tests/bench/dcp_bench_convert" --ckpt "$CKPT" --dir "$WORK/convert" \
    --mib "$(mib)"
}

echo "bench_gib=$DCP_BENCH_GIB"
echo "python_torch_version=$("$PY" -c 'import torch; print(torch.__version__)')"
for step in "${STEPS[@]}"; do
  if ! declare -F "step_$step" >/dev/null; then
    echo "bench-peers: unknown step '$step' (steps: $(declare -F | sed -n 's/^declare -f step_//p' | paste -sd ' ' -))" >&2
    exit 2
  fi
  "step_$step"
done
