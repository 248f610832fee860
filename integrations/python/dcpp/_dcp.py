"""A torch.distributed.checkpoint StorageReader over dcp++'s native format:
DCP's planners decide what to read (resharding into whatever the destination
state dict holds); this reader finds the bytes. Works with torch 2.x's DCP
(set_up_storage_reader, reset, validate_checkpoint_id) and 1.13's
(torch.distributed._shard.checkpoint: init)."""

import io
import os
from typing import Any, List, Optional

import torch

from . import _format
from ._compat import import_any_dcp

_CLASS = None


def _metadata_module(flavour):
    import importlib

    if flavour == "2":
        return importlib.import_module("torch.distributed.checkpoint.metadata"), importlib.import_module(
            "torch.distributed.checkpoint.metadata"
        )
    return (
        importlib.import_module("torch.distributed._shard.checkpoint.metadata"),
        importlib.import_module("torch.distributed._shard.sharded_tensor.metadata"),
    )


def _build_class():
    dcp, flavour = import_any_dcp()
    md_mod, props_mod = _metadata_module(flavour)
    import importlib

    planner_mod = importlib.import_module(dcp.__name__ + ".planner")
    LoadItemType = planner_mod.LoadItemType
    Future = torch.futures.Future

    def to_torch_metadata(md: _format.Metadata):
        sdm = {}
        storage = {}
        for fqn, entry in md.entries.items():
            if entry is None:
                sdm[fqn] = md_mod.BytesStorageMetadata()
                storage[md_mod.MetadataIndex(fqn)] = md.items.get((fqn, ()))
                continue
            props = props_mod.TensorProperties(
                dtype=entry.torch_dtype, requires_grad=entry.requires_grad
            )
            chunks = [
                md_mod.ChunkStorageMetadata(
                    offsets=torch.Size(c.offsets), sizes=torch.Size(c.sizes)
                )
                for c in entry.chunks
            ]
            sdm[fqn] = md_mod.TensorStorageMetadata(
                properties=props, size=torch.Size(entry.size), chunks=chunks
            )
            for i, c in enumerate(entry.chunks):
                storage[md_mod.MetadataIndex(fqn, torch.Size(c.offsets), i)] = md.items.get(
                    (fqn, tuple(c.offsets))
                )
        planner_data = (
            {k: tuple(p) for k, p in md.mapping.items()} if flavour == "2" else None
        )
        return md_mod.Metadata(
            state_dict_metadata=sdm, planner_data=planner_data, storage_data=storage
        )

    class StorageReader(dcp.StorageReader):
        """Reads the dcp++ checkpoint at `path` for torch.distributed.checkpoint.
        `verify`: check every item's XXH3-64 (needs the xxhash module)."""

        def __init__(self, path: Optional[str] = None, *, verify: bool = True) -> None:
            super().__init__()
            self.path = os.fspath(path) if path is not None else None
            self.verify = verify
            self.storage_data = None

        # torch 2.x
        def reset(self, checkpoint_id=None) -> None:
            if checkpoint_id is not None:
                self.path = os.fspath(checkpoint_id)
            self.storage_data = None

        @classmethod
        def validate_checkpoint_id(cls, checkpoint_id) -> bool:
            try:
                return os.path.isfile(os.path.join(os.fspath(checkpoint_id), _format.METADATA_FILE))
            except TypeError:
                return False

        def read_metadata(self):
            return to_torch_metadata(_format.read_metadata(self.path, verify=self.verify))

        def set_up_storage_reader(self, metadata, is_coordinator: bool) -> None:
            self.storage_data = metadata.storage_data

        # torch 1.13
        def init(self, metadata, is_coordinator: bool) -> None:
            self.set_up_storage_reader(metadata, is_coordinator)

        def prepare_local_plan(self, plan):
            return plan

        def prepare_global_plan(self, plans: List[Any]):
            return plans

        def _item(self, read_item) -> _format.Item:
            item = self.storage_data.get(read_item.storage_index)
            if item is None:
                raise _format.CorruptCheckpointError(
                    f"{self.path}: the metadata has no item for {read_item.storage_index}"
                )
            return item

        def read_data(self, plan, planner):
            # Each saved chunk is read once, however many requests it serves.
            by_item = {}
            for req in plan.items:
                item = self._item(req)
                by_item.setdefault((item.file, item.offset), (item, []))[1].append(req)
            for _, (item, reqs) in sorted(by_item.items()):
                if reqs[0].type == LoadItemType.BYTE_IO:
                    value = _format.item_value(self.path, item, verify=self.verify)
                    for req in reqs:
                        buf = io.BytesIO()
                        torch.save(value, buf)
                        buf.seek(0)
                        planner.load_bytes(req, buf)
                    continue
                src = _format.item_tensor(self.path, item, verify=self.verify)
                for req in reqs:
                    part = src
                    for dim, (o, n) in enumerate(zip(req.storage_offsets, req.lengths)):
                        part = part.narrow(dim, o, n)
                    target = planner.resolve_tensor(req).detach()
                    if target.size() != part.size():
                        raise _format.CorruptCheckpointError(
                            f"{self.path}: {req.storage_index} gives {list(part.size())}, "
                            f"the destination wants {list(target.size())}"
                        )
                    target.copy_(part)
                    planner.commit_tensor(req, target)
            fut = Future()
            fut.set_result(None)
            return fut

    StorageReader.__module__ = "dcpp"
    StorageReader.flavour = flavour
    return StorageReader


def storage_reader_class():
    """The StorageReader class (made on first use: it subclasses the DCP of
    the torch that is installed, and importing that takes a moment)."""
    global _CLASS
    if _CLASS is None:
        _CLASS = _build_class()
    return _CLASS
