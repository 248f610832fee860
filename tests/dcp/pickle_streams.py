#!/usr/bin/env python3
"""Writes the pickle streams interop_pickle_test.cpp decodes.

Usage: pickle_streams.py DIR  -- writes DIR/<name>.p<protocol>.pkl for each
stream below, with CPython's own pickler (stdlib only), and DIR/ops.txt: a
line "<file> <opcode names>" per stream, the opcodes it uses (pickletools),
and DIR/info.txt: "enum getattr" when this CPython pickles an Enum member as
getattr(cls, name) (Debian's 3.11.2 does), "enum value" when as cls(value)
(3.11.7 and 3.12+). The DCP and torch
classes are stand-ins registered in sys.modules under the real module
paths, shaped as interop.md section 1.2 describes (dataclasses pickle as
NEWOBJ + BUILD of their __dict__, TensorProperties with a 5-tuple state,
torch.Size as REDUCE, dtypes as bare globals, ...). Nothing here imports
torch.
"""
import collections
import dataclasses
import enum
import io
import os
import pathlib
import pickle
import pickletools
import sys
import types


def module(name):
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        full = ".".join(parts[:i])
        if full not in sys.modules:
            sys.modules[full] = types.ModuleType(full)
            if i > 1:
                setattr(sys.modules[".".join(parts[: i - 1])], parts[i - 1], sys.modules[full])
    return sys.modules[name]


def place(obj, modname, name=None):
    name = name or obj.__name__
    obj.__module__ = modname
    obj.__qualname__ = name
    obj.__name__ = name
    setattr(module(modname), name, obj)
    return obj


# torch stand-ins.
torch = module("torch")


class Size(tuple):
    def __reduce__(self):
        return (Size, (tuple(self),))


place(Size, "torch")


class dtype:
    def __init__(self, name):
        self.name = name

    def __reduce__(self):
        return self.name  # a bare global torch.<name>, as THPDtype_reduce


place(dtype, "torch")
torch.float32 = dtype("float32")


def _get_layout(name):
    raise NotImplementedError


place(_get_layout, "torch.serialization")


class layout:
    def __reduce__(self):
        return (_get_layout, ("torch.strided",))


torch.strided = layout()


def dcp_classes(meta_mod, fs_mod, props_mod, enum_name, with_storage_meta):
    """The DCP metadata classes under one set of module paths."""
    ns = types.SimpleNamespace()

    class MemFormat(enum.Enum):
        TORCH_CONTIGUOUS_FORMAT = 0
        TORCH_CHANNELS_LAST = 1
        TORCH_PRESERVE_FORMAT = 2

    ns.MemFormat = place(MemFormat, props_mod, enum_name)

    @dataclasses.dataclass
    class ChunkStorageMetadata:
        offsets: Size
        sizes: Size

    @dataclasses.dataclass
    class TensorProperties:
        dtype: object
        layout: object
        requires_grad: bool
        memory_format: object
        pin_memory: bool

        def __getstate__(self):
            return (self.dtype, self.layout, self.requires_grad,
                    MemFormat.TORCH_CONTIGUOUS_FORMAT, self.pin_memory)

        def __setstate__(self, state):
            raise NotImplementedError

    @dataclasses.dataclass
    class TensorStorageMetadata:
        properties: TensorProperties
        size: Size
        chunks: list

    @dataclasses.dataclass
    class BytesStorageMetadata:
        pass

    class MetadataIndex:
        def __init__(self, fqn, offset=None, index=None):
            self.fqn = fqn
            if offset is not None:
                self.offset = Size(offset)
            self.index = index

        def __hash__(self):
            return hash((self.fqn, getattr(self, "offset", None)))

        def __eq__(self, other):
            return (self.fqn, getattr(self, "offset", None)) == (
                other.fqn, getattr(other, "offset", None))

    @dataclasses.dataclass
    class StorageMeta:
        checkpoint_id: object = None
        save_id: str = None
        load_id: str = None
        modules: list = dataclasses.field(default_factory=list)

    @dataclasses.dataclass
    class _StorageInfo:
        relative_path: str
        offset: int
        length: int

    for cls in (ChunkStorageMetadata, TensorStorageMetadata, BytesStorageMetadata,
                MetadataIndex, StorageMeta):
        place(cls, meta_mod)
    place(TensorProperties, props_mod)
    place(_StorageInfo, fs_mod)
    if with_storage_meta:
        @dataclasses.dataclass
        class Metadata:
            state_dict_metadata: dict
            planner_data: object = None
            storage_data: object = None
            storage_meta: object = None
            version: str = None
    else:
        @dataclasses.dataclass
        class Metadata:
            state_dict_metadata: dict
            planner_data: object = None
            storage_data: object = None
    place(Metadata, meta_mod)
    for k, v in locals().items():
        if isinstance(v, type):
            setattr(ns, k, v)
    return ns


def dcp_metadata(ns, newest):
    props = ns.TensorProperties(torch.float32, torch.strided, False,
                                ns.MemFormat.TORCH_CONTIGUOUS_FORMAT, False)
    chunk = ns.ChunkStorageMetadata(Size([0, 0]), Size([2, 3]))
    sdm = {
        "w": ns.TensorStorageMetadata(props, Size([2, 3]), [chunk]),
        "step": ns.BytesStorageMetadata(),
    }
    path = "__0_0.distcp"
    storage = {
        ns.MetadataIndex("w", [0, 0], 0): ns._StorageInfo(path, 0, 862),
        ns.MetadataIndex("step"): ns._StorageInfo(path, 3_000_000_000, 100),
    }
    if newest:
        return ns.Metadata(sdm, {"w": ("w",), "step": ("step",)}, storage,
                           ns.StorageMeta(pathlib.PosixPath("/tmp/ck"), "id-1"), "1.0.0")
    return ns.Metadata(sdm, None, storage)


DCP2 = dcp_classes("torch.distributed.checkpoint.metadata",
                   "torch.distributed.checkpoint.filesystem",
                   "torch.distributed.checkpoint.metadata", "_MEM_FORMAT_ENCODING", True)
DCP113 = dcp_classes("torch.distributed._shard.checkpoint.metadata",
                     "torch.distributed._shard.checkpoint.filesystem",
                     "torch.distributed._shard.sharded_tensor.metadata",
                     "MEM_FORMAT_ENCODING", False)


# torch.save's data.pkl of a tensor, with a persistent id for its storage.
class FloatStorage:
    pass


place(FloatStorage, "torch")


def _rebuild_tensor_v2(*args):
    raise NotImplementedError


place(_rebuild_tensor_v2, "torch._utils")


class _StorageStandIn:
    pass


class Tensor:
    storage = _StorageStandIn()

    def __reduce_ex__(self, protocol):
        return (_rebuild_tensor_v2,
                (self.storage, 0, (2, 3), (3, 1), False, collections.OrderedDict()))


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _StorageStandIn):
            return ("storage", FloatStorage, "0", "cpu", 6)
        return None


class Kw:
    def __init__(self, a, k):
        self.a = a
        self.k = k

    def __getnewargs_ex__(self):
        return ((self.a,), {"k": self.k})


place(Kw, "dcp_test")


def streams():
    s = {}
    s["nested"] = {"a": [1, 2, (3, 4.5, None)], "b": {"c": True, "d": False},
                   "e": (), "f": [[], {}], "g": ((1,), (1, 2), (1, 2, 3), (1, 2, 3, 4))}
    strs = ["s%d" % i for i in range(300)]
    s["memo300"] = strs + strs
    s["ints"] = [0, 1, 255, 256, 65535, 65536, 2**31 - 1, 2**31, -1, -2**31, -2**31 - 1,
                 2**40, 2**63 - 1, 2**63, -2**63, -2**63 - 1, 2**64 - 1, 2**64, -2**64,
                 2**100, -2**100]
    s["bigdict"] = {"k%d" % i: i for i in range(2500)}
    s["dict1"] = {"only": 1}
    s["strings"] = ["", "ascii", "h\u00e9llo", "\u65e5\u672c\u8a9e", "emoji \U0001F389",
                    "quote ' and \\", "x" * 300]
    s["bytes"] = [b"", b"\x00\xff", bytes(range(256)), b"y" * 300]
    s["floats"] = [0.0, -0.0, 0.1, 1e300, -2.5, float("nan"), float("inf"), float("-inf")]
    s["sets"] = {"set": {1, 2, 3}, "frozen": frozenset([7]), "empty": set()}
    od = collections.OrderedDict([("w", 1), ("b", [2])])
    s["ordereddict"] = od
    sd = collections.OrderedDict([("layer.weight", 1.5)])
    sd._metadata = collections.OrderedDict([("", {"version": 1})])
    s["state_dict"] = sd
    cyc = [1]
    cyc.append(cyc)
    s["cyclic_list"] = cyc
    d = {"k": 1}
    d["self"] = d
    s["cyclic_dict"] = d
    lst = []
    t1 = (lst,)
    lst.append(t1)
    s["recursive_tuple1"] = t1  # written with POP
    lst4 = []
    t4 = (lst4, 1, 2, 3)
    lst4.append(t4)
    s["recursive_tuple4"] = t4  # written with POP_MARK at protocol 2
    s["dcp_metadata"] = dcp_metadata(DCP2, True)
    s["dcp_metadata_113"] = dcp_metadata(DCP113, False)
    return s


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)

    ops = []

    def write(name, protocol, data):
        file = "%s.p%d.pkl" % (name, protocol)
        with open(os.path.join(out, file), "wb") as f:
            f.write(data)
        used = sorted({op.name for op, _, _ in pickletools.genops(data)})
        ops.append("%s %s\n" % (file, " ".join(used)))

    for name, obj in streams().items():
        for protocol in (2, 4, 5):
            write(name, protocol, pickle.dumps(obj, protocol=protocol))
    for protocol in (2, 4, 5):
        write("bytearray", protocol, pickle.dumps(bytearray(b"ab\x00"), protocol=protocol))
    for protocol in (4, 5):
        write("newobj_ex", protocol, pickle.dumps(Kw(1, 2), protocol=protocol))
    buf = io.BytesIO()
    TorchPickler(buf, protocol=2).dump(Tensor())
    write("tensor", 2, buf.getvalue())
    with open(os.path.join(out, "ops.txt"), "w") as f:
        f.writelines(ops)
    member = DCP2.MemFormat.TORCH_CONTIGUOUS_FORMAT
    by_name = member.__reduce_ex__(4)[0] is getattr
    with open(os.path.join(out, "info.txt"), "w") as f:
        f.write("enum %s\n" % ("getattr" if by_name else "value"))


if __name__ == "__main__":
    main()
