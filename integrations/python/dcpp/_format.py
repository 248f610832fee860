"""dcp++'s native format (docs/FORMAT.md): the metadata, items, plain values."""

import os
import struct
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch

METADATA_FILE = ".metadata"
MAGIC = b"DCPPMETA"
FORMAT_VERSION = 1
HEADER_SIZE = 32
PLAIN_MARKER = 0xD1

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "uint8": torch.uint8,
    "bool": torch.bool,
    "complex32": getattr(torch, "complex32", None),
    "complex64": torch.complex64,
    "complex128": torch.complex128,
}


class CorruptCheckpointError(RuntimeError):
    """A checkpoint that is damaged or is not dcp++'s: the message names the
    file (and the key)."""


try:
    import xxhash as _xxhash

    def _xxh3(data) -> Optional[int]:
        return _xxhash.xxh3_64_intdigest(data)

except ImportError:  # pragma: no cover - exercised by the tests with the import blocked
    _xxhash = None
    _warned = False

    def _xxh3(data) -> Optional[int]:
        global _warned
        if not _warned:
            _warned = True
            warnings.warn(
                "dcpp: the xxhash module is not installed (Debian: python3-xxhash), so the "
                "checksums of dcp++ checkpoints are not verified",
                RuntimeWarning,
                stacklevel=3,
            )
        return None


def checksums_available() -> bool:
    """True when checksums are verified (the xxhash module is importable)."""
    return _xxhash is not None


@dataclass
class Chunk:
    offsets: Tuple[int, ...]
    sizes: Tuple[int, ...]


@dataclass
class TensorEntry:
    dtype: str  # dcp++'s name: "float32", "bfloat16", ...
    requires_grad: bool
    size: Tuple[int, ...]
    chunks: List[Chunk]

    @property
    def torch_dtype(self) -> torch.dtype:
        return _torch_dtype(self.dtype)


@dataclass
class Item:
    """Where one saved item's bytes are: file, offset, length, checksum."""

    fqn: str
    offsets: Tuple[int, ...]  # the chunk's offsets; () for a value
    file: str
    offset: int
    length: int
    checksum: Optional[int]  # XXH3-64, or None when the checkpoint has none
    dtype: Optional[str] = None  # a tensor chunk's dtype name; None for a value
    sizes: Tuple[int, ...] = ()  # a tensor chunk's sizes


@dataclass
class Metadata:
    path: str
    library_version: str
    world_size: int
    checkpoint_id: Optional[str]
    save_id: Optional[str]
    entries: Dict[str, Any]  # flat key -> TensorEntry, or None for a plain value
    items: Dict[Tuple[str, Tuple[int, ...]], Item]
    mapping: Dict[str, List[Any]] = field(default_factory=dict)  # flat key -> path (str | int)


def _torch_dtype(name: str) -> torch.dtype:
    dt = DTYPES.get(name)
    if dt is None:
        raise CorruptCheckpointError(f"dtype '{name}' is not one this torch has")
    return dt


class _Decoder:
    def __init__(self, data: bytes, source: str):
        self.data = memoryview(data)
        self.pos = 0
        self.source = source

    def fail(self, what: str):
        raise CorruptCheckpointError(f"{self.source}: {what} at byte {self.pos}")

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            self.fail(f"a field of {n} bytes runs past the end")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def f64(self) -> float:
        return struct.unpack("<d", self.take(8))[0]

    def varint(self) -> int:
        v = shift = 0
        while True:
            if shift > 63:
                self.fail("a varint longer than 10 bytes")
            b = self.u8()
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return v

    def svarint(self) -> int:
        v = self.varint()
        return (v >> 1) ^ -(v & 1)

    def count(self, what: str) -> int:
        n = self.varint()
        if n > len(self.data) - self.pos:
            self.fail(f"a count of {n} {what}s beyond the bytes left")
        return n

    def str(self) -> str:
        return self.bytes().decode("utf-8", "surrogateescape")

    def bytes(self) -> bytes:
        return bytes(self.take(self.count("byte")))

    def ints(self) -> Tuple[int, ...]:
        return tuple(self.svarint() for _ in range(self.count("int")))

    def done(self) -> bool:
        return self.pos == len(self.data)


def _parse_mapping(data: bytes, source: str) -> Dict[str, List[Any]]:
    if not data:
        return {}
    d = _Decoder(data, source + " (planner_data)")
    if d.u8() != 1:
        d.fail("an unknown flattening-map version")
    mapping = {}
    for _ in range(d.count("key")):
        key = d.str()
        n = d.varint()
        if n == 0:
            mapping[key] = [key]
            continue
        path = []
        for _ in range(n):
            path.append(d.svarint() if d.u8() == 1 else d.str())
        mapping[key] = path
    return mapping


def read_metadata(path: str, *, verify: bool = True) -> Metadata:
    """The metadata of the dcp++ checkpoint at `path` (a directory)."""
    source = os.path.join(path, METADATA_FILE)
    try:
        with open(source, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} holds no committed dcp++ checkpoint (no {METADATA_FILE})"
        ) from None
    if len(data) < HEADER_SIZE or data[:8] != MAGIC:
        raise CorruptCheckpointError(f"{source}: not a dcp++ metadata file (bad magic)")
    version, flags, body_len, checksum = struct.unpack("<IIQQ", data[8:HEADER_SIZE])
    if version > FORMAT_VERSION:
        raise CorruptCheckpointError(
            f"{source}: format version {version} is newer than this reader's ({FORMAT_VERSION})"
        )
    if flags != 0:
        raise CorruptCheckpointError(f"{source}: reserved flags are {flags:#x}, not 0")
    body = data[HEADER_SIZE:]
    if len(body) != body_len:
        raise CorruptCheckpointError(
            f"{source}: the header says {body_len} body bytes, the file has {len(body)}"
        )
    if verify:
        got = _xxh3(body)
        if got is not None and got != checksum:
            raise CorruptCheckpointError(f"{source}: checksum mismatch (the metadata is damaged)")
    d = _Decoder(body, source)
    library_version = d.str()
    world_size = d.svarint()
    checkpoint_id = save_id = None
    if d.u8():
        checkpoint_id, save_id = d.str(), d.str()
    planner_data = d.bytes()
    entries: Dict[str, Any] = {}
    for _ in range(d.count("entry")):
        fqn = d.str()
        kind = d.u8()
        if kind == 0:
            dtype = d.str()
            requires_grad = bool(d.u8())
            size = d.ints()
            chunks = [Chunk(d.ints(), d.ints()) for _ in range(d.count("chunk"))]
            entries[fqn] = TensorEntry(dtype, requires_grad, size, chunks)
        elif kind == 1:
            entries[fqn] = None
        else:
            d.fail(f"entry '{fqn}' of unknown kind {kind}")
    files = [d.str() for _ in range(d.count("file"))]
    items = {}
    for _ in range(d.count("item")):
        fqn = d.str()
        offsets = d.ints()
        file_no = d.varint()
        if file_no >= len(files):
            d.fail(f"item '{fqn}' names file number {file_no} of {len(files)}")
        offset, length = d.varint(), d.varint()
        ctype = d.u8()
        value = d.u64()
        items[(fqn, offsets)] = Item(
            fqn, offsets, files[file_no], offset, length, value if ctype == 1 else None
        )
    if not d.done():
        d.fail("trailing bytes after the items")
    for fqn, entry in entries.items():
        if entry is None:
            continue
        for chunk in entry.chunks:
            item = items.get((fqn, tuple(chunk.offsets)))
            if item is not None:
                item.dtype, item.sizes = entry.dtype, tuple(chunk.sizes)
    return Metadata(
        path,
        library_version,
        world_size,
        checkpoint_id,
        save_id,
        entries,
        items,
        _parse_mapping(planner_data, source),
    )


def read_item(path: str, item: Item, *, verify: bool = True) -> bytes:
    """The bytes of one item of the checkpoint at `path`, checked against its
    checksum."""
    file = os.path.join(path, item.file)
    what = f"'{item.fqn}'" + (f" chunk at {list(item.offsets)}" if item.offsets else "")
    with open(file, "rb") as f:
        f.seek(item.offset)
        data = f.read(item.length)
    if len(data) != item.length:
        raise CorruptCheckpointError(
            f"{file}: item {what} at offset {item.offset} needs {item.length} bytes, "
            f"the file ends {len(data)} bytes in"
        )
    if verify and item.checksum is not None:
        got = _xxh3(data)
        if got is not None and got != item.checksum:
            raise CorruptCheckpointError(f"{file}: checksum mismatch in item {what}")
    return data


def item_tensor(path: str, item: Item, *, verify: bool = True) -> torch.Tensor:
    """The elements of one saved tensor chunk, shaped as the chunk."""
    data = read_item(path, item, verify=verify)
    dtype = _torch_dtype(item.dtype)
    numel = 1
    for s in item.sizes:
        numel *= s
    elsize = torch.empty((), dtype=dtype).element_size()
    if len(data) != numel * elsize:
        raise CorruptCheckpointError(
            f"{os.path.join(path, item.file)}: item '{item.fqn}' has {len(data)} bytes, its "
            f"chunk {list(item.sizes)} of {item.dtype} needs {numel * elsize}"
        )
    if numel == 0:
        return torch.empty(item.sizes, dtype=dtype)
    return torch.frombuffer(bytearray(data), dtype=dtype).reshape(item.sizes)


def chunk_tensor(md: Metadata, fqn: str, chunk: Chunk, *, verify: bool = True) -> torch.Tensor:
    """The elements of one saved chunk of tensor `fqn`, shaped as the chunk."""
    item = md.items.get((fqn, tuple(chunk.offsets)))
    if item is None:
        raise CorruptCheckpointError(
            f"{md.path}: no item for '{fqn}' chunk at {list(chunk.offsets)}"
        )
    return item_tensor(md.path, item, verify=verify)


def decode_plain_value(data: bytes, what: str) -> Any:
    """A plain value as dcp++ stores it (0xD1, then a tagged value)."""
    d = _Decoder(data, what)
    if d.u8() != PLAIN_MARKER:
        d.fail("not a dcp++ plain value (first byte)")

    def value(depth=0):
        if depth > 1000:
            d.fail("values nested more than 1000 deep")
        tag = d.u8()
        if tag == 0:
            return None
        if tag in (1, 2):
            return tag == 2
        if tag == 3:
            return d.svarint()
        if tag == 4:
            return d.f64()
        if tag == 5:
            return d.str()
        if tag == 6:
            return d.bytes()
        if tag == 7:
            return [value(depth + 1) for _ in range(d.count("element"))]
        if tag == 8:
            out = {}
            for _ in range(d.count("entry")):
                k = d.str()
                out[k] = value(depth + 1)
            return out
        d.fail(f"unknown value tag {tag}")

    v = value()
    if not d.done():
        d.fail("trailing bytes after the value")
    return v


def item_value(path: str, item: Item, *, verify: bool = True) -> Any:
    """The plain value one item holds."""
    return decode_plain_value(
        read_item(path, item, verify=verify),
        f"{os.path.join(path, item.file)}: value '{item.fqn}'",
    )


def read_value(md: Metadata, fqn: str, *, verify: bool = True) -> Any:
    item = md.items.get((fqn, ()))
    if item is None:
        raise CorruptCheckpointError(f"{md.path}: no item for value '{fqn}'")
    return item_value(md.path, item, verify=verify)


def full_tensor(md: Metadata, fqn: str, *, verify: bool = True) -> torch.Tensor:
    """Tensor `fqn` whole, assembled from its saved chunks."""
    entry = md.entries[fqn]
    out = torch.empty(entry.size, dtype=entry.torch_dtype)
    for chunk in entry.chunks:
        src = chunk_tensor(md, fqn, chunk, verify=verify)
        dst = out
        for dim, (o, s) in enumerate(zip(chunk.offsets, chunk.sizes)):
            dst = dst.narrow(dim, o, s)
        dst.copy_(src)
    if entry.requires_grad and out.is_floating_point():
        out.requires_grad_(True)
    return out


def unflatten(flat: Dict[str, Any], mapping: Dict[str, List[Any]]) -> Dict[str, Any]:
    """The nested state dict: each flat key placed at its path (dict keys and
    list indices); keys without a path stay at the top."""
    root: Dict[str, Any] = {}
    list_nodes = []
    for key, value in flat.items():
        path = mapping.get(key, [key])
        node = root
        for i, step in enumerate(path):
            last = i == len(path) - 1
            if last:
                node[step] = value
                break
            nxt = path[i + 1]
            if step not in node:
                node[step] = {}
                if isinstance(nxt, int):
                    list_nodes.append((node, step))
            node = node[step]

    # Lists were built as dicts of indices; turn them into lists, deepest first.
    for parent, step in reversed(list_nodes):
        d = parent[step]
        parent[step] = [d[i] for i in sorted(d)]
    return root


def load(path: str, *, verify: bool = True) -> Dict[str, Any]:
    """The whole checkpoint at `path` as the nested state dict it was saved
    from: tensors (CPU, whole: chunks of every rank assembled) and plain
    values (None, bool, int, float, str, bytes, lists and dicts of them)."""
    md = read_metadata(path, verify=verify)
    flat = {}
    for fqn, entry in md.entries.items():
        flat[fqn] = (
            read_value(md, fqn, verify=verify)
            if entry is None
            else full_tensor(md, fqn, verify=verify)
        )
    return unflatten(flat, md.mapping)
