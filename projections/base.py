"""Where the projection machinery lived before it was split: its public names, for imports written then.

The machinery is in modules named for their ideas: ``declaration``
(``Projection``), ``checkpoints`` (the checkpoint table and rebuild claims),
``rebuilding`` (``ensure``, ``rebuild``), ``swap`` (a rebuild's swap),
``folding`` (batches of the log folded into tables), ``catchup``
(``CatchUpRunner``).
"""

from .catchup import CatchUpRunner
from .checkpoints import (
    INLINE,
    REBUILD_LEASE,
    Checkpoint,
    hold_appends,
    lock_appends,
    read_checkpoint,
    store_has_events,
    write_checkpoint,
)
from .declaration import Projection
from .rebuilding import SOLE_WRITER, Progress, ensure, rebuild

__all__ = [
    "INLINE",
    "REBUILD_LEASE",
    "SOLE_WRITER",
    "CatchUpRunner",
    "Checkpoint",
    "Progress",
    "Projection",
    "ensure",
    "hold_appends",
    "lock_appends",
    "read_checkpoint",
    "rebuild",
    "store_has_events",
    "write_checkpoint",
]
