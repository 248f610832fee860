"""Imports the DCP of Debian's torch 1.13 (torch.distributed._shard.checkpoint)
on Python 3.11 and newer.

As shipped, 1.13's `torch.distributed._shard.sharded_tensor.metadata` declares

    tensor_properties: TensorProperties = field(default=TensorProperties())

and TensorProperties is a dataclass with eq=True, hence unhashable. Python 3.11
refuses any unhashable default ("mutable default ... use default_factory"),
so importing `torch.distributed._shard` (and with it the checkpoint package)
raises ValueError. Python 3.10 and older only refused list/dict/set.

The workaround: while that package is imported (and only then),
dataclasses turns an unhashable default into a default_factory returning that
same object. Every instance then shares the default, exactly as on Python
3.10, so nothing that is pickled or saved changes: the file format is the
one 1.13 writes on any Python.

dcpp's StorageReader imports 1.13's DCP through import_dcp(); so do the
project's fixture and benchmark scripts (tests/interop/py/dcp113_compat.py).
"""

import contextlib
import dataclasses
import importlib
import sys

_DCP_MODULE = "torch.distributed._shard.checkpoint"


def _unhashable(value):
    return type(value).__hash__ is None


@contextlib.contextmanager
def _unhashable_defaults_as_factories():
    original = dataclasses._get_field

    def get_field(cls, a_name, *args, **kwargs):
        default = cls.__dict__.get(a_name, dataclasses.MISSING)
        if isinstance(default, dataclasses.Field):
            if default.default is not dataclasses.MISSING and _unhashable(default.default):
                value = default.default
                default.default = dataclasses.MISSING
                default.default_factory = lambda value=value: value
        elif default is not dataclasses.MISSING and _unhashable(default) and not callable(default):
            setattr(cls, a_name, dataclasses.field(default_factory=lambda value=default: value))
        return original(cls, a_name, *args, **kwargs)

    dataclasses._get_field = get_field
    try:
        yield
    finally:
        dataclasses._get_field = original


def import_dcp():
    """Returns torch.distributed._shard.checkpoint (torch 1.13's DCP)."""
    if _DCP_MODULE in sys.modules:
        return sys.modules[_DCP_MODULE]
    with _unhashable_defaults_as_factories():
        # The sharded-tensor package is the one with the offending field; the
        # checkpoint package imports it, and so do users of ShardedTensor.
        importlib.import_module("torch.distributed._shard.sharded_tensor")
        return importlib.import_module(_DCP_MODULE)


def import_sharded_tensor():
    """Returns torch.distributed._shard.sharded_tensor (after import_dcp())."""
    import_dcp()
    return sys.modules["torch.distributed._shard.sharded_tensor"]


def import_any_dcp():
    """(module, flavour): torch.distributed.checkpoint and "2" on torch 2.x,
    torch.distributed._shard.checkpoint and "1.13" on torch 1.13."""
    try:
        mod = importlib.import_module("torch.distributed.checkpoint")
        if hasattr(mod, "FileSystemReader"):
            return mod, "2"
    except ImportError:
        pass
    return import_dcp(), "1.13"
