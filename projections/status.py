"""Where each projection of a store stands: its version, how far it has folded the log, and
whether a rebuild of it is under way (``eventstore projections``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from eventstore import EventStore
from eventstore.integrity import format_time
from eventstore.rebuild_claims import REBUILD_CLAIM
from eventstore.schema import projection_checkpoints as checkpoints

from .checkpoints import INLINE


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    """A projection built in the store, as its checkpoint row records it.

    ``position`` is the last position a catch-up projection applied, and ``behind`` how many
    events of the log come after it (what its next runs will apply); an inline projection is
    folded in each append's transaction, so it has no position of its own and is never behind.
    ``updated_at`` is when its row was last written: a batch applied, a build swapped in.
    ``rebuilding_until`` is when the lease of a rebuild under way runs out (renewed every batch);
    None when no rebuild holds one.
    """

    name: str
    kind: str
    version: int
    position: int | None
    behind: int
    updated_at: datetime
    rebuilding_until: datetime | None


def projection_statuses(store: EventStore) -> list[ProjectionStatus]:
    """Every projection built in ``store`` (inline and catch-up), by name."""
    with store.reading() as conn:
        head = int(conn.exec_driver_sql("SELECT last_position FROM event_positions").scalar_one())
        rows = conn.execute(sa.select(checkpoints).order_by(checkpoints.c.name)).all()
    now = format_time(store.clock())
    claims = {
        row.name.removesuffix(REBUILD_CLAIM): row.updated_at
        for row in rows
        if row.name.endswith(REBUILD_CLAIM) and row.updated_at > now  # a lease that ran out holds nothing
    }
    statuses = []
    for row in rows:
        if row.name.endswith(REBUILD_CLAIM) or row.kind == "lock":
            continue
        inline = row.kind == INLINE
        claim = claims.get(row.name)
        statuses.append(
            ProjectionStatus(
                name=row.name,
                kind=row.kind,
                version=row.version,
                position=None if inline else row.position,
                behind=0 if inline else max(0, head - row.position),
                updated_at=datetime.fromisoformat(row.updated_at),
                rebuilding_until=None if claim is None else datetime.fromisoformat(claim),
            )
        )
    return statuses
