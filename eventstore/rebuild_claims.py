"""Projection rebuilds as the store sees them: whether a rebuild's claim still stands in a prune's way.

``projections`` claims a rebuild with a lease row in ``projection_checkpoints``
(``<projection>#rebuild``, kind ``lock``) and, where it can, holds a lock
that dies with its process (``process_locks``, kind ``rebuild``) for as long
as the claim is its own, marking the claim so. Retention and restore must
not change the log under a live rebuild (``refuse_during_rebuild``); a
claim marked so whose lock nobody holds is a dead rebuild's, and is no
reason to wait out its lease. ``eventstore`` never imports ``projections``:
``projections`` takes the claim's layout from here.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from . import process_locks
from .errors import RebuildInProgress
from .integrity import format_time
from .schema import projection_checkpoints
from .store import EventStore

REBUILD_CLAIM = "#rebuild"
"""The suffix of a rebuild's claim in ``projection_checkpoints`` (kind ``lock``; ``updated_at``
is when its lease expires, ``build`` the rebuild's tag, ``position`` how many events it had folded
when it last renewed the claim): the row ``<projection>#rebuild``."""
LOCKED = 1
"""A claim's ``version`` when its holder took the projection's rebuild lock first and holds it
until the claim is given up; 0 for a claim only its lease keeps."""
LOCK_KIND = "rebuild"
"""The kind of the rebuild locks in ``process_locks``; each is named for its projection."""


def refuse_during_rebuild(
    store: EventStore, conn: sa.Connection, action: str, *, only: str | None = None
) -> None:
    """Raise ``RebuildInProgress`` if a projection rebuild holds an unexpired claim and may be alive
    (with ``only``, a rebuild of that projection).

    A rebuild folds the log into fresh tables that pruners never see, then
    swaps them in: pruning meanwhile would bring the pruned flows back into
    the read model. Checked under the append lock, which a rebuild also
    takes to claim and to swap, so a rebuild claimed after this check reads
    the log without the pruned flows.

    A claim made with the rebuild lock, whose lock nobody holds, is ignored
    (and left for the next rebuild to take over): its holder let the lock
    go, which it does only once it has given the claim up, or by dying. It
    reads nothing more. A rebuild taking the lock meanwhile has not claimed
    yet, and cannot until this transaction ends.
    """
    c = projection_checkpoints.c
    which = c.name.endswith(REBUILD_CLAIM) if only is None else c.name == only + REBUILD_CLAIM
    claims = conn.execute(
        sa.select(c.name, c.updated_at, c.version)
        .where(c.kind == "lock", which, c.updated_at > format_time(store.clock()))
        .order_by(c.name)
    ).all()
    live = [
        (name.removesuffix(REBUILD_CLAIM), expiry)
        for name, expiry, version in claims
        if version != LOCKED or process_locks.held(conn, LOCK_KIND, name.removesuffix(REBUILD_CLAIM))
    ]
    if live:
        until = max(datetime.fromisoformat(expiry) for _, expiry in live)
        raise RebuildInProgress(action, [name for name, _ in live], until)
