#!/usr/bin/python3
"""Checks what `ckpt convert` wrote from the dcp113_2rank_* fixture, for
tests/cli/ckpt_convert_test.sh, with Python (Debian's python3-torch 1.13).

    check_converted.py safetensors DIR [--dtype bf16] [--only PREFIX]
                                       [--shards N --max-shard BYTES]
    check_converted.py torch FILE [--only PREFIX] [--tensors-only]
    check_converted.py pytorch-dcp DIR

The expected values are make_fixtures.py's two_rank_state_dict() (two
ShardedTensors split over 2 ranks, replicated tensors, plain values),
consolidated and flattened by dcp++'s rules.

safetensors: a validator written with the stdlib only, for every rule of
the safetensors format (../shared/research/interop.md section 4.1: u64 LE
header length, UTF-8 JSON starting with '{', padded with spaces to a
multiple of 8, at most 100,000,000 bytes, no duplicate keys, __metadata__
of strings with "format": "pt", offsets contiguous from 0 without holes
and ending at the file's end, byte counts matching dtype and shape, the
reference writer's order) and of the Hugging Face layout (section 4.2:
model.safetensors alone, or model-0000i-of-0000n.safetensors and
model.safetensors.index.json with total_size and a weight_map naming every
tensor's file, shards filled in key order); then the tensors, read with
torch.frombuffer, against the expected ones (cast to --dtype when given).

torch: data.pkl's opcodes and globals against torch 2.x's weights_only
allow-list (section 2.3); torch.load(weights_only=True) when 1.13's
restricted unpickler can read it (no BINFLOAT), else weights_only=False;
the nested dict against the expected one.

pytorch-dcp: 1.13's load_state_dict into a flat dict of dotted keys.
Exits non-zero with a message on the first difference.
"""
import argparse
import json
import os
import pickletools
import struct
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402

from make_fixtures import flatten_dict, two_rank_state_dict  # noqa: E402


def fail(msg):
    print("check_converted: " + msg, file=sys.stderr)
    sys.exit(1)


DTYPES = {"bf16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}

# safetensors dtype name -> (torch dtype, bytes).
ST_DTYPES = {
    "BOOL": (torch.bool, 1), "U8": (torch.uint8, 1), "I8": (torch.int8, 1),
    "I16": (torch.int16, 2), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2),
    "I32": (torch.int32, 4), "F32": (torch.float32, 4), "C64": (torch.complex64, 8),
    "F64": (torch.float64, 8), "I64": (torch.int64, 8),
}
# The format's Dtype enum, in increasing alignment.
ENUM_ORDER = ["BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0",
              "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16", "I32", "U32", "F32",
              "C64", "F64", "I64", "U64"]


def expected(only=None, dtype=None, tensors_only=False):
    out = {}
    for key, (_, leaf) in flatten_dict(two_rank_state_dict()).items():
        if only and not (key == only or key.startswith(only + ".")):
            continue
        if isinstance(leaf, torch.Tensor):
            if dtype is not None and leaf.is_floating_point():
                leaf = leaf.to(dtype)
        elif tensors_only:
            continue
        out[key] = leaf
    return out


def same(a, b):
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return sorted(a) == sorted(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def compare(got, want, what):
    if sorted(got) != sorted(want):
        fail(f"{what}: keys {sorted(got)}, expected {sorted(want)}")
    for k in want:
        if not same(got[k], want[k]):
            fail(f"{what}: key {k!r} is {got[k]!r}, expected {want[k]!r}")


# ---------------------------------------------------------------------------
# safetensors


def validate_safetensors_file(path):
    """Every rule of the format; returns {name: tensor}."""
    data = open(path, "rb").read()
    name = os.path.basename(path)
    if len(data) < 8:
        fail(f"{name}: shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", data[:8])
    if n > 100_000_000:
        fail(f"{name}: header of {n} bytes, above 100,000,000")
    if 8 + n > len(data):
        fail(f"{name}: header of {n} bytes runs past the file")
    if n % 8:
        fail(f"{name}: header length {n} is not a multiple of 8")
    raw = data[8:8 + n]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        fail(f"{name}: header is not UTF-8: {e}")
    if not text.startswith("{"):
        fail(f"{name}: header does not start with '{{'")
    if text.rstrip(" ") != text.rstrip():
        fail(f"{name}: header padded with something other than spaces")
    pairs = json.loads(text, object_pairs_hook=lambda kv: kv)
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        fail(f"{name}: duplicate keys in the header")
    header = {k: dict(v) for k, v in pairs}
    meta = header.pop("__metadata__", None)
    if meta is None:
        fail(f"{name}: no __metadata__")
    if any(not isinstance(v, str) for v in meta.values()):
        fail(f"{name}: __metadata__ values must be strings: {meta}")
    if meta.get("format") != "pt":
        fail(f"{name}: __metadata__ format is {meta.get('format')!r}, not 'pt'")
    buf = data[8 + n:]
    entries = []
    for key, e in header.items():
        if sorted(e) != ["data_offsets", "dtype", "shape"]:
            fail(f"{name}: entry {key!r} has fields {sorted(e)}")
        if e["dtype"] not in ST_DTYPES:
            fail(f"{name}: entry {key!r} has dtype {e['dtype']!r}")
        shape = e["shape"]
        if not isinstance(shape, list) or any(not isinstance(d, int) or d < 0 for d in shape):
            fail(f"{name}: entry {key!r} has shape {shape!r}")
        begin, end = e["data_offsets"]
        numel = 1
        for d in shape:
            numel *= d
        if end - begin != numel * ST_DTYPES[e["dtype"]][1]:
            fail(f"{name}: entry {key!r}: {end - begin} bytes for shape {shape} {e['dtype']}")
        entries.append((begin, end, key, e))
    # Offsets contiguous from 0: no holes, no overlaps, ending at the file's end.
    at = 0
    for begin, end, key, _ in sorted(entries):
        if begin != at:
            fail(f"{name}: entry {key!r} starts at {begin}, expected {at} (hole or overlap)")
        at = end
    if 8 + n + at != len(data):
        fail(f"{name}: 8 + {n} + {at} != file length {len(data)}")
    # The reference writer's order: descending dtype alignment, then name.
    order = [k for _, _, k, _ in sorted(entries)]
    want = sorted(order, key=lambda k: (-ENUM_ORDER.index(header[k]["dtype"]), k))
    if order != want:
        fail(f"{name}: tensors in the order {order}, the reference writer's is {want}")
    out = {}
    for begin, end, key, e in entries:
        dtype = ST_DTYPES[e["dtype"]][0]
        b = bytearray(buf[begin:end])
        t = torch.frombuffer(b, dtype=dtype) if b else torch.empty(0, dtype=dtype)
        out[key] = t.reshape(e["shape"]).clone()
    return out


def check_safetensors(args):
    d = args.path
    files = sorted(os.listdir(d))
    got = {}
    if not args.shards or args.shards == 1:
        if files != ["model.safetensors"]:
            fail(f"{d}: holds {files}, expected model.safetensors alone")
        got = validate_safetensors_file(os.path.join(d, "model.safetensors"))
    else:
        n = args.shards
        names = [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
        if files != sorted(names + ["model.safetensors.index.json"]):
            fail(f"{d}: holds {files}, expected {names} and the index")
        index = json.load(open(os.path.join(d, "model.safetensors.index.json")))
        if sorted(index) != ["metadata", "weight_map"]:
            fail(f"index: fields {sorted(index)}")
        total = 0
        where = {}
        for f in names:
            t = validate_safetensors_file(os.path.join(d, f))
            if not t:
                fail(f"{f}: a shard without tensors")
            size = 0
            for k, v in t.items():
                if k in got:
                    fail(f"{k!r} is in two shards")
                got[k] = v
                where[k] = f
                size += v.numel() * v.element_size()
            total += size
            if args.max_shard and len(t) > 1 and size > args.max_shard:
                fail(f"{f}: {size} tensor bytes, above --max-shard-size {args.max_shard}")
        if index["weight_map"] != where:
            fail(f"index weight_map {index['weight_map']}, the shards hold {where}")
        if index["metadata"].get("total_size") != total:
            fail(f"index total_size {index['metadata'].get('total_size')}, the tensors {total}")
        # Filled greedily in key order: shard i's keys all come before shard i+1's.
        keys = sorted(got)
        if [where[k] for k in keys] != sorted(where[k] for k in keys):
            fail("shards are not filled in key order")
    compare(got, expected(args.only, DTYPES.get(args.dtype), tensors_only=True), d)
    print(f"safetensors ok: {len(got)} tensors in {len(files)} file(s)")


# ---------------------------------------------------------------------------
# torch

# torch 2.x's weights_only unpickler (interop.md section 2.3).
ALLOWED_OPCODES = {
    "GLOBAL", "NEWOBJ", "REDUCE", "BUILD", "APPEND", "APPENDS", "SETITEM", "SETITEMS", "MARK",
    "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "NONE", "NEWTRUE", "NEWFALSE", "EMPTY_TUPLE",
    "EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET", "BININT", "BININT1", "BININT2", "BINFLOAT",
    "BINUNICODE", "SHORT_BINSTRING", "BINPERSID", "BINGET", "LONG_BINGET", "BINPUT",
    "LONG_BINPUT", "LONG1", "PROTO", "STOP",
}
ALLOWED_GLOBALS = {
    "collections OrderedDict", "collections Counter", "torch.nn.parameter Parameter",
    "torch.serialization _get_layout", "torch Size", "torch Tensor", "torch device",
    "torch._tensor _rebuild_from_type_v2",
}


def allowed_global(g):
    mod, _, name = g.partition(" ")
    if g in ALLOWED_GLOBALS:
        return True
    if mod == "torch._utils" and name.startswith("_rebuild_"):
        return True
    if mod == "torch" and (name.endswith("Storage") or name.endswith("Tensor")):
        return True
    return mod == "torch" and isinstance(getattr(torch, name, None), torch.dtype)


def check_torch(args):
    with zipfile.ZipFile(args.path) as z:
        if z.testzip() is not None:
            fail(f"{args.path}: a record fails its CRC-32")
        pkl = [n for n in z.namelist() if n.endswith("/data.pkl")]
        if len(pkl) != 1:
            fail(f"{args.path}: {len(pkl)} data.pkl records")
        data = z.read(pkl[0])
    opcodes, globals_ = set(), set()
    for op, arg, _ in pickletools.genops(data):
        opcodes.add(op.name)
        if op.name == "GLOBAL":
            globals_.add(arg)
    bad = opcodes - ALLOWED_OPCODES
    if bad:
        fail(f"opcodes outside 2.x's weights_only set: {sorted(bad)}")
    bad = {g for g in globals_ if not allowed_global(g)}
    if bad:
        fail(f"globals outside 2.x's weights_only allow-list: {sorted(bad)}")
    if "BINFLOAT" in opcodes:
        # 1.13's restricted unpickler lacks BINFLOAT: the opcodes and globals
        # are checked above against 2.x's; the values with the full unpickler.
        obj = torch.load(args.path, weights_only=False)
        how = "weights_only=False (BINFLOAT: checked against 2.x's allow-list)"
    else:
        obj = torch.load(args.path, weights_only=True)
        how = "weights_only=True"
    flat = {k: leaf for k, (_, leaf) in flatten_dict(obj).items()}
    compare(flat, expected(args.only, tensors_only=args.tensors_only), args.path)
    print(f"torch ok ({how}): {len(flat)} leaves; globals {sorted(globals_)}")


# ---------------------------------------------------------------------------
# pytorch-dcp


def check_pytorch_dcp(args):
    from dcp113_compat import import_dcp

    dcp = import_dcp()
    want = expected()
    dest = {k: (torch.zeros_like(v) if isinstance(v, torch.Tensor) else None)
            for k, v in want.items()}
    dcp.load_state_dict(dest, dcp.FileSystemReader(args.path), no_dist=True)
    compare(dest, want, args.path)
    print(f"pytorch-dcp ok: {len(dest)} keys loaded by 1.13's load_state_dict")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["safetensors", "torch", "pytorch-dcp"])
    p.add_argument("path")
    p.add_argument("--dtype")
    p.add_argument("--only")
    p.add_argument("--shards", type=int)
    p.add_argument("--max-shard", type=int)
    p.add_argument("--tensors-only", action="store_true")
    args = p.parse_args()
    {"safetensors": check_safetensors, "torch": check_torch,
     "pytorch-dcp": check_pytorch_dcp}[args.mode](args)


if __name__ == "__main__":
    main()
