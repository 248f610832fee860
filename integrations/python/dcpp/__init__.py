"""dcpp: read dcp++ checkpoints from Python, with nothing but torch.

dcp++ (https://.../dcp++, the C++ library) writes a checkpoint as a directory:
`.metadata` (a small binary index, docs/FORMAT.md) and `__<rank>_<n>.distcp`
data files holding each item's raw bytes. This package reads that format in
pure Python:

    import dcpp
    sd = dcpp.load("/ckpts/step_0000001000")      # the nested state dict
    model.load_state_dict(sd["model"])

    # Or through torch.distributed.checkpoint, resharded into whatever the
    # destination state dict holds (torch 1.13's and 2.x's DCP):
    import torch.distributed.checkpoint as dist_cp
    dist_cp.load(state_dict, storage_reader=dcpp.StorageReader(path))  # 2.x
    dist_cp.load_state_dict(state_dict, dcpp.StorageReader(path))      # 1.13

Checksums (XXH3-64 of the metadata and of every item) are verified with the
`xxhash` module (Debian: python3-xxhash) when it is importable; without it a
warning says they are not.
"""

from ._format import (  # noqa: F401
    CorruptCheckpointError,
    Metadata,
    TensorEntry,
    Chunk,
    Item,
    read_metadata,
    load,
)


def __getattr__(name):
    # dcpp.StorageReader subclasses the installed torch's DCP StorageReader;
    # it is made on first use so that `import dcpp` does not import DCP.
    if name == "StorageReader":
        from ._dcp import storage_reader_class

        return storage_reader_class()
    raise AttributeError(f"module 'dcpp' has no attribute '{name}'")


__all__ = [
    "CorruptCheckpointError",
    "Metadata",
    "TensorEntry",
    "Chunk",
    "Item",
    "read_metadata",
    "load",
    "StorageReader",
]
