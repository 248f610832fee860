"""Stand-ins for the classes torch 2.x DCP pickles into `.metadata`, so that
CPython's own pickler (with no torch 2.x installed) writes the stream a 2.x
FileSystemWriter writes. See docs interop.md §1.2 (shared research notes).

What each stand-in copies from 2.x (`torch/distributed/checkpoint/metadata.py`
and `filesystem.py`, trunk): the module path and class name the pickle names,
the field order (the instance __dict__ is the BUILD state, in insertion
order) and the pickling hooks:

  Metadata               dict {state_dict_metadata, planner_data, storage_data,
                         storage_meta, version}
  TensorStorageMetadata  dict {properties, size, chunks}
  ChunkStorageMetadata   dict {offsets, sizes}
  BytesStorageMetadata   no fields: NEWOBJ with no BUILD
  MetadataIndex          frozen, own __init__: dict {fqn, index[, offset]}, offset
                         only when given (so BYTE_IO keys are {fqn, index: None})
  TensorProperties       __getstate__ -> 5-tuple (dtype, layout, requires_grad,
                         _MEM_FORMAT_ENCODING member, pin_memory)
  StorageMeta            dict {checkpoint_id, save_id, load_id, modules}
  _StorageInfo           (filesystem module) __getstate__ drops None fields, so
                         transform_descriptors appears only when set

torch.Size, the dtypes and torch.strided are the real objects of the torch
1.13 running this: their pickling is the C code 2.x has too (REDUCE(torch.Size,
(tuple,)), bare globals torch.float32 ..., REDUCE(torch.serialization.
_get_layout, ("torch.strided",))). checkpoint_id is a pathlib.PosixPath, as
2.x's FileSystem.init_path makes it.

install() registers the modules torch.distributed.checkpoint{,.metadata,
.filesystem} in sys.modules. torch 1.13 has no torch.distributed.checkpoint
(its DCP is torch.distributed._shard.checkpoint), so nothing real is shadowed;
install() checks that.
"""

import enum
import importlib.util
import sys
import types
from dataclasses import dataclass, field
from typing import Any, List, Optional

import torch

PACKAGE = "torch.distributed.checkpoint"
METADATA_MODULE = PACKAGE + ".metadata"
FILESYSTEM_MODULE = PACKAGE + ".filesystem"


class _MEM_FORMAT_ENCODING(enum.Enum):
    TORCH_CONTIGUOUS_FORMAT = 0
    TORCH_CHANNELS_LAST = 1
    TORCH_PRESERVE_FORMAT = 2


@dataclass
class ChunkStorageMetadata:
    offsets: torch.Size
    sizes: torch.Size


@dataclass
class TensorProperties:
    dtype: torch.dtype = field(default_factory=torch.get_default_dtype)
    layout: torch.layout = field(default=torch.strided)
    requires_grad: bool = False
    memory_format: torch.memory_format = field(default=torch.contiguous_format)
    pin_memory: bool = False

    def __getstate__(self):
        if self.memory_format == torch.contiguous_format:
            encoding = _MEM_FORMAT_ENCODING.TORCH_CONTIGUOUS_FORMAT
        elif self.memory_format == torch.channels_last:
            encoding = _MEM_FORMAT_ENCODING.TORCH_CHANNELS_LAST
        elif self.memory_format == torch.preserve_format:
            encoding = _MEM_FORMAT_ENCODING.TORCH_PRESERVE_FORMAT
        else:
            raise RuntimeError(f"Invalid torch.memory_format: {self.memory_format}")
        return (self.dtype, self.layout, self.requires_grad, encoding, self.pin_memory)

    def __setstate__(self, state):
        (self.dtype, self.layout, self.requires_grad, encoding, self.pin_memory) = state
        formats = {
            _MEM_FORMAT_ENCODING.TORCH_CONTIGUOUS_FORMAT: torch.contiguous_format,
            _MEM_FORMAT_ENCODING.TORCH_CHANNELS_LAST: torch.channels_last,
            _MEM_FORMAT_ENCODING.TORCH_PRESERVE_FORMAT: torch.preserve_format,
        }
        if encoding not in formats:
            raise RuntimeError(f"Invalid torch.memory_format encoding: {encoding}")
        self.memory_format = formats[encoding]


@dataclass
class TensorStorageMetadata:
    properties: TensorProperties
    size: torch.Size
    chunks: List[ChunkStorageMetadata]


@dataclass
class BytesStorageMetadata:
    pass


@dataclass(frozen=True)
class MetadataIndex:
    fqn: str
    offset: Optional[torch.Size] = None
    index: Optional[int] = field(hash=False, compare=False, default=None)

    def __init__(self, fqn, offset=None, index=None):
        object.__setattr__(self, "fqn", fqn)
        object.__setattr__(self, "index", index)
        if offset is not None:
            object.__setattr__(self, "offset", torch.Size(offset))


@dataclass
class StorageMeta:
    checkpoint_id: Any = None
    save_id: Optional[str] = None
    load_id: Optional[str] = None
    modules: List[str] = field(default_factory=list)


@dataclass
class Metadata:
    state_dict_metadata: dict
    planner_data: Any = None
    storage_data: Any = None
    storage_meta: Optional[StorageMeta] = None
    version: Optional[str] = None


@dataclass
class _StorageInfo:
    relative_path: str
    offset: int
    length: int
    transform_descriptors: Optional[List[str]] = None

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if v is not None}


_METADATA_CLASSES = (
    _MEM_FORMAT_ENCODING,
    ChunkStorageMetadata,
    TensorProperties,
    TensorStorageMetadata,
    BytesStorageMetadata,
    MetadataIndex,
    StorageMeta,
    Metadata,
)


def _enum_by_value(self, proto):
    return self.__class__, (self._value_,)


def _enum_by_name(self, proto):
    return getattr, (self.__class__, self._name_)


def set_enum_pickling(style):
    """How _MEM_FORMAT_ENCODING members pickle (either way, whatever this
    interpreter's Enum does):

    "value": REDUCE(_MEM_FORMAT_ENCODING, (0,)), what CPython's Enum writes on
             3.6-3.10, 3.11.7, 3.12 and 3.13 (checked with pyenv's builds here).
    "name":  REDUCE(builtins.getattr, (_MEM_FORMAT_ENCODING, "TORCH_CONTIGUOUS_FORMAT")),
             what Debian 12's CPython 3.11.2 writes (early 3.11 releases
             pickled Enum members by name), so also what torch 1.13's DCP
             writes for MEM_FORMAT_ENCODING on this machine.
    """
    if style == "value":
        _MEM_FORMAT_ENCODING.__reduce_ex__ = _enum_by_value
    elif style == "name":
        _MEM_FORMAT_ENCODING.__reduce_ex__ = _enum_by_name
    else:
        raise ValueError(f"unknown enum pickling style {style!r}")


def install():
    """Registers the stand-in modules (once) and returns the metadata module."""
    existing = sys.modules.get(METADATA_MODULE)
    if existing is not None:
        if getattr(existing, "_dcp2_standin", False):
            return existing
        raise RuntimeError(f"{METADATA_MODULE} is already imported and is not the stand-in")
    if importlib.util.find_spec(PACKAGE) is not None:
        raise RuntimeError(f"this torch ({torch.__version__}) has a real {PACKAGE}: "
                           "the stand-ins would shadow it")

    package = types.ModuleType(PACKAGE)
    package.__path__ = []
    metadata = types.ModuleType(METADATA_MODULE)
    metadata._dcp2_standin = True
    filesystem = types.ModuleType(FILESYSTEM_MODULE)
    filesystem._dcp2_standin = True
    for cls in _METADATA_CLASSES:
        cls.__module__ = METADATA_MODULE
        setattr(metadata, cls.__name__, cls)
    _StorageInfo.__module__ = FILESYSTEM_MODULE
    filesystem._StorageInfo = _StorageInfo
    package.metadata = metadata
    package.filesystem = filesystem

    sys.modules[PACKAGE] = package
    sys.modules[METADATA_MODULE] = metadata
    sys.modules[FILESYSTEM_MODULE] = filesystem
    import torch.distributed  # noqa: F401  (the parent package must exist)
    torch.distributed.checkpoint = package
    set_enum_pickling("value")
    return metadata

