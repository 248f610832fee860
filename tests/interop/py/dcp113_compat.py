"""Imports the DCP of Debian's torch 1.13 (torch.distributed._shard.checkpoint)
on Python 3.11 and newer: the workaround lives in dcpp's package
(integrations/python/dcpp/_compat.py, which says why it is needed); this
module gives the fixture and benchmark scripts its functions.
"""

import os
import sys

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "integrations", "python")
)

from dcpp._compat import import_dcp, import_sharded_tensor  # noqa: E402,F401
