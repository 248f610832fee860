#!/usr/bin/python3
"""Makes real PyTorch checkpoints for dcp++'s interop tests, at test time.

    /usr/bin/python3 make_fixtures.py <kind> <out_dir>
    /usr/bin/python3 make_fixtures.py --list

Runs on Debian's python3-torch 1.13 (/usr/bin/python3; stdlib + torch only,
plus python3-zstandard for dcp2_flavour_zstd). Every fixture is a few KB.
<out_dir> (created; must be empty or absent) receives the checkpoint(s) and
expected/: the manifest and the expected tensors. The last line printed on
stdout is the absolute path of the first checkpoint. Each kind checks what
it wrote before it returns (1.13 kinds load it back with 1.13's own
load_state_dict / torch.load; the 2.x-flavoured kinds unpickle their
.metadata and torch.load every item), so a manifest is only written for a
fixture that reads back.

Kinds
-----
  dcp113_1rank_per_item / dcp113_1rank_per_rank
      torch 1.13 save_state_dict(no_dist=True), FileSystemWriter(
      single_file_per_rank=False / True): tensors of 11 dtypes, a 0-d, a
      zero-element, a transposed and an offset-view tensor; plain values of
      every kind; a big int and an object (unsupported); a nested dict with
      tensors (one BYTE_IO item in 1.13, flattened leaves in the manifest).
  dcp113_2rank_per_item / dcp113_2rank_per_rank
      2 processes over Gloo; ShardedTensors (ChunkShardingSpec dim 0 and
      dim 1, 7x5), replicated tensors and plain values.
  dcp2_flavour, dcp2_flavour_per_rank_metadata, dcp2_flavour_zstd
      A directory as torch 2.x's FileSystemWriter writes it: items are
      1.13 torch.save zips (tensor items with a `byteorder` record added) and
      .metadata is pickled by CPython over stand-ins of the 2.x classes
      (dcp2_standins.py). Two ranks' files; a row-split tensor; flattened
      keys with planner_data; > 256 memo entries. The variants: one
      __<rank>.metadata per rank and no .metadata (use_collectives=False);
      every item a zstd stream with transform_descriptors ["stream.zstd/1"].
  torchsave_model, torchsave_optim_{adam,adamw,sgd,rmsprop,adagrad}
      torch.save of a small module's state_dict / an optimizer's
      state_dict after 3 steps (module: see NET_CPP below).
  torchsave_shared     tensors sharing storage (views, transpose, tied).
  torchsave_2x_records a torch.save file with the records 2.x adds.
  torchsave_legacy     the pre-1.6 (non-zip) format: readers must refuse it.

Manifest: expected/manifest.json
--------------------------------
  {
    "manifest_version": 1,
    "kind": "<kind>",
    "torch_version": torch.__version__ ("1.13.0a0" for Debian's 1.13.1),
    "python_version": "3.11.2",
    "checkpoints": [ <checkpoint>, ... ]        first one is "the" checkpoint
  }
  <checkpoint> = {
    "name":   "main" (or "model" beside an optimizer's "main"),
    "path":   path relative to out_dir (a directory for DCP, a file otherwise),
    "format": "pytorch_dcp" | "torch_save" | "torch_save_legacy",
    "flavour": "1.13" | "2.x"         (pytorch_dcp only),
    "layout": "per_item" | "per_rank" (pytorch_dcp only),
    "world_size": int                 (pytorch_dcp only),
    "metadata_files": [".metadata"] or ["__0.metadata", "__1.metadata"],
    "must_refuse": bool               true: a reader must fail with a clear error,
    "param_names": [...]              optimizer kinds: state key i is param_names[i],
    "notes": [str, ...]               what is special about it,
    "leaves": [ <leaf>, ... ]         every leaf a reader must find, none else
  }
  <leaf> = {
    "key":   flat key as dcp++ names it (below),
    "path":  [str | int, ...]: dict keys (as str) and list indices,
    "kind":  "tensor" | "int" | "float" | "str" | "bool" | "none" | "bytes"
             | "list" | "dict" | "unsupported",
    "py_type": the Python type of the leaf ("torch.Tensor", "int", "tuple",
             "collections.OrderedDict", "__main__.Opaque", ...),
    "dtype": tensor: "float32", "float64", "bfloat16", "float16", "int64",
             "int32", "int16", "int8", "uint8", "bool", "complex64"; else null,
    "shape": tensor: [int, ...] ([] for 0-d); else null,
    tensor:  "file": "expected/<n>.bin", the whole tensor's bytes, C order,
             little-endian (bool 1 byte, complex64 real/imag float32 pairs,
             bfloat16 the upper 16 bits of float32); "nbytes": its size;
             optional "chunks": [{"offsets", "sizes", "file", "offset",
             "length"[, "transform_descriptors"]}] as the DCP metadata has
             them, and "stored": {"storage_key", "storage_numel",
             "storage_offset", "stride"} as the torch.save pickle has them;
    plain:   "value": the JSON value: int, float, str, bool, null; bytes as a
             hex string; list (tuples too) as a JSON array of such values
             (dicts inside as objects with str keys); dict: {} (only empty
             dicts are leaves),
    unsupported: "why": what makes it unrepresentable (an int beyond 64
             bits, an object of another class); a reader reports it, and
             loads the other leaves.
  }

Flat keys follow dcp++'s flattening (dcp/src/walk.h): a non-empty dict
(OrderedDict too) is descended with str(key) (int keys become "0", "1"); a
list or tuple is descended with its indices only when it holds a tensor
somewhere; everything else is a leaf; the key is the path joined with ".".
This equals 2.x's flattening (interop.md §3) except that 2.x drops empty
dicts and keeps tuples whole; the dcp2 kinds hold neither case.
"""

import ctypes
import io
import json
import math
import os
import pickle
import pickletools
import socket
import struct
import subprocess
import sys
import time
import uuid
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path, PosixPath

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import torch  # noqa: E402

from dcp113_compat import import_dcp, import_sharded_tensor  # noqa: E402

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# The module of the torchsave_* kinds, as a C++ test declares it (LibTorch's
# names and parameter order are the same: fc1.weight, fc1.bias, bn.weight,
# bn.bias, fc2.weight, fc2.bias; buffers bn.running_mean, bn.running_var,
# bn.num_batches_tracked):
NET_CPP = """
struct NetImpl : torch::nn::Module {
  NetImpl()
      : fc1(register_module("fc1", torch::nn::Linear(4, 8))),
        bn(register_module("bn", torch::nn::BatchNorm1d(8))),
        fc2(register_module("fc2", torch::nn::Linear(8, 3))) {}
  torch::Tensor forward(torch::Tensor x) { return fc2(torch::relu(bn(fc1(x)))); }
  torch::nn::Linear fc1{nullptr};
  torch::nn::BatchNorm1d bn{nullptr};
  torch::nn::Linear fc2{nullptr};
};
TORCH_MODULE(Net);
"""


class Opaque:
    """An object of a class no reader knows: an unsupported leaf."""

    def __init__(self, payload):
        self.payload = payload

    def __eq__(self, other):
        return isinstance(other, Opaque) and other.payload == self.payload


class Unsupported(Exception):
    pass


class FixtureError(Exception):
    pass


# ---------------------------------------------------------------------------
# Flattening (dcp++'s rules) and the manifest


def _is_tensor(value):
    return isinstance(value, (torch.Tensor, StoredTensor))


def contains_tensor(value):
    if _is_tensor(value):
        return True
    if isinstance(value, Mapping):
        return any(contains_tensor(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(contains_tensor(v) for v in value)
    return False


def flatten(value, path=()):
    """Yields (path, leaf) of a nested value under dcp++'s flattening."""
    if isinstance(value, Mapping) and len(value) > 0:
        for k, v in value.items():
            yield from flatten(v, path + (str(k),))
    elif isinstance(value, (list, tuple)) and contains_tensor(value):
        for i, v in enumerate(value):
            yield from flatten(v, path + (i,))
    else:
        yield path, value


def flat_key(path):
    return ".".join(str(p) for p in path)


def flatten_dict(state_dict):
    """{flat key: (path, leaf)}; a key given by two paths is an error."""
    out = {}
    for path, leaf in flatten(state_dict):
        key = flat_key(path)
        if key in out:
            raise FixtureError(f"flat key {key!r} comes from {out[key][0]} and {path}")
        out[key] = (path, leaf)
    return out


def py_type(value):
    t = type(value)
    if isinstance(value, torch.Tensor):
        return "torch.Tensor"
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _json_element(value):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise Unsupported(f"int {value} inside a list does not fit in 64 bits")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Unsupported("a non-finite float has no JSON form")
        return value
    if isinstance(value, (list, tuple)):
        return [_json_element(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json_element(v) for k, v in value.items()}
    raise Unsupported(f"a {py_type(value)} inside a list")


def plain_value(value):
    """(kind, JSON value) of a non-tensor leaf; raises Unsupported."""
    if value is None:
        return "none", None
    if isinstance(value, bool):
        return "bool", value
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise Unsupported(f"int {value} does not fit in 64 bits")
        return "int", value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Unsupported("a non-finite float has no JSON form")
        return "float", value
    if isinstance(value, str):
        return "str", value
    if isinstance(value, bytes):
        return "bytes", value.hex()
    if isinstance(value, (list, tuple)):
        return "list", [_json_element(v) for v in value]
    if isinstance(value, Mapping) and len(value) == 0:
        return "dict", {}
    raise Unsupported(f"a Python object of class {py_type(value)}")


def dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def tensor_bytes(t):
    """The tensor's elements, C order, in this (little-endian) host's order."""
    c = t.detach().cpu().contiguous()
    n = c.numel() * c.element_size()
    return ctypes.string_at(c.data_ptr(), n) if n else b""


class Manifest:
    def __init__(self, out_dir, kind):
        self.out_dir = Path(out_dir).resolve()
        self.kind = kind
        self.expected = self.out_dir / "expected"
        self.expected.mkdir(parents=True)
        self.checkpoints = []
        self._bins = 0

    def checkpoint(self, name, path, fmt, notes=(), **fields):
        entry = {"name": name, "path": path, "format": fmt}
        entry.update(fields)
        entry.setdefault("must_refuse", False)
        entry["notes"] = list(notes)
        entry["leaves"] = []
        self.checkpoints.append(entry)
        return entry

    def path_of(self, entry):
        return self.out_dir / entry["path"]

    def add_state_dict(self, entry, state_dict):
        for key, (path, leaf) in flatten_dict(state_dict).items():
            self.add_leaf(entry, path, leaf)

    def add_leaf(self, entry, path, value):
        leaf = {
            "key": flat_key(path),
            "path": list(path),
            "kind": None,
            "py_type": py_type(value),
            "dtype": None,
            "shape": None,
        }
        if isinstance(value, torch.Tensor):
            data = tensor_bytes(value)
            name = f"expected/{self._bins}.bin"
            self._bins += 1
            (self.out_dir / name).write_bytes(data)
            leaf.update(kind="tensor", dtype=dtype_name(value.dtype), shape=list(value.shape),
                        file=name, nbytes=len(data))
        else:
            try:
                kind, json_value = plain_value(value)
                leaf.update(kind=kind, value=json_value)
            except Unsupported as e:
                leaf.update(kind="unsupported", why=str(e))
        entry["leaves"].append(leaf)
        return leaf

    def leaf(self, entry, key):
        for leaf in entry["leaves"]:
            if leaf["key"] == key:
                return leaf
        raise KeyError(key)

    def write(self):
        doc = {
            "manifest_version": 1,
            "kind": self.kind,
            "torch_version": torch.__version__,
            "python_version": ".".join(map(str, sys.version_info[:3])),
            "checkpoints": self.checkpoints,
        }
        text = json.dumps(doc, indent=1, ensure_ascii=False)
        (self.expected / "manifest.json").write_text(text + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------
# torch.save zips: records, and the stored layout of the tensors in data.pkl


def zip_records(data):
    """[(name, bytes)] of a zip, in the order of its central directory."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(info.filename, z.read(info)) for info in z.infolist()]


def build_zip(records, align=64):
    """A zip of stored records whose data starts on `align`-byte boundaries,
    padded as PyTorch pads (a local extra field "FB", u16 length, 'Z' fill)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, payload in records:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            before_data = buf.tell() + 30 + len(name.encode("utf-8")) + 4
            pad = (-before_data) % align
            info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
            z.writestr(info, payload)
    data = buf.getvalue()
    check_zip(data, align)
    return data


def check_zip(data, align=None):
    """CRCs (testzip), one archive prefix, and data alignment when asked."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        bad = z.testzip()
        if bad is not None:
            raise FixtureError(f"zip record {bad} has a bad CRC")
        infos = z.infolist()
        prefix = infos[0].filename.split("/")[0] + "/"
        for info in infos:
            if not info.filename.startswith(prefix):
                raise FixtureError(f"record {info.filename} is not under {prefix}")
            if align:
                (name_len, extra_len) = struct.unpack_from("<HH", data, info.header_offset + 26)
                start = info.header_offset + 30 + name_len + extra_len
                if start % align:
                    raise FixtureError(f"record {info.filename} starts at {start}")
    return prefix


def archive_prefix(records):
    return records[0][0].split("/")[0]


class StoredTensor:
    """A tensor as a torch.save pickle describes it (no data)."""

    def __init__(self, storage_key, storage_type, storage_numel, storage_offset, size, stride):
        self.layout = {
            "storage_key": storage_key,
            "storage_type": storage_type,
            "storage_numel": storage_numel,
            "storage_offset": storage_offset,
            "stride": list(stride),
        }
        self.size = list(size)


class _LayoutUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self._rebuild
        if module == "torch" and name.endswith("Storage"):
            return name
        return super().find_class(module, name)

    def persistent_load(self, pid):
        # ("storage", storage type, key, location, numel)
        return pid

    @staticmethod
    def _rebuild(storage, storage_offset, size, stride, requires_grad, hooks, metadata=None):
        _, storage_type, key, _, numel = storage
        return StoredTensor(key, storage_type, numel, storage_offset, size, stride)


def stored_layouts(zip_data):
    """{flat key: layout dict} of every tensor in a torch.save zip."""
    records = dict(zip_records(zip_data))
    prefix = next(iter(records)).split("/")[0]
    root = _LayoutUnpickler(io.BytesIO(records[prefix + "/data.pkl"])).load()
    if isinstance(root, StoredTensor):
        return {"": root.layout}
    return {flat_key(path): leaf.layout for path, leaf in flatten(root) if isinstance(leaf, StoredTensor)}


def add_stored_layouts(entry, zip_data):
    layouts = stored_layouts(zip_data)
    for leaf in entry["leaves"]:
        if leaf["kind"] == "tensor":
            leaf["stored"] = layouts[leaf["key"]]


# ---------------------------------------------------------------------------
# Comparison of what a checkpoint gives back with what was saved


def same(a, b):
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and tensor_bytes(a) == tensor_bytes(b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return list(a.keys()) == list(b.keys()) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def expect_same(what, got, want):
    if not same(got, want):
        raise FixtureError(f"{what}: read back {got!r}, saved {want!r}")


# ---------------------------------------------------------------------------
# torch 1.13 DCP, one rank


def dcp113_state_dict():
    g = torch.Generator().manual_seed(113)
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    return {
        "t_float32": torch.randn(2, 3, generator=g),
        "t_float64": torch.randn(3, dtype=torch.float64, generator=g),
        "t_bfloat16": torch.randn(2, 2, generator=g).to(torch.bfloat16),
        "t_float16": torch.randn(5, generator=g).to(torch.float16),
        "t_int64": torch.tensor([-(2**40), -1, 0, 2**62]),
        "t_int32": torch.arange(-3, 3, dtype=torch.int32).reshape(2, 3),
        "t_int16": torch.tensor([-32768, 7, 32767], dtype=torch.int16),
        "t_int8": torch.tensor([-128, -1, 0, 127], dtype=torch.int8),
        "t_uint8": torch.tensor([0, 1, 254, 255], dtype=torch.uint8),
        "t_bool": torch.tensor([True, False, True]),
        "t_complex64": torch.complex(torch.randn(2, generator=g), torch.randn(2, generator=g)),
        "t_scalar": torch.tensor(2.5),
        "t_empty": torch.zeros(0, 3),
        "t_transposed": base.t(),
        "t_offset_view": base[1:],
        "v_int": 7,
        "v_negative": -123456789012,
        "v_big_int": 2**70,
        "v_float": 0.1,
        "v_str": "h\u00e9llo \u2713",
        "v_true": True,
        "v_false": False,
        "v_none": None,
        "v_bytes": b"\x00\x01\xfe\xff",
        "v_list": [1, 2.5, "x", None, True],
        "v_tuple": (1, "two", 3.0),
        "v_dict": {"lr": 0.001, "betas": [0.9, 0.999]},
        "v_ordered": OrderedDict([(2, "b"), (1, "a")]),
        "v_empty_dict": {},
        "v_empty_list": [],
        "v_object": Opaque(3),
        "nested": {
            "a": torch.arange(4, dtype=torch.float32),
            "b": {"c": torch.tensor([[1, 2], [3, 4]]), "d": "deep", "e": 2.5},
            "lst": [torch.ones(2, dtype=torch.float64), 5, {"w": torch.tensor([True])}],
            "n": 1,
        },
    }


def load_dcp113_back(ckpt_dir, expected):
    """1.13's load_state_dict into fresh tensors and placeholders; compares."""
    dcp = import_dcp()
    dest = {}
    for k, v in expected.items():
        dest[k] = torch.full_like(v, 0) if isinstance(v, torch.Tensor) else None
    dcp.load_state_dict(dest, dcp.FileSystemReader(ckpt_dir), no_dist=True)
    for k, v in expected.items():
        if isinstance(v, Opaque):
            if not isinstance(dest[k], Opaque):
                raise FixtureError(f"{k}: read back {dest[k]!r}")
            continue
        expect_same(k, dest[k], v)


def dcp113_chunks(entry, ckpt_dir):
    """Adds each top-level tensor's chunks (with their byte ranges) from .metadata."""
    dcp = import_dcp()
    with open(Path(ckpt_dir) / ".metadata", "rb") as f:
        md = pickle.load(f)
    by_key = {leaf["key"]: leaf for leaf in entry["leaves"]}
    for fqn, item in md.state_dict_metadata.items():
        if not isinstance(item, dcp.TensorStorageMetadata):
            continue
        chunks = []
        for i, chunk in enumerate(item.chunks):
            info = md.storage_data[dcp.metadata.MetadataIndex(fqn, chunk.offsets)]
            chunks.append({"offsets": list(chunk.offsets), "sizes": list(chunk.sizes),
                           "file": info.relative_path, "offset": info.offset,
                           "length": info.length})
            if fqn in by_key and len(item.chunks) == 1:
                with open(Path(ckpt_dir) / info.relative_path, "rb") as f:
                    f.seek(info.offset)
                    by_key[fqn]["stored"] = stored_layouts(f.read(info.length))[""]
        if fqn in by_key:
            by_key[fqn]["chunks"] = chunks


DCP113_NOTES = [
    "1.13 saves each top-level value as it is: a non-tensor (nested dicts with tensors "
    "included) is one BYTE_IO item, a torch.save zip of the whole value; the manifest "
    "lists the leaves dcp++ flattens it to",
    "t_transposed is saved as the transposed view: size [4, 3], stride [1, 4] over the "
    "12-element storage (1.13 clones only when the storage is larger than the tensor)",
    "t_offset_view (base[1:]) is cloned before saving: storage_offset 0, contiguous",
    "v_ordered is collections.OrderedDict with int keys: REDUCE(OrderedDict, ()) then "
    "SETITEMS; flattened with str keys 'v_ordered.2', 'v_ordered.1'",
    "v_bytes pickles as _codecs.encode(str, 'latin1') (protocol 2)",
    "v_big_int pickles as LONG1; v_object as GLOBAL '__main__ Opaque' NEWOBJ",
    "MEM_FORMAT_ENCODING in .metadata is REDUCE(builtins.getattr, (cls, "
    "'TORCH_CONTIGUOUS_FORMAT')): Debian's CPython 3.11.2 pickles Enum members by name "
    "(3.11.7, 3.12, 3.13 and 3.10 and older by value: REDUCE(cls, (0,)))",
]


def make_dcp113_1rank(manifest, per_rank):
    dcp = import_dcp()
    ckpt = manifest.out_dir / "ckpt"
    sd = dcp113_state_dict()
    dcp.save_state_dict(sd, dcp.FileSystemWriter(str(ckpt), single_file_per_rank=per_rank),
                        no_dist=True)
    load_dcp113_back(ckpt, sd)
    entry = manifest.checkpoint("main", "ckpt", "pytorch_dcp", DCP113_NOTES, flavour="1.13",
                                layout="per_rank" if per_rank else "per_item", world_size=1,
                                metadata_files=[".metadata"])
    manifest.add_state_dict(entry, sd)
    dcp113_chunks(entry, ckpt)


# ---------------------------------------------------------------------------
# torch 1.13 DCP, two processes over Gloo


def two_rank_state_dict():
    """The full values (each rank builds the same)."""
    g = torch.Generator().manual_seed(2)
    return {
        "st_rows": torch.randn(7, 5, generator=g),
        "st_cols": torch.arange(35, dtype=torch.float64).reshape(7, 5),
        "rep_w": torch.randn(3, 2, generator=g),
        "rep_b": torch.tensor([1, 2, 3, 4]),
        "step": 11,
        "lr": 0.5,
        "name": "two ranks",
        "cfg": {"layers": [4, 8], "act": "relu"},
    }


def dcp113_rank_worker(rank, world_size, ckpt, per_rank):
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    dcp = import_dcp()
    sharded_tensor = import_sharded_tensor()
    from torch.distributed._shard.sharding_spec import ChunkShardingSpec

    placements = [f"rank:{r}/cpu" for r in range(world_size)]

    def shard(full, dim):
        st = sharded_tensor.empty(ChunkShardingSpec(dim=dim, placements=placements),
                                  *full.shape, dtype=full.dtype)
        for s in st.local_shards():
            box = tuple(slice(o, o + n) for o, n in
                        zip(s.metadata.shard_offsets, s.metadata.shard_sizes))
            s.tensor.copy_(full[box])
        return st

    sd = two_rank_state_dict()
    sd["st_rows"] = shard(sd["st_rows"], 0)
    sd["st_cols"] = shard(sd["st_cols"], 1)
    dcp.save_state_dict(sd, dcp.FileSystemWriter(ckpt, single_file_per_rank=per_rank))
    dist.barrier()
    dist.destroy_process_group()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(world_size, args, timeout=180):
    """Runs `make_fixtures.py _rank <rank> <world_size> args...` on every rank."""
    for attempt in range(3):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
        # Gloo's device on loopback, not on whatever the host name resolves to.
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
        procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "_rank", str(r),
                                   str(world_size)] + args, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
                 for r in range(world_size)]
        deadline = time.monotonic() + timeout
        outputs = []
        for p in procs:
            try:
                outputs.append(p.communicate(timeout=max(1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                for q in procs:
                    q.kill()
                raise FixtureError(f"rank processes did not finish within {timeout} s")
        failed = [(r, p.returncode, outputs[r][1]) for r, p in enumerate(procs) if p.returncode]
        if not failed:
            return
        if attempt < 2 and any("ddress already in use" in err for _, _, err in failed):
            continue
        raise FixtureError("".join(f"rank {r} exited with {rc}:\n{err}\n" for r, rc, err in failed))


def make_dcp113_2rank(manifest, per_rank):
    ckpt = manifest.out_dir / "ckpt"
    run_ranks(2, [str(ckpt), "1" if per_rank else "0"])
    sd = two_rank_state_dict()
    load_dcp113_back(ckpt, sd)
    notes = [
        "st_rows: ShardedTensor, ChunkShardingSpec(dim=0): rank 0 rows 0-3, rank 1 rows 4-6",
        "st_cols: ShardedTensor, ChunkShardingSpec(dim=1): rank 0 columns 0-2, rank 1 columns 3-4",
        "1.13 writes replicated tensors and plain values on the coordinator (rank 0) only",
        "files are named __<rank>_<n>.distcp",
    ]
    entry = manifest.checkpoint("main", "ckpt", "pytorch_dcp", notes, flavour="1.13",
                                layout="per_rank" if per_rank else "per_item", world_size=2,
                                metadata_files=[".metadata"])
    manifest.add_state_dict(entry, sd)
    dcp113_chunks(entry, ckpt)


# ---------------------------------------------------------------------------
# torch 2.x-flavoured DCP directories (stand-in classes, real 1.13 payloads)


def dcp2_state_dict():
    g = torch.Generator().manual_seed(20)
    return {
        "model": {
            "embed.weight": torch.randn(6, 4, generator=g).to(torch.bfloat16),
            "proj": {"weight": torch.randn(7, 5, generator=g), "bias": torch.randn(5, generator=g)},
        },
        "optim": {
            "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(5, generator=g)}},
            "param_groups": [{"lr": 0.01, "betas": (0.9, 0.999), "params": [0]}],
        },
        "layers": [torch.arange(3, dtype=torch.float32), {"w": torch.tensor([[1, 2], [3, 4]])}, 4],
        "step": 42,
        "loss": 0.25,
        "name": "dcp2",
        "done": False,
        "nothing": None,
        "blob": b"\x01\x02\xff",
        "hist": [1, 2, 3],
        "betas": (0.9, 0.999),
        "sched": [{"gamma": 0.5}],
        "big": 2**70,
        "many": {f"k{i:02d}": i for i in range(64)},
    }


ROW_SPLIT = "model.proj.weight"  # saved as two chunks: rows 0-3 on rank 0, 4-6 on rank 1


class WriteItem:
    def __init__(self, fqn, value, offsets=None, global_size=None):
        self.fqn = fqn
        self.value = value  # a tensor chunk, or a plain value (BYTE_IO)
        self.offsets = offsets
        self.global_size = global_size

    @property
    def is_tensor(self):
        return isinstance(self.value, torch.Tensor)

    def size(self):
        return self.value.numel() * self.value.element_size() if self.is_tensor else 0


def dcp2_plans(flat, dedup):
    """Each rank's write items. Every rank holds every replicated item; with
    `dedup` each goes to one rank, as 2.x's dedup_save_plans does (to the plan
    with the fewest bytes so far, a non-tensor counting 1)."""
    full = flat[ROW_SPLIT][1]
    rank_items = [[], []]
    for key, (path, value) in flat.items():
        if key == ROW_SPLIT:
            for rank, rows in enumerate((slice(0, 4), slice(4, 7))):
                offsets = [rows.start, 0]
                rank_items[rank].append(WriteItem(key, full[rows].clone(), offsets, list(full.shape)))
        elif isinstance(value, torch.Tensor):
            for rank in range(2):
                rank_items[rank].append(WriteItem(key, value, [0] * value.dim(), list(value.shape)))
        else:
            for rank in range(2):
                rank_items[rank].append(WriteItem(key, value))
    if not dedup:
        return rank_items
    plans = [[], []]
    sizes = [0, 0]
    seen = {}
    for rank, items in enumerate(rank_items):
        for item in items:
            seen.setdefault((item.fqn, tuple(item.offsets or ())), []).append((rank, item))
    for holders in seen.values():
        rank, item = min(holders, key=lambda h: sizes[h[0]])
        plans[rank].append(item)
        sizes[rank] += item.size() or 1
    return plans


def dcp2_tensor_payload(tensor):
    """torch.save(tensor) as 2.x writes it: 1.13's zip plus `byteorder`."""
    buf = io.BytesIO()
    torch.save(tensor, buf)
    records = zip_records(buf.getvalue())
    prefix = archive_prefix(records)
    out = []
    for name, payload in records:
        out.append((name, payload))
        if name == prefix + "/data.pkl":
            out.append((prefix + "/byteorder", sys.byteorder.encode()))
    return build_zip(out)


def dcp2_bytes_payload(value):
    buf = io.BytesIO()
    torch.save(value, buf)
    return buf.getvalue()


def zstd_stream(data):
    """What 2.x's ZStandard extension writes: ZstdCompressor().stream_writer
    (frames without a content size)."""
    import zstandard

    out = io.BytesIO()
    with zstandard.ZstdCompressor().stream_writer(out, closefd=False) as w:
        w.write(data)
    return out.getvalue()


def zstd_unstream(data):
    import zstandard

    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()


def write_dcp2(ckpt, flat, plans, per_rank_metadata, zstd):
    """Writes the data files (BYTE_IO items first, then tensors, as 2.x) and
    the metadata; returns {fqn: [chunk dicts]} for the manifest."""
    md_mod = sys.modules["torch.distributed.checkpoint.metadata"]
    fs_mod = sys.modules["torch.distributed.checkpoint.filesystem"]
    ckpt.mkdir()
    paths = {key: path for key, (path, _) in flat.items()}
    rank_metadata = []
    chunks_out = {}
    for rank, items in enumerate(plans):
        file_name = f"__{rank}_0.distcp"
        storage = {}
        with open(ckpt / file_name, "wb") as f:
            for item in [i for i in items if not i.is_tensor] + [i for i in items if i.is_tensor]:
                payload = (dcp2_tensor_payload(item.value) if item.is_tensor
                           else dcp2_bytes_payload(item.value))
                descriptors = None
                if zstd:
                    payload = zstd_stream(payload)
                    descriptors = ["stream.zstd/1"]
                offset = f.tell()
                f.write(payload)
                storage[id(item)] = fs_mod._StorageInfo(file_name, offset, len(payload), descriptors)
        rank_metadata.append(storage)

    def metadata_of(ranks):
        sdm, storage_data, planner_data = {}, {}, {}
        for rank in ranks:
            for item in plans[rank]:
                info = rank_metadata[rank][id(item)]
                if not item.is_tensor:
                    sdm[item.fqn] = md_mod.BytesStorageMetadata()
                    storage_data[md_mod.MetadataIndex(item.fqn)] = info
                else:
                    tmd = sdm.setdefault(item.fqn, md_mod.TensorStorageMetadata(
                        properties=md_mod.TensorProperties(dtype=item.value.dtype),
                        size=torch.Size(item.global_size), chunks=[]))
                    index = len(tmd.chunks)
                    tmd.chunks.append(md_mod.ChunkStorageMetadata(
                        offsets=torch.Size(item.offsets), sizes=item.value.shape))
                    storage_data[md_mod.MetadataIndex(item.fqn, item.offsets, index)] = info
                planner_data[item.fqn] = tuple(paths[item.fqn])
        return md_mod.Metadata(
            state_dict_metadata=sdm, planner_data=planner_data, storage_data=storage_data,
            storage_meta=md_mod.StorageMeta(checkpoint_id=PosixPath(ckpt),
                                            save_id=str(uuid.uuid4())),
            version="1.0.0")

    metadata_files = []
    groups = [[0], [1]] if per_rank_metadata else [[0, 1]]
    for ranks in groups:
        name = f"__{ranks[0]}.metadata" if per_rank_metadata else ".metadata"
        with open(ckpt / (name + ".tmp"), "wb") as f:
            pickle.dump(metadata_of(ranks), f)
        os.rename(ckpt / (name + ".tmp"), ckpt / name)
        metadata_files.append(name)

    for rank, items in enumerate(plans):
        for item in items:
            if item.is_tensor:
                info = rank_metadata[rank][id(item)]
                chunk = {"offsets": item.offsets, "sizes": list(item.value.shape),
                         "file": info.relative_path, "offset": info.offset, "length": info.length}
                if info.transform_descriptors:
                    chunk["transform_descriptors"] = info.transform_descriptors
                chunks_out.setdefault(item.fqn, []).append(chunk)
    return metadata_files, chunks_out


def read_dcp2_back(ckpt, metadata_files, flat):
    """Unpickles every metadata file and loads every item through it."""
    md_mod = sys.modules["torch.distributed.checkpoint.metadata"]
    got = {}
    for name in metadata_files:
        with open(ckpt / name, "rb") as f:
            md = pickle.load(f)
        if md.version != "1.0.0" or not isinstance(md.storage_meta.checkpoint_id, PosixPath):
            raise FixtureError(f"{name}: version/storage_meta did not read back")
        if set(md.planner_data) != set(md.state_dict_metadata):
            raise FixtureError(f"{name}: planner_data does not cover every key")
        for fqn, item in md.state_dict_metadata.items():
            if tuple(md.planner_data[fqn]) != tuple(flat[fqn][0]):
                raise FixtureError(f"{name}: planner_data[{fqn!r}] = {md.planner_data[fqn]}")

            def item_bytes(index):
                info = md.storage_data[index]
                with open(ckpt / info.relative_path, "rb") as f:
                    f.seek(info.offset)
                    data = f.read(info.length)
                if info.transform_descriptors:
                    if info.transform_descriptors != ["stream.zstd/1"]:
                        raise FixtureError(f"unexpected transforms {info.transform_descriptors}")
                    data = zstd_unstream(data)
                return io.BytesIO(data)

            if isinstance(item, md_mod.BytesStorageMetadata):
                got[fqn] = torch.load(item_bytes(md_mod.MetadataIndex(fqn)))
                continue
            if item.properties.memory_format != torch.contiguous_format:
                raise FixtureError(f"{name}: TensorProperties of {fqn} did not read back")
            full = got.setdefault(fqn, torch.zeros(item.size, dtype=item.properties.dtype))
            for chunk in item.chunks:
                part = torch.load(item_bytes(md_mod.MetadataIndex(fqn, chunk.offsets)))
                box = tuple(slice(o, o + n) for o, n in zip(chunk.offsets, chunk.sizes))
                full[box] = part
    for key, (_, value) in flat.items():
        if key not in got:
            raise FixtureError(f"{key} is in no metadata file")
        expect_same(key, got[key], value)


def pickle_stats(data):
    """Memo entries, LONG_BINGETs (memo ids above 255) and SETITEMs (1-entry dicts)."""
    counts = {"MEMOIZE": 0, "LONG_BINGET": 0, "SETITEM": 0}
    for op, _, _ in pickletools.genops(data):
        if op.name in counts:
            counts[op.name] += 1
    return counts


def make_dcp2(manifest, variant):
    import dcp2_standins

    dcp2_standins.install()
    per_rank_metadata = variant == "per_rank_metadata"
    zstd = variant == "zstd"
    dcp2_standins.set_enum_pickling("name" if per_rank_metadata else "value")

    sd = dcp2_state_dict()
    flat = flatten_dict(sd)
    if per_rank_metadata:
        # use_collectives=False: each rank plans alone (no dedup, its own
        # metadata). Rank 1 here holds only its shard of the row-split tensor.
        plans = dcp2_plans(flat, dedup=False)
        plans[1] = [i for i in plans[1] if i.fqn == ROW_SPLIT]
    else:
        plans = dcp2_plans(flat, dedup=True)
    ckpt = manifest.out_dir / "ckpt"
    metadata_files, chunks = write_dcp2(ckpt, flat, plans, per_rank_metadata, zstd)
    read_dcp2_back(ckpt, metadata_files, flat)

    stats = {name: pickle_stats((ckpt / name).read_bytes()) for name in metadata_files}
    first = stats[metadata_files[0]]
    if first["MEMOIZE"] <= 256 or first["LONG_BINGET"] == 0:
        raise FixtureError(f"{metadata_files[0]} should have memo ids above 255: {first}")

    notes = [
        "written by make_fixtures.py as torch 2.x's FileSystemWriter writes (not by torch 2.x): "
        ".metadata pickled by CPython (protocol %d) over stand-ins of the 2.x classes "
        "(dcp2_standins.py)" % pickle.DEFAULT_PROTOCOL,
        f"{ROW_SPLIT} is split by rows: chunk [0, 0] size [4, 5] in __0_0.distcp, "
        "chunk [4, 0] size [3, 5] in __1_0.distcp",
        "tensor items: 1.13's torch.save zip rewritten with a 'byteorder' record "
        "('little') after data.pkl, data 64-byte aligned (FB padding); BYTE_IO items: "
        "1.13's torch.save of the value",
        "keys flattened as 2.x does, planner_data {key: path tuple} for every key; "
        "optim.state.0.* comes from an int dict key",
        "storage_meta.checkpoint_id is a pathlib.PosixPath; version '1.0.0'",
        "metadata pickles (opcode counts): " + "; ".join(
            f"{name}: " + ", ".join(f"{op} {n}" for op, n in c.items()) for name, c in stats.items()),
    ]
    if per_rank_metadata:
        notes += [
            "use_collectives=False: __0.metadata and __1.metadata, no .metadata; rank 0's "
            "lists all its items (chunk 0 of the split tensor and every other key), rank 1's "
            f"only chunk 1 of {ROW_SPLIT} (1-entry dicts: SETITEM); a reader merges them",
            "_MEM_FORMAT_ENCODING pickled by name, as Debian's CPython 3.11.2 does: "
            "REDUCE(builtins.getattr, (cls, 'TORCH_CONTIGUOUS_FORMAT'))",
        ]
    else:
        notes += [
            "replicated items spread over both ranks as 2.x's dedup_save_plans does",
            "_MEM_FORMAT_ENCODING pickled by value, REDUCE(cls, (0,)), as CPython 3.10 and "
            "older, 3.11.7, 3.12 and 3.13 do",
        ]
    if zstd:
        notes.append("every item (tensor zips and BYTE_IO) is a zstd stream (no content "
                     "size in the frame header), transform_descriptors ['stream.zstd/1']; "
                     "length is the compressed length")
    notes.append("sched is a tensor-free list holding a 1-entry dict (SETITEM in its data.pkl)")
    entry = manifest.checkpoint("main", "ckpt", "pytorch_dcp", notes, flavour="2.x",
                                layout="per_rank", world_size=2, metadata_files=metadata_files)
    manifest.add_state_dict(entry, sd)
    for leaf in entry["leaves"]:
        if leaf["key"] in chunks:
            leaf["chunks"] = chunks[leaf["key"]]


# ---------------------------------------------------------------------------
# torch.save of a module and of optimizers


class Net(torch.nn.Module):
    """See NET_CPP for the C++ declaration."""

    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 8)
        self.bn = torch.nn.BatchNorm1d(8)
        self.fc2 = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


OPTIMIZERS = {
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.01),
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-2),
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=0.1),
}


def trained(optimizer_name):
    torch.manual_seed(7)
    net = Net()
    opt = OPTIMIZERS[optimizer_name](net.parameters())
    g = torch.Generator().manual_seed(8)
    x, y = torch.randn(16, 4, generator=g), torch.randn(16, 3, generator=g)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()
    return net, opt


def save_and_check(obj, path):
    torch.save(obj, path)
    back = torch.load(path)
    expect_same(str(path), back, obj)
    return path.read_bytes()


MODEL_NOTES = [
    "the root is the OrderedDict module.state_dict() returns: REDUCE(OrderedDict, ()), "
    "SETITEMS, then BUILD with its __dict__ {'_metadata': OrderedDict of per-module "
    "{'version': n}}: not a leaf, a reader ignores it",
    "bn.num_batches_tracked is a 0-d int64 tensor (3 after 3 training steps)",
    "the archive's records are under '<file stem>/' (torch.save to a path), not 'archive/'",
    "C++ module: " + " ".join(NET_CPP.split()),
]


def make_torchsave_model(manifest):
    net, _ = trained("adam")
    path = manifest.out_dir / "model.pt"
    sd = net.state_dict()
    data = save_and_check(sd, path)
    entry = manifest.checkpoint("main", "model.pt", "torch_save", MODEL_NOTES)
    manifest.add_state_dict(entry, sd)
    add_stored_layouts(entry, data)


def make_torchsave_optim(manifest, name):
    net, opt = trained(name)
    osd = opt.state_dict()
    data = save_and_check(osd, manifest.out_dir / "optim.pt")
    notes = [
        f"torch.optim.{type(opt).__name__} state_dict after 3 steps on the module of "
        "torchsave_model; checkpoint 'model' is that module's state_dict",
        "state is keyed by parameter index (int keys: 'state.0.*'); param_names[i] names "
        "parameter i; param_groups is a tensor-free list: one leaf (JSON list of dicts)",
    ]
    step = next(iter(osd["state"].values()), {}).get("step")
    if isinstance(step, torch.Tensor):
        notes.append(f"1.13's {type(opt).__name__} stores 'step' as a 0-d {dtype_name(step.dtype)} "
                     f"tensor ({step.item()}), not an int")
    elif step is not None:
        notes.append(f"1.13's {type(opt).__name__} stores 'step' as a Python {type(step).__name__} "
                     f"({step}), unlike Adam, AdamW and Adagrad (0-d float32 tensors)")
    entry = manifest.checkpoint("main", "optim.pt", "torch_save", notes,
                                param_names=[n for n, _ in net.named_parameters()])
    manifest.add_state_dict(entry, osd)
    add_stored_layouts(entry, data)

    sd = net.state_dict()
    model_data = save_and_check(sd, manifest.out_dir / "model.pt")
    model = manifest.checkpoint("model", "model.pt", "torch_save", MODEL_NOTES)
    manifest.add_state_dict(model, sd)
    add_stored_layouts(model, model_data)


# ---------------------------------------------------------------------------
# Other torch.save files


def make_torchsave_shared(manifest):
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    w = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    obj = {
        "t": t,
        "view": t[1:],
        "transposed": t.t(),
        "tied_a": w,
        "tied_b": w,
        "nested": {
            "row": t[2],
            "lst": [t[0], 5, {"deep": t[:, 1]}],
            "meta": {"kind": "shared", "n": 3},
        },
        "other": torch.tensor([1, 2, 3], dtype=torch.int32),
    }
    path = manifest.out_dir / "shared.pt"
    data = save_and_check(obj, path)
    notes = [
        "t, view (t[1:]: storage_offset 4), transposed (t.t(): stride [1, 4]), nested.row "
        "(t[2]), nested.lst.0 (t[0]) and nested.lst.2.deep (t[:, 1]: stride [4]) share one "
        "storage, saved once",
        "tied_a and tied_b are the same tensor object: the second is a memo get (BINGET) of "
        "the first",
    ]
    entry = manifest.checkpoint("main", "shared.pt", "torch_save", notes)
    manifest.add_state_dict(entry, obj)
    add_stored_layouts(entry, data)


def torchsave_sample():
    g = torch.Generator().manual_seed(3)
    return {
        "w": torch.randn(3, 4, generator=g),
        "h": torch.randn(4, generator=g).to(torch.float16),
        "ids": torch.tensor([5, 6, 7]),
        "step": 9,
        "name": "sample",
    }


def make_torchsave_2x_records(manifest):
    obj = torchsave_sample()
    buf = io.BytesIO()
    torch.save(obj, buf)
    records = zip_records(buf.getvalue())
    prefix = archive_prefix(records)
    extra = [(prefix + "/.format_version", b"1"), (prefix + "/.storage_alignment", b"64"),
             (prefix + "/byteorder", b"little")]
    pkl = [r for r in records if r[0] == prefix + "/data.pkl"]
    storages = [r for r in records if r[0].startswith(prefix + "/data/")]
    rest = [r for r in records if r not in pkl and r not in storages]
    serialization_id = (prefix + "/.data/serialization_id", b"%020d" % (uuid.uuid4().int % 10**20))
    data = build_zip(pkl + extra + storages + rest + [serialization_id])
    path = manifest.out_dir / "records.pt"
    path.write_bytes(data)
    expect_same(str(path), torch.load(path), obj)
    names = [n for n, _ in zip_records(data)]
    notes = [
        "a 1.13 torch.save zip rewritten (Python zipfile, stored, data 64-byte aligned) with "
        "the records torch 2.x writes; record order: " + ", ".join(names),
    ]
    entry = manifest.checkpoint("main", "records.pt", "torch_save", notes)
    manifest.add_state_dict(entry, obj)
    add_stored_layouts(entry, data)


def make_torchsave_legacy(manifest):
    obj = torchsave_sample()
    path = manifest.out_dir / "legacy.pt"
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    expect_same(str(path), torch.load(path), obj)
    if path.read_bytes()[:2] == b"PK":
        raise FixtureError("the legacy file is a zip")
    notes = [
        "torch.save(..., _use_new_zipfile_serialization=False): the pre-1.6 format (pickled "
        "magic number 0x1950a86a20f9469cfc6c, protocol version 1001, sys info, the object, "
        "the storage keys, then raw storages), not a zip; a reader must refuse it with a "
        "clear error; the leaves say what it holds",
    ]
    entry = manifest.checkpoint("main", "legacy.pt", "torch_save_legacy", notes, must_refuse=True)
    manifest.add_state_dict(entry, obj)


# ---------------------------------------------------------------------------

KINDS = {
    "dcp113_1rank_per_item": lambda m: make_dcp113_1rank(m, per_rank=False),
    "dcp113_1rank_per_rank": lambda m: make_dcp113_1rank(m, per_rank=True),
    "dcp113_2rank_per_item": lambda m: make_dcp113_2rank(m, per_rank=False),
    "dcp113_2rank_per_rank": lambda m: make_dcp113_2rank(m, per_rank=True),
    "dcp2_flavour": lambda m: make_dcp2(m, "default"),
    "dcp2_flavour_per_rank_metadata": lambda m: make_dcp2(m, "per_rank_metadata"),
    "dcp2_flavour_zstd": lambda m: make_dcp2(m, "zstd"),
    "torchsave_model": make_torchsave_model,
    "torchsave_shared": make_torchsave_shared,
    "torchsave_2x_records": make_torchsave_2x_records,
    "torchsave_legacy": make_torchsave_legacy,
}
for _name in OPTIMIZERS:
    KINDS[f"torchsave_optim_{_name}"] = (lambda n: lambda m: make_torchsave_optim(m, n))(_name)


def main(argv):
    if len(argv) >= 2 and argv[1] == "_rank":
        rank, world_size, ckpt, per_rank = int(argv[2]), int(argv[3]), argv[4], argv[5] == "1"
        dcp113_rank_worker(rank, world_size, ckpt, per_rank)
        return 0
    if len(argv) == 2 and argv[1] == "--list":
        print("\n".join(KINDS))
        return 0
    if len(argv) != 3 or argv[1] not in KINDS:
        print(f"usage: {argv[0]} <kind> <out_dir>   (kinds: {', '.join(KINDS)})", file=sys.stderr)
        return 2
    kind, out_dir = argv[1], Path(argv[2])
    if sys.byteorder != "little":
        print("make_fixtures: the manifest's .bin files are little-endian; this host is not",
              file=sys.stderr)
        return 1
    if out_dir.exists() and any(out_dir.iterdir()):
        print(f"make_fixtures: {out_dir} is not empty", file=sys.stderr)
        return 1
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out_dir, kind)
    KINDS[kind](manifest)
    manifest.write()
    print(manifest.path_of(manifest.checkpoints[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
