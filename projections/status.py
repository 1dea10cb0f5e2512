"""Where each projection of a store stands: its version, how far it has folded the log, and
the claim of a rebuild or a first build of it (``eventstore projections``).

A rebuild's claim is a lease row (``checkpoints.claim``) that a holder killed
with SIGKILL leaves behind, its lease still running for up to two minutes:
by its lease alone, a dead rebuild would pass for a live one until then. So
a claim is shown as its lease and its holder's rebuild lock tell
(``rebuild_locks``: a PostgreSQL advisory lock, a ``flock`` beside a SQLite
database). A holder takes that lock before it claims and lets it go only
after it gave the claim up, so a claim still standing whose lock nobody
holds is a dead holder's. It is the question a rebuild and retention already
ask before they take such a claim over or pass it by, so the status agrees
with what they do, and asking it takes nothing a rebuild waits for
(``process_locks.held``). A claim written without the lock (none could be
had, or older code wrote it) says nothing of its holder: it shows when it
was last renewed, so one no longer renewed can be seen.

No column was added for this: the claim row's ``version`` already says
whether its holder took the lock, and its ``position`` (0 until now) records
the events folded (``checkpoints.renew``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from eventstore import EventStore, process_locks, reconnecting
from eventstore.checks import check_store
from eventstore.errors import ReadModelCorrupt
from eventstore.integrity import format_time
from eventstore.rebuild_claims import LOCK_KIND, LOCKED, REBUILD_CLAIM
from eventstore.schema import projection_checkpoints as checkpoints

from .checkpoints import INLINE, REBUILD_LEASE, RETIRED_KIND
from .corruption import corrupt, unreadable

RebuildState = Literal["running", "leased", "died", "expired"]


@dataclass(frozen=True, slots=True)
class RebuildStatus:
    """A rebuild's claim on a projection, and what can be told of the process that holds it.

    ``state`` is one of:

    * ``"running"``: its lease runs and its holder's rebuild lock is held: the
      holder's process (on PostgreSQL, its lock's session) is alive. Also where
      the lock cannot be asked from here (a lock file this process may not open).
    * ``"leased"``: its lease runs, but it was claimed without the lock, so only
      its lease speaks for it: under way as far as anyone can tell, last renewed
      at ``renewed_at``.
    * ``"died"``: its holder no longer holds the rebuild lock, with the claim
      still standing: its process died (SIGKILL, a crash), or on PostgreSQL the
      lock's session was ended under it (then it fails at its next renewal
      once another rebuild takes the claim over).
    * ``"expired"``: its lease ran out: its holder, if it lives, fails at its
      next renewal.

    A claim that died or expired holds nothing: the next rebuild takes it over
    at once, and retention does not wait for it.

    ``renewed_at`` is when it was last renewed (claimed, or a batch begun):
    ``lease_until`` less this version's ``REBUILD_LEASE``. ``folded`` is how many
    events, at least, its fresh tables held once that renewal committed with
    its batch (0 for a claim from a version that did not record it).
    """

    state: RebuildState
    renewed_at: datetime
    lease_until: datetime
    folded: int


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    """A projection of the store, as its checkpoint row and any rebuild's claim record it.

    ``position`` is the last position a catch-up projection applied, and ``behind`` how many
    events of the log come after it (what its next runs will apply); an inline projection is
    folded in each append's transaction, so it has no position of its own and is never behind.
    ``updated_at`` is when its row was last written: a batch applied, a build swapped in.
    ``rebuild`` is the claim of a rebuild of it, if one stands (``RebuildStatus``), and
    ``rebuilding_until`` when the lease of a rebuild under way (running or leased) runs out;
    None when none is under way.

    A projection whose first build holds a claim has no checkpoint yet: its ``kind``,
    ``version``, ``position``, ``behind`` and ``updated_at`` are None, and ``rebuild`` tells
    how far the build has got.
    """

    name: str
    kind: str | None
    version: int | None
    position: int | None
    behind: int | None
    updated_at: datetime | None
    rebuilding_until: datetime | None
    rebuild: RebuildStatus | None


def projection_statuses(store: EventStore) -> list[ProjectionStatus]:
    """Every projection built in ``store`` (inline and catch-up), or being built, by name."""
    check_store(store)
    with reconnecting.reading(store) as conn:
        head = int(conn.exec_driver_sql("SELECT last_position FROM event_positions").scalar_one())
        rows = conn.execute(
            sa.select(checkpoints).where(checkpoints.c.kind.not_in(("lock", RETIRED_KIND)))
        ).all()
    built = {row.name: row for row in rows}
    rebuilds = _rebuilds(store)
    return [
        _status(name, built.get(name), rebuilds.get(name), head)
        for name in sorted(built.keys() | rebuilds.keys())
    ]


def _status(name: str, row: sa.Row[Any] | None, rebuild: RebuildStatus | None, head: int) -> ProjectionStatus:
    under_way = (
        rebuild.lease_until if rebuild is not None and rebuild.state in ("running", "leased") else None
    )
    if row is None:  # a first build: no checkpoint yet
        return ProjectionStatus(name, None, None, None, None, None, under_way, rebuild)
    inline = row.kind == INLINE
    for column in ("version", "position"):  # SQLite keeps whatever an UPDATE put in an INTEGER column
        if type(getattr(row, column)) is not int:
            raise _corrupt(name, name, column, getattr(row, column), "an integer")
    return ProjectionStatus(
        name=name,
        kind=row.kind,
        version=row.version,
        position=None if inline else row.position,
        behind=0 if inline else max(0, head - row.position),
        updated_at=_time(name, name, row.updated_at),
        rebuilding_until=under_way,
        rebuild=rebuild,
    )


def _time(projection: str, row: str, stored: Any) -> datetime:
    """A checkpoint row's ``updated_at`` (``format_time``'s text) as a time."""
    try:
        return datetime.fromisoformat(stored)
    except (TypeError, ValueError) as exc:
        raise _corrupt(projection, row, "updated_at", stored, "a time") from exc


def _corrupt(projection: str, row: str, column: str, stored: Any, what: str) -> ReadModelCorrupt:
    return corrupt(projection, checkpoints.name, {"name": row}, column, unreadable(stored, what))


@dataclass(frozen=True, slots=True)
class _Claim:
    """A claim's row: ``version`` is ``LOCKED`` or 0, ``position`` the events folded, ``updated_at``
    when its lease runs out (as stored: ``format_time``'s text, which sorts as time does)."""

    version: int
    position: int
    build: str
    updated_at: str


def _rebuilds(store: EventStore) -> dict[str, RebuildStatus]:
    """The rebuilds' claims, by projection, each in the state its lease and its holder's lock tell.

    A claim whose lock was seen free died only if it still stands, unchanged,
    once the lock was asked: a rebuild that ends lets its lock go just after
    it deleted its claim, so the claim read before may since have ended well.
    One changed meanwhile was taken over by a rebuild that took the lock (or
    could not), and is shown as it is now.
    """
    now = format_time(store.clock())
    with reconnecting.reading(store) as conn:
        claims = _claims(conn)
        free = {name for name, claim in claims.items() if _lock_free(conn, name, claim)}
    died = set()
    if free:
        with reconnecting.reading(store) as conn:
            again = _claims(conn)
        for name in free:
            if name not in again:
                del claims[name]  # given up: that rebuild ended
            elif again[name].build != claims[name].build:
                claims[name] = again[name]
            else:
                died.add(name)
    return {name: _rebuild(name, claim, now, died=name in died) for name, claim in claims.items()}


def _claims(conn: sa.Connection) -> dict[str, _Claim]:
    c = checkpoints.c
    query = sa.select(c.name, c.version, c.position, c.build, c.updated_at).where(
        c.kind == "lock", c.name.endswith(REBUILD_CLAIM)
    )
    return {name.removesuffix(REBUILD_CLAIM): _Claim(*claim) for name, *claim in conn.execute(query)}


def _lock_free(conn: sa.Connection, name: str, claim: _Claim) -> bool:
    """Whether ``claim`` was made holding the rebuild lock, and nobody holds that lock now."""
    return claim.version == LOCKED and not process_locks.held(conn, LOCK_KIND, name)


def _rebuild(name: str, claim: _Claim, now: str, *, died: bool) -> RebuildStatus:
    state: RebuildState = "running" if claim.version == LOCKED else "leased"
    if died:
        state = "died"
    elif claim.updated_at <= now:  # a lease that ran out holds nothing
        state = "expired"
    lease_until = _time(name, name + REBUILD_CLAIM, claim.updated_at)
    return RebuildStatus(state, lease_until - REBUILD_LEASE, lease_until, claim.position)
