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
  dcp113_save_large <dir>   1.13 DCP save_state_dict (no_dist, fsync of every
                            file, one file per rank) of the large dict into a
                            fresh <dir>: median of DCP_BENCH_REPEATS (3)
                            -> python_dcp_save_large_seconds
  dcp113_load_large <dir>   load_state_dict of <dir> into preallocated tensors,
                            warm, median of DCP_BENCH_REPEATS
                            -> python_dcp_load_large_seconds
  dcp113_save_small <dir>   the same for the small dict
  dcp113_load_small <dir>   -> python_dcp_{save,load}_small_seconds

The large state dict: 16 float32 tensors "layer00.weight" ... "layer15.weight" of
DCP_BENCH_GIB/16 GiB each (DCP_BENCH_GIB defaults to 2; 0.25 for a quick
run); tensor i holds the value i everywhere, which the loads check.
The small state dict: DCP_BENCH_SMALL (20,000) float32 tensors
"block{i // 100}.param{i % 100}" of 1 + (7 i mod 16) KiB each (1-16 KiB,
37 MB in all), tensor i holding the value i. dcp_bench_interop --vs-python-dcp
builds the same two dicts.
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


def repeats():
    return int(os.environ.get("DCP_BENCH_REPEATS", "3"))


def small_count():
    return int(os.environ.get("DCP_BENCH_SMALL", "20000"))


def small_key(i):
    return f"block{i // 100}.param{i % 100}"


def small_state_dict(fill):
    sd = {}
    for i in range(small_count()):
        t = torch.empty((1 + (7 * i) % 16) * 256, dtype=torch.float32)
        sd[small_key(i)] = t.fill_(float(i)) if fill else t
    return sd


def check_small(sd):
    for i in range(small_count()):
        t = sd[small_key(i)]
        if t[0].item() != i or t[-1].item() != i:
            raise SystemExit(f"py_peers: {small_key(i)} did not load back")


def dcp113_save_median(path, sd):
    """Median of repeats() saves, each into a fresh `path` after a sync (the
    last one stays for the load)."""
    import shutil

    dcp = import_dcp()

    def one():
        shutil.rmtree(path, ignore_errors=True)
        os.sync()
        # sync_files=True (the default): os.fsync of every data file and of
        # .metadata before its rename.
        return timed(lambda: dcp.save_state_dict(
            sd, dcp.FileSystemWriter(path, single_file_per_rank=True, sync_files=True),
            no_dist=True))

    return statistics.median(one() for _ in range(repeats()))


def dcp113_load_median(path, sd):
    dcp = import_dcp()
    load = lambda: dcp.load_state_dict(sd, dcp.FileSystemReader(path), no_dist=True)  # noqa: E731
    load()  # warms the page cache
    return statistics.median(timed(load) for _ in range(repeats()))


def dcp113_save_large(path):
    sd = state_dict(fill=True)
    seconds = dcp113_save_median(path, sd)
    emit("python_dcp_save_large_seconds", seconds)
    emit("python_dcp_save_large_gibps", total_bytes(sd) / 2**30 / seconds)


def dcp113_load_large(path):
    sd = state_dict(fill=False)
    seconds = dcp113_load_median(path, sd)
    check(sd)
    emit("python_dcp_load_large_seconds", seconds)
    emit("python_dcp_load_large_gibps", total_bytes(sd) / 2**30 / seconds)


def dcp113_save_small(path):
    seconds = dcp113_save_median(path, small_state_dict(fill=True))
    emit("python_dcp_save_small_seconds", seconds)


def dcp113_load_small(path):
    sd = small_state_dict(fill=False)
    for t in sd.values():
        t.zero_()
    seconds = dcp113_load_median(path, sd)
    check_small(sd)
    emit("python_dcp_load_small_seconds", seconds)


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
    "dcp113_save_large": dcp113_save_large,
    "dcp113_load_large": dcp113_load_large,
    "dcp113_save_small": dcp113_save_small,
    "dcp113_load_small": dcp113_load_small,
}


def main(argv):
    if len(argv) != 3 or argv[1] not in STEPS:
        print(f"usage: {argv[0]} <step> <path>   (steps: {', '.join(STEPS)})", file=sys.stderr)
        return 2
    STEPS[argv[1]](argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
