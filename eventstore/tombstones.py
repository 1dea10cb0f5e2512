"""The error for a flow that has no events: unknown, or pruned by retention.

Retention leaves a tombstone (``flow_tombstones``) for each flow it prunes,
naming the archive that holds its events. A read of such a flow says so
(``FlowArchived``, with the archive to restore it from) instead of calling
the flow unknown.
"""

from __future__ import annotations

import sqlalchemy as sa

from .errors import FlowArchived, FlowNotFound
from .schema import flow_tombstones
from .store import EventStore


def flow_not_found(store: EventStore, flow_id: str) -> FlowNotFound:
    """``FlowArchived`` if retention pruned ``flow_id``, else ``FlowNotFound``.

    Asked only once the flow's head is 0, so reads of a flow that exists never pay for it.
    """
    t = flow_tombstones.c
    rows = store._fetch(sa.select(t.archive_id, t.last_revision).where(t.flow_id == flow_id))
    if rows:
        archive_id, last_revision = rows[0]
        return FlowArchived(flow_id, archive_id, last_revision=last_revision)
    return FlowNotFound(flow_id)


def pruned_into(conn: sa.Connection, flow_id: str) -> str | None:
    """The archive retention pruned ``flow_id`` into (it stays so until a restore finishes), else None.

    Read on ``conn``, so a command can ask inside its own transaction.
    """
    t = flow_tombstones.c
    archive_id: str | None = conn.execute(sa.select(t.archive_id).where(t.flow_id == flow_id)).scalar()
    return archive_id
