"""Handing an inline projection to a runner: ``make_catch_up``.

Opening a store with a projection (``projections=[...]``) marks it inline in
its checkpoint for good: appends fold it, and a runner is refused, since it
would fold their events a second time. ``make_catch_up`` marks it catch-up
again, with the log's head as its position: under the append lock no append
is half-way, so every event up to the head that a store opened with it
appended was folded. Events that writers opened without it appended while it
was inline were folded by no one: unless every writer had it, rebuild it
after the handover (``projections.rebuild``). It bumps the read models' generation,
so a store still opened with it inline is refused at its next append
(``Projection.check_current``) rather than fold the events a runner folds.
The handover is recorded in the same transaction: a ``ProjectionMadeCatchUp``
event (who, why, the position handed over) in the flow ``$system-projections``.
"""

from __future__ import annotations

from eventstore import EventStore, reconnecting
from eventstore.events import Event
from eventstore.integrity import format_time
from eventstore.rebuild_claims import refuse_during_rebuild
from eventstore.schema import projection_checkpoints as checkpoints

from .checkpoints import INLINE, Checkpoint, lock_appends, read_checkpoint
from .retiring import (
    SYSTEM_PROJECTIONS_FLOW,
    check_store_and_name,
    check_who,
    not_found,
    refuse_in_use,
    refuse_live_rebuild,
)

CATCH_UP = "catchup"


class ProjectionMadeCatchUp(Event):
    """The inline projection ``projection`` (at ``version``) was handed to a runner, which folds the
    log from ``position``, the head then, on."""

    projection: str
    version: int
    position: int
    by: str
    reason: str | None = None


def make_catch_up(store: EventStore, name: str, *, by: str, reason: str | None = None) -> Checkpoint:
    """Mark the inline projection ``name`` catch-up, from the log's head: a ``CatchUpRunner`` keeps it
    from there on. Its checkpoint as it is then; one catch-up already is returned as it is, and
    nothing is written. The handover is recorded, by ``by`` and with ``reason``, as a
    ``ProjectionMadeCatchUp`` event in ``$system-projections``, after the position handed over.
    Events appended while it was inline by writers opened without it are not in it: rebuild it then.

    Refused, with nothing written: a built-in read model, or one this store was opened with
    (``ProjectionInUse``); one a live rebuild holds an unexpired claim on (``RebuildInProgress``);
    a name with no checkpoint (``ProjectionNotFound``, ``RetiredProjection``);
    a ``by`` that is not 1 to 200 characters of text (``InvalidInput``).
    """
    check_store_and_name(store, name)
    check_who("handing a projection to a runner", "who hands it over", by, reason)
    action = "hand to a runner"
    refuse_in_use(store, name, action)
    with reconnecting.reading(store) as conn:  # without the write lock a SQLite rebuild's batches hold
        current = read_checkpoint(conn, name)
    if current is not None and current.kind != INLINE:
        return current  # as it is: nothing to hand over
    refuse_live_rebuild(store, name, "handing over")
    with reconnecting.transaction(store) as tx:
        conn = tx.connection
        head = lock_appends(conn)  # no append is half-way: the appends folded every event up to it
        current = read_checkpoint(conn, name, lock=True)
        if current is None:
            raise not_found(store, conn, name, action)
        if current.kind != INLINE:
            return current
        refuse_during_rebuild(store, conn, f"handing over projection {name!r}", only=name)
        conn.execute(
            checkpoints.update()
            .where(checkpoints.c.name == name)
            .values(kind=CATCH_UP, position=head, updated_at=format_time(store.clock()))
        )
        # a store still opened with it inline checks it again at its next append, and is refused
        conn.exec_driver_sql("UPDATE event_positions SET generation = generation + 1 WHERE id = 1")
        handed = ProjectionMadeCatchUp(
            projection=name, version=current.version, position=head, by=by, reason=reason
        )
        tx.append(SYSTEM_PROJECTIONS_FLOW, [handed], metadata={"actor": by})
    return Checkpoint(name, CATCH_UP, current.version, head, current.build)
