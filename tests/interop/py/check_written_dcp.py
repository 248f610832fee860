#!/usr/bin/python3
"""Checks a checkpoint dcp++ wrote in the pytorch-dcp format, with the real
PyTorch (Debian's python3-torch 1.13 at /usr/bin/python3) or, for the 2.x
flavour, with stand-ins of 2.x's classes (dcp2_standins.py).

    check_written_dcp.py load113 <ckpt> <expected_dir>
        1.13's load_state_dict(no_dist=True) with FileSystemReader into a
        flat dict of the dotted keys (whole tensors, None for the values);
        every element and value compared bit for bit; then every item
        (below) through the 1.13 classes of the .metadata.
    check_written_dcp.py load113_2rank <ckpt> <expected_dir>
        The same on 2 processes over Gloo; the keys with a "reshard_dim" are
        ShardedTensors (ChunkShardingSpec on that dimension), so the saved
        chunks are read into other boxes.
    check_written_dcp.py check2x <ckpt> <expected_dir>
        pickle.load of .metadata over the stand-ins: Metadata's 2.x fields,
        storage_data[MetadataIndex(fqn, offsets)] for every chunk and
        [MetadataIndex(fqn)] for every value, TensorProperties through
        __setstate__, planner_data a dict covering every key with its path;
        then every item.
    check_written_dcp.py loadall113 <ckpt>
        1.13's load_state_dict into a destination made from the .metadata
        itself (every tensor, every value): prints "OK <keys> keys".
    check_written_dcp.py repickle <ckpt> <flavour>
        Loads .metadata with the flavour's classes and pickles it again (as
        Python's FileSystemWriter would: protocol 4): a .metadata that no
        longer is the one dcp++ wrote.

Every item: its byte slice is a zip that passes zipfile.testzip(), with one
archive prefix, every record's data 64-byte aligned (relative to the item,
which starts 64-byte aligned in its file) and a `byteorder` record "little";
a tensor item torch.load(weights_only=True)s in 1.13 to the chunk's
elements; a value item torch.load()s (weights_only=False, as DCP loads
BYTE_IO) to the value.

<expected_dir>/manifest.json (written by the C++ test):
  {"flavour": "2" | "1.13",
   "keys": [{"key": flat key, "path": [str | int, ...], "kind": "tensor",
             "dtype": "float32", ..., "shape": [...], "file": "<n>.bin"
             (the whole tensor, C order), "requires_grad": bool,
             "reshard_dim": int | null},
            {"key", "path", "kind": "value", "value": JSON (bytes as
             {"__bytes__": hex})}]}
Exit status 0 and "OK" when everything holds; 1 and the failures otherwise.
"""

import ctypes
import io
import json
import os
import pickle
import sys
import zipfile
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import torch  # noqa: E402

from dcp113_compat import import_dcp, import_sharded_tensor  # noqa: E402
from make_fixtures import check_zip, free_port, tensor_bytes  # noqa: E402

SENTINEL = 0x5A

DTYPES = {
    "float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
    "bfloat16": torch.bfloat16, "int8": torch.int8, "int16": torch.int16,
    "int32": torch.int32, "int64": torch.int64, "uint8": torch.uint8, "bool": torch.bool,
    "complex64": torch.complex64, "complex128": torch.complex128,
}


class Failures:
    def __init__(self):
        self.items = []

    def add(self, msg):
        self.items.append(msg)

    def check(self, cond, msg):
        if not cond:
            self.add(msg)
        return cond


def load_manifest(expected_dir):
    with open(Path(expected_dir) / "manifest.json", encoding="utf-8") as f:
        return json.load(f)


def from_json(v):
    if isinstance(v, dict):
        if set(v) == {"__bytes__"}:
            return bytes.fromhex(v["__bytes__"])
        return {k: from_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [from_json(x) for x in v]
    return v


def same_value(a, b):
    """Equal and of the same types throughout (True is not 1, 1.0 is not 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return a == b


def expected_tensor(expected_dir, entry):
    data = (Path(expected_dir) / entry["file"]).read_bytes()
    t = torch.empty(entry["shape"], dtype=DTYPES[entry["dtype"]])
    if t.numel():
        ctypes.memmove(t.data_ptr(), data, len(data))
    return t


def sentinel_like(shape, dtype):
    t = torch.empty(shape, dtype=dtype)
    n = t.numel() * t.element_size()
    if n:
        ctypes.memset(t.data_ptr(), SENTINEL, n)
    return t


def compare_tensor(f, what, got, want):
    if not f.check(got.dtype == want.dtype and list(got.shape) == list(want.shape),
                   f"{what}: {got.dtype}{list(got.shape)}, expected {want.dtype}{list(want.shape)}"):
        return
    f.check(tensor_bytes(got) == tensor_bytes(want), f"{what}: the elements differ")


def box_of(offsets, sizes):
    return tuple(slice(o, o + n) for o, n in zip(offsets, sizes))


# ---------------------------------------------------------------------------
# Items


def check_items(f, ckpt, md, index_cls, manifest, expected_dir, tensor_md_cls):
    """Every item of every key, through `md` (the unpickled .metadata)."""
    seen = 0
    for entry in manifest["keys"]:
        key = entry["key"]
        e = md.state_dict_metadata.get(key)
        if not f.check(e is not None, f"{key}: not in state_dict_metadata"):
            continue
        if entry["kind"] == "tensor":
            if not f.check(isinstance(e, tensor_md_cls), f"{key}: {type(e)}"):
                continue
            want = expected_tensor(expected_dir, entry)
            volume = 0
            for i, c in enumerate(e.chunks):
                f.check(type(c.offsets) is torch.Size and type(c.sizes) is torch.Size,
                        f"{key}: chunk offsets/sizes are not torch.Size")
                idx = index_cls(key, c.offsets)
                info = md.storage_data.get(idx)
                if not f.check(info is not None, f"{key}: no storage_data for chunk at "
                                                 f"{list(c.offsets)}"):
                    continue
                seen += 1
                n = 1
                for s in c.sizes:
                    n *= s
                volume += n
                check_item(f, ckpt, info, f"{key} chunk {list(c.offsets)}",
                           want[box_of(c.offsets, c.sizes)].contiguous(), None)
            f.check(volume == want.numel(), f"{key}: the chunks cover {volume} of "
                                            f"{want.numel()} elements")
        else:
            info = md.storage_data.get(index_cls(key))
            if not f.check(info is not None, f"{key}: no storage_data for MetadataIndex(fqn)"):
                continue
            seen += 1
            check_item(f, ckpt, info, key, None, from_json(entry["value"]))
    f.check(seen == len(md.storage_data),
            f"storage_data has {len(md.storage_data)} items, the manifest's keys {seen}")


def check_item(f, ckpt, info, what, tensor, value):
    f.check(info.offset % 64 == 0, f"{what}: the item starts at {info.offset}, not a multiple "
                                   "of 64")
    with open(Path(ckpt) / info.relative_path, "rb") as fh:
        fh.seek(info.offset)
        data = fh.read(info.length)
    if not f.check(len(data) == info.length, f"{what}: the item runs past the end of "
                                             f"{info.relative_path}"):
        return
    try:
        check_zip(data, 64)
    except Exception as e:  # noqa: BLE001
        f.add(f"{what}: {e}")
        return
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = z.namelist()
        prefix = names[0].split("/")[0]
        f.check(z.read(prefix + "/byteorder") == b"little" if prefix + "/byteorder" in names
                else False, f"{what}: no byteorder record 'little' ({names})")
        f.check(prefix + "/version" in names, f"{what}: no version record")
    if tensor is not None:
        try:
            got = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            f.add(f"{what}: torch.load(weights_only=True): {e}")
            return
        if f.check(isinstance(got, torch.Tensor), f"{what}: torch.load gave {type(got)}"):
            f.check(got.is_contiguous() and got.storage_offset() == 0, f"{what}: not contiguous")
            compare_tensor(f, what, got, tensor)
    else:
        got = torch.load(io.BytesIO(data))
        f.check(same_value(got, value), f"{what}: torch.load gave {got!r}, expected {value!r}")


# ---------------------------------------------------------------------------
# 1.13 load_state_dict


def destination(manifest, sharded):
    sd = {}
    for entry in manifest["keys"]:
        if entry["kind"] != "tensor":
            sd[entry["key"]] = None
            continue
        dtype = DTYPES[entry["dtype"]]
        if sharded and entry.get("reshard_dim") is not None:
            sharded_tensor = import_sharded_tensor()
            from torch.distributed._shard.sharding_spec import ChunkShardingSpec
            spec = ChunkShardingSpec(dim=entry["reshard_dim"],
                                     placements=["rank:0/cpu", "rank:1/cpu"])
            st = sharded_tensor.empty(spec, *entry["shape"], dtype=dtype)
            for s in st.local_shards():
                n = s.tensor.numel() * s.tensor.element_size()
                if n:
                    ctypes.memset(s.tensor.data_ptr(), SENTINEL, n)
            sd[entry["key"]] = st
        else:
            sd[entry["key"]] = sentinel_like(entry["shape"], dtype)
    return sd


def compare_loaded(f, sd, manifest, expected_dir):
    for entry in manifest["keys"]:
        key = entry["key"]
        got = sd[key]
        if entry["kind"] != "tensor":
            want = from_json(entry["value"])
            f.check(same_value(got, want), f"{key}: loaded {got!r}, expected {want!r}")
            continue
        want = expected_tensor(expected_dir, entry)
        if not hasattr(got, "local_shards"):
            compare_tensor(f, key, got, want)
            continue
        for s in got.local_shards():  # a ShardedTensor
            m = s.metadata
            compare_tensor(f, f"{key} shard at {list(m.shard_offsets)}", s.tensor,
                           want[box_of(m.shard_offsets, m.shard_sizes)].contiguous())


def load113(ckpt, expected_dir, f):
    dcp = import_dcp()
    manifest = load_manifest(expected_dir)
    sd = destination(manifest, sharded=False)
    dcp.load_state_dict(sd, dcp.FileSystemReader(ckpt), no_dist=True)
    compare_loaded(f, sd, manifest, expected_dir)
    with open(Path(ckpt) / ".metadata", "rb") as fh:
        md = pickle.load(fh)
    f.check(type(md).__module__ == "torch.distributed._shard.checkpoint.metadata",
            f".metadata holds {type(md)}")
    f.check(md.planner_data is None, f"planner_data is {md.planner_data!r}, not None")
    f.check(set(vars(md)) == {"state_dict_metadata", "planner_data", "storage_data"},
            f"Metadata has the fields {sorted(vars(md))}")
    check_items(f, ckpt, md, dcp.metadata.MetadataIndex, manifest, expected_dir,
                dcp.TensorStorageMetadata)


def rank_worker(rank, world_size, ckpt, expected_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    dcp = import_dcp()
    manifest = load_manifest(expected_dir)
    sd = destination(manifest, sharded=True)
    dcp.load_state_dict(sd, dcp.FileSystemReader(ckpt))
    f = Failures()
    compare_loaded(f, sd, manifest, expected_dir)
    dist.barrier()  # both ranks have loaded and compared
    for msg in f.items:
        print(f"rank {rank}: {msg}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave without tearing Gloo down: torch 1.13 sometimes aborts a rank
    # there ("terminate called without an active exception": a joinable
    # std::thread destroyed while the peer closes its pair), which would
    # hide the verdict above behind a crash that is not the checkpoint's.
    os._exit(1 if f.items else 0)


def load113_2rank(ckpt, expected_dir, f):
    import subprocess
    import time

    for attempt in range(3):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
        procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "_rank", str(r), "2",
                                   ckpt, expected_dir], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for r in range(2)]
        deadline = time.monotonic() + 180
        outs = []
        for p in procs:
            try:
                outs.append(p.communicate(timeout=max(1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                for q in procs:
                    q.kill()
                f.add("the rank processes did not finish within 180 s")
                return
        failed = [(r, p.returncode, outs[r][1]) for r, p in enumerate(procs) if p.returncode]
        if failed and attempt < 2 and any("ddress already in use" in e for _, _, e in failed):
            continue
        for r, rc, err in failed:
            f.add(f"rank {r} exited with {rc}:\n{err}")
        return


# ---------------------------------------------------------------------------
# 2.x flavour through the stand-ins


def check2x(ckpt, expected_dir, f):
    import dcp2_standins

    meta = dcp2_standins.install()
    fs_mod = sys.modules[dcp2_standins.FILESYSTEM_MODULE]
    manifest = load_manifest(expected_dir)
    with open(Path(ckpt) / ".metadata", "rb") as fh:
        md = pickle.load(fh)
    if not f.check(type(md) is meta.Metadata, f".metadata holds {type(md)}"):
        return
    f.check(list(vars(md)) == ["state_dict_metadata", "planner_data", "storage_data",
                               "storage_meta", "version"], f"Metadata fields {list(vars(md))}")
    f.check(md.version == "1.0.0", f"version {md.version!r}")
    sm = md.storage_meta
    f.check(type(sm) is meta.StorageMeta and isinstance(sm.checkpoint_id, str)
            and isinstance(sm.save_id, str) and sm.save_id and sm.load_id is None
            and sm.modules == [], f"storage_meta {sm!r}")
    keys = {e["key"]: e for e in manifest["keys"]}
    f.check(set(md.state_dict_metadata) == set(keys),
            f"state_dict_metadata keys {sorted(md.state_dict_metadata)}, expected {sorted(keys)}")
    f.check(isinstance(md.planner_data, dict) and set(md.planner_data) == set(keys),
            f"planner_data {md.planner_data!r} does not cover the keys")
    for key, entry in keys.items():
        if isinstance(md.planner_data, dict) and key in md.planner_data:
            f.check(md.planner_data[key] == tuple(entry["path"]),
                    f"planner_data[{key!r}] = {md.planner_data[key]!r}, expected "
                    f"{tuple(entry['path'])!r}")
        e = md.state_dict_metadata.get(key)
        if entry["kind"] == "tensor" and isinstance(e, meta.TensorStorageMetadata):
            p = e.properties
            f.check(type(p) is meta.TensorProperties and p.dtype == DTYPES[entry["dtype"]]
                    and p.layout == torch.strided and p.memory_format == torch.contiguous_format
                    and p.pin_memory is False and p.requires_grad is entry["requires_grad"],
                    f"{key}: properties {p!r}")
            f.check(type(e.size) is torch.Size and list(e.size) == entry["shape"],
                    f"{key}: size {e.size!r}")
        elif entry["kind"] != "tensor":
            f.check(type(e) is meta.BytesStorageMetadata and not vars(e),
                    f"{key}: {e!r} is not an empty BytesStorageMetadata")
    for idx, info in md.storage_data.items():
        f.check(type(info) is fs_mod._StorageInfo and list(vars(info)) ==
                ["relative_path", "offset", "length"], f"{idx}: {info!r}")
        e = md.state_dict_metadata.get(idx.fqn)
        if isinstance(e, meta.TensorStorageMetadata):
            f.check(type(idx.offset) is torch.Size and
                    e.chunks[idx.index].offsets == idx.offset, f"{idx}: a bad index hint")
        else:
            f.check(idx.index is None and "offset" not in vars(idx), f"{idx}: a value's key")
    check_items(f, ckpt, md, meta.MetadataIndex, manifest, expected_dir,
                meta.TensorStorageMetadata)


def repickle(ckpt, flavour):
    if flavour == "2":
        import dcp2_standins

        dcp2_standins.install()
    else:
        import_dcp()
    path = Path(ckpt) / ".metadata"
    with open(path, "rb") as fh:
        md = pickle.load(fh)
    with open(path, "wb") as fh:
        pickle.dump(md, fh, protocol=4)


def loadall113(ckpt):
    dcp = import_dcp()
    reader = dcp.FileSystemReader(ckpt)
    md = reader.read_metadata()
    sd = {}
    for key, e in md.state_dict_metadata.items():
        if isinstance(e, dcp.TensorStorageMetadata):
            sd[key] = sentinel_like(list(e.size), e.properties.dtype)
        else:
            sd[key] = None
    dcp.load_state_dict(sd, reader, no_dist=True)
    return sd


def main(argv):
    if len(argv) == 3 and argv[1] == "loadall113":
        print(f"OK {len(loadall113(argv[2]))} keys")
        return 0
    if len(argv) == 6 and argv[1] == "_rank":
        return rank_worker(int(argv[2]), int(argv[3]), argv[4], argv[5])
    if len(argv) == 4 and argv[1] == "repickle":
        repickle(argv[2], argv[3])
        print("OK")
        return 0
    commands = {"load113": load113, "load113_2rank": load113_2rank, "check2x": check2x}
    if len(argv) != 4 or argv[1] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    f = Failures()
    commands[argv[1]](argv[2], argv[3], f)
    for msg in f.items:
        print(msg, file=sys.stderr)
    if f.items:
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
