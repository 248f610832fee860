#!/usr/bin/python3
"""Python peers of dcp++'s benchmarks: what PyTorch 1.13 itself takes to save
and load the same bytes. Run by scripts/bench-peers.sh; prints name=value.

    /usr/bin/python3 tests/bench/py_peers.py <step> <path>

Steps:
  dcp113_save_2g <dir>      1.13 DCP save_state_dict (no_dist) of the tensors
                            with FileSystemWriter(single_file_per_rank=True)
                            -> python_dcp_save_seconds
  dcp113_load_inplace <dir> load_state_dict of <dir> into preallocated
                            tensors; one untimed load warms the page cache,
                            then the median of 3 -> python_dcp_load_seconds
  torchsave_2g <file>       torch.save of the same tensors (a dict)
                            -> python_torch_save_seconds
  torchload <file>          torch.load of <file>; warm, then the median of 3
                            -> python_torch_load_seconds

The state dict: 16 float32 tensors "layer00.weight" ... "layer15.weight" of
DCP_BENCH_GIB/16 GiB each (DCP_BENCH_GIB defaults to 2; 0.25 for a quick
run); tensor i holds the value i everywhere, which the loads check.
"""

import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "interop", "py"))

import torch  # noqa: E402

from dcp113_compat import import_dcp  # noqa: E402

TENSORS = 16


def gib():
    return float(os.environ.get("DCP_BENCH_GIB", "2"))


def elements_per_tensor():
    return int(gib() * 2**30) // TENSORS // 4


def key(i):
    return f"layer{i:02d}.weight"


def state_dict(fill):
    """The benchmark's tensors; `fill` false leaves them uninitialised."""
    n = elements_per_tensor()
    sd = {}
    for i in range(TENSORS):
        t = torch.empty(n, dtype=torch.float32)
        sd[key(i)] = t.fill_(float(i)) if fill else t
    return sd


def total_bytes(sd):
    return sum(t.numel() * t.element_size() for t in sd.values())


def check(sd):
    for i in range(TENSORS):
        t = sd[key(i)]
        if t.numel() != elements_per_tensor() or t[0].item() != i or t[-1].item() != i:
            raise SystemExit(f"py_peers: {key(i)} did not load back (sizes or contents differ)")


def emit(name, value):
    print(f"{name}={value:.4f}" if isinstance(value, float) else f"{name}={value}", flush=True)


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_of_3(fn):
    fn()  # warms the page cache (and the allocator)
    return statistics.median(timed(fn) for _ in range(3))


def dcp113_save_2g(path):
    dcp = import_dcp()
    sd = state_dict(fill=True)
    seconds = timed(lambda: dcp.save_state_dict(
        sd, dcp.FileSystemWriter(path, single_file_per_rank=True), no_dist=True))
    emit("python_dcp_save_seconds", seconds)
    emit("python_dcp_save_gibps", total_bytes(sd) / 2**30 / seconds)


def dcp113_load_inplace(path):
    dcp = import_dcp()
    sd = state_dict(fill=False)
    seconds = median_of_3(lambda: dcp.load_state_dict(sd, dcp.FileSystemReader(path), no_dist=True))
    check(sd)
    emit("python_dcp_load_seconds", seconds)
    emit("python_dcp_load_gibps", total_bytes(sd) / 2**30 / seconds)


def torchsave_2g(path):
    sd = state_dict(fill=True)

    def save():
        with open(path, "wb") as f:
            torch.save(sd, f)
            f.flush()
            os.fsync(f.fileno())

    seconds = timed(save)
    emit("python_torch_save_seconds", seconds)
    emit("python_torch_save_gibps", total_bytes(sd) / 2**30 / seconds)


def torchload(path):
    loaded = {}

    def load():
        loaded["sd"] = None  # frees the previous copy before the next load
        loaded["sd"] = torch.load(path)

    seconds = median_of_3(load)
    check(loaded["sd"])
    emit("python_torch_load_seconds", seconds)
    emit("python_torch_load_gibps", total_bytes(loaded["sd"]) / 2**30 / seconds)


STEPS = {
    "dcp113_save_2g": dcp113_save_2g,
    "dcp113_load_inplace": dcp113_load_inplace,
    "torchsave_2g": torchsave_2g,
    "torchload": torchload,
}


def main(argv):
    if len(argv) != 3 or argv[1] not in STEPS:
        print(f"usage: {argv[0]} <step> <path>   (steps: {', '.join(STEPS)})", file=sys.stderr)
        return 2
    STEPS[argv[1]](argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
