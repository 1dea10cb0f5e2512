"""The checkpoint table (``projection_checkpoints``): where each projection stands, and rebuild claims.

A projection's row records its version, kind (inline or catch-up), the log
position it has folded up to, and the tag of the build whose tables are live.
A rebuild claims a projection with a row of its own, a lease it renews every
batch. A checkpoint is taken against the log's head under the append lock
(``lock_appends``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa

from eventstore import EventStore, Transaction, reconnecting
from eventstore.backends.base import counter_missing
from eventstore.errors import (
    ProjectionError,
)
from eventstore.integrity import format_time
from eventstore.rebuild_claims import LOCKED, REBUILD_CLAIM
from eventstore.schema import projection_checkpoints as checkpoints

from .rowio import run

if TYPE_CHECKING:
    from .declaration import Projection


@dataclass(frozen=True, slots=True)
class Checkpoint:
    name: str
    kind: str
    version: int
    position: int
    build: str


def read_checkpoint(conn: sa.Connection, name: str, *, lock: bool = False) -> Checkpoint | None:
    query = sa.select(checkpoints).where(checkpoints.c.name == name)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        return None
    return Checkpoint(row.name, row.kind, row.version, row.position, row.build)


def write_checkpoint(
    store: EventStore,
    conn: sa.Connection,
    projection: Projection,
    *,
    position: int,
    build: str,
    kind: str | None = None,
) -> None:
    values = {
        "kind": kind or projection.kind,
        "version": projection.version,
        "position": position,
        "build": build,
        "updated_at": format_time(store.clock()),
    }
    updated = conn.execute(checkpoints.update().where(checkpoints.c.name == projection.name).values(**values))
    if updated.rowcount == 0:
        conn.execute(checkpoints.insert().values(name=projection.name, **values))


def lock_appends(conn: sa.Connection) -> int:
    """Stop appends until this transaction ends; the last position (SQLite's write lock is already held)."""
    query = "SELECT last_position FROM event_positions WHERE id = 1"
    if conn.dialect.name == "postgresql":
        query += " FOR UPDATE"
    last = conn.exec_driver_sql(query).scalar_one_or_none()
    if last is None:
        raise counter_missing("the read models cannot be checked against the log")
    return int(last)


def hold_appends(conn: sa.Connection) -> None:
    """``lock_appends`` without reading the position: nothing to do on SQLite, whose
    write transactions already exclude each other.

    As a transaction's first statement (``reconnecting.transaction``) it finds a
    dead connection as ``SELECT 1`` would: its driver error invalidates the
    connection and the pool's older ones (``driver_error``), so the retry is live.
    """
    if conn.dialect.name == "postgresql":
        run(conn, "SELECT last_position FROM event_positions WHERE id = 1 FOR UPDATE", None)


RETIRED = "#retired"
"""The suffix of the row ``<projection>#retired`` (kind ``retired``; ``updated_at`` when it was
retired) that ``projections.retire`` leaves: code still folding the projection is refused rather
than build it again unasked, until a rebuild builds it again on purpose (and deletes the row)."""
RETIRED_KIND = "retired"


def retired_at(conn: sa.Connection, name: str) -> datetime | None:
    """When the projection ``name`` was retired, if it was and has not been rebuilt since."""
    query = sa.select(checkpoints.c.updated_at).where(
        checkpoints.c.name == name + RETIRED, checkpoints.c.kind == RETIRED_KIND
    )
    found = conn.execute(query).scalar()
    return None if found is None else datetime.fromisoformat(found)


def forget_retirement(conn: sa.Connection, name: str) -> None:
    """A rebuild built the projection ``name`` again: it is no longer retired."""
    conn.execute(checkpoints.delete().where(checkpoints.c.name == name + RETIRED))


INLINE = "inline"
"""A checkpoint's kind when appends fold the projection: its position stays where it was built."""


def newer_version(projection: Projection, current: Checkpoint) -> ProjectionError:
    """Code older than the read model's tables (a rolling deploy's old process, a rollback) must not
    rebuild them back on its own: the newer code would rebuild them again at its next open."""
    return ProjectionError(
        f"projection {projection.name!r} in this store was built by version {current.version}, newer than "
        f"this code's {projection.version}: stop this process and restart it on the newer code; nothing "
        f"was written. To go back to version {projection.version}, only an operator, on purpose, rebuilds "
        f"it with the older code (`eventstore rebuild`, or projections.rebuild): that replaces version "
        f"{current.version}'s read model for every process"
    )


def store_has_events(conn: sa.Connection) -> bool:
    return int(conn.exec_driver_sql("SELECT last_position FROM event_positions").scalar_one()) > 0


REBUILD_LEASE = timedelta(minutes=2)
"""How long a rebuild's claim lasts without renewal (it renews every batch)."""


def rebuild_lock(projection: Projection) -> str:
    return projection.name + REBUILD_CLAIM


def claimed_live(store: EventStore, projection: Projection) -> bool:
    """Whether another rebuild's claim of ``projection`` runs, read without the append lock.

    For a rebuild that could not take the rebuild lock (a live one holds it):
    ``claim`` would refuse it for that claim, but only once it had the append
    lock, which a SQLite rebuild's batches hold back to back.
    """
    with reconnecting.reading(store) as conn:
        until = conn.execute(
            sa.select(checkpoints.c.updated_at).where(checkpoints.c.name == rebuild_lock(projection))
        ).scalar_one_or_none()
    return until is not None and until > format_time(store.clock())


def claim(store: EventStore, projection: Projection, tag: str, *, locked: bool = False) -> bool:
    """Claim the right to rebuild ``projection``: one rebuild at a time, across processes.

    The claim is a lease row in ``projection_checkpoints`` that expires, so a
    rebuild that died does not block the next one for longer than the lease.
    ``locked``: the caller holds the projection's rebuild lock (``rebuild_locks``).
    Then a claim whose holder held that lock too is taken over at once, lease
    or not: its holder let the lock go, so it died (or gave the claim up and
    could not delete it).
    """
    name = rebuild_lock(projection)
    with reconnecting.transaction(store, lock_appends) as tx:
        conn = tx.connection
        row = conn.execute(
            sa.select(checkpoints.c.build, checkpoints.c.updated_at, checkpoints.c.version).where(
                checkpoints.c.name == name
            )
        ).first()
        now = store.clock()
        dead = locked and row is not None and row.version == LOCKED  # its holder let the lock go
        if row is not None and row.build != tag and row.updated_at > format_time(now) and not dead:
            return False  # a live holder, or one only its lease tells of
        values = {
            "kind": "lock",
            "version": LOCKED if locked else 0,
            "position": 0,
            "build": tag,
            "updated_at": format_time(now + REBUILD_LEASE),
        }
        if row is None:
            conn.execute(checkpoints.insert().values(name=name, **values))
        else:
            conn.execute(checkpoints.update().where(checkpoints.c.name == name).values(**values))
    return True


def renew(
    store: EventStore, conn: sa.Connection, projection: Projection, tag: str, *, folded: int | None = None
) -> None:
    """Extend the rebuild's lease; with ``folded``, record that many events as folded into its fresh
    tables (committed with ``conn``'s transaction), for ``eventstore projections`` to show."""
    table = checkpoints
    now = store.clock()
    progress = {} if folded is None else {"position": folded}
    renewed = conn.execute(
        table.update()
        .where(
            table.c.name == rebuild_lock(projection),
            table.c.build == tag,
            # An expired claim is lost even if nobody took it: a prune may have run meanwhile.
            table.c.updated_at > format_time(now),
        )
        .values(updated_at=format_time(now + REBUILD_LEASE), **progress)
    )
    if renewed.rowcount != 1:
        raise ProjectionError(
            f"the rebuild of {projection.name!r} lost its claim: its lease expired, "
            "or another rebuild took it over because this one's process lock was lost"
        )


@contextmanager
def renewed(
    store: EventStore, projection: Projection, tag: str, *, folded: int | None = None
) -> Iterator[Transaction]:
    """A transaction of a rebuild that still holds its claim (``renew``, ``folded`` passed on)."""
    with reconnecting.transaction(
        store, lambda conn: renew(store, conn, projection, tag, folded=folded)
    ) as tx:
        yield tx
