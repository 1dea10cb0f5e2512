"""Folding a stretch of the log into a projection's tables, a batch at a time."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from eventstore import EventStore, RecordedEvent, Transaction, reconnecting
from eventstore.projection import fold_errors

from .checkpoints import renew
from .definitions import check_returned

if TYPE_CHECKING:
    from .declaration import Projection


def apply_grouped(projection: Projection, tx: Transaction, events: Sequence[RecordedEvent]) -> None:
    name = "apply_many" if getattr(projection, "apply_many", None) is not None else "apply"
    fold: Callable[[Transaction, Sequence[RecordedEvent]], object] = getattr(projection, name)
    with fold_errors(projection.name, name, events, tx.connection, copies=projection.copies):
        returned = fold(tx, events)
    check_returned(projection, name, returned)


REPORT_EVERY = timedelta(seconds=1)
"""The most work, by the store's clock, a rebuild's batch holds: a batch of ``batch_size`` events
that takes longer commits what it folded by then, and progress is reported, so a log smaller than
one batch shows progress too."""
FIRST_CHUNK = 16
"""Events folded before a batch first looks at the clock: how long each takes is known from them."""


def fold_up_to(
    store: EventStore,
    projection: Projection,
    target: Projection,
    tag: str,
    memo: dict[Any, Any],
    position: int,
    up_to: int,
    batch_size: int,
    done: int,
    report: Callable[[int], None],
) -> tuple[int, int]:
    """Apply the events after ``position`` up to ``up_to`` to the fresh tables, a batch per transaction:
    ``batch_size`` events, or fewer once it has taken ``REPORT_EVERY`` (by the store's clock).

    Stops at ``up_to`` even while writers go on appending: a rebuild must
    not chase the log. Returns the last position applied and the count done.
    """
    while position < up_to:
        batch = list(store.read_all(after_position=position, limit=min(batch_size, up_to - position)))
        batch = [event for event in batch if event.position <= up_to]
        if not batch:
            break
        with reconnecting.transaction(store, _renewing(store, projection, tag, None)) as tx:
            tx.memo = memo
            applied = _apply_a_while(store, target, tx, batch)
            # recorded in the claim as the batch commits: never ahead of it
            renew(store, tx.connection, projection, tag, folded=done + applied)
        position = batch[applied - 1].position
        done += applied
        report(done)
        if len(memo) > 200_000:
            memo.clear()  # bounded memory; also drops SOLE_WRITER, so lookups resume
    return position, done


def _apply_a_while(
    store: EventStore, target: Projection, tx: Transaction, events: list[RecordedEvent]
) -> int:
    """Apply ``events`` in ``tx``, in chunks, until all are or ``REPORT_EVERY`` has passed; how many were.

    A chunk is sized, from the ones before it, to take what is left of the time; a fold fast enough
    takes the batch in two chunks.
    """
    started = store.clock()
    applied, chunk = 0, min(len(events), FIRST_CHUNK)
    while applied < len(events):
        apply_grouped(target, tx, events[applied : applied + chunk])
        applied += chunk
        spent = store.clock() - started
        left = len(events) - applied
        if spent >= REPORT_EVERY or not left:
            break
        each = spent / applied
        chunk = left if each * left <= REPORT_EVERY - spent else max(1, (REPORT_EVERY - spent) // each)
    return applied


def _renewing(
    store: EventStore, projection: Projection, tag: str, folded: int | None
) -> Callable[[sa.Connection], None]:
    """A batch's first statement: renew the rebuild's claim, recording ``folded`` events."""
    return lambda conn: renew(store, conn, projection, tag, folded=folded)


def fold_a_while(
    store: EventStore, target: Projection, tx: Transaction, position: int, up_to: int, limit: int, hold: float
) -> tuple[int, int]:
    """Apply up to ``limit`` events after ``position`` (none past ``up_to``) in ``tx``, for ``hold`` s or so.

    Events go in chunks sized so that one takes what is left of ``hold``, as
    far as the chunks so far tell. Returns the last position applied and the count.
    """
    started = time.perf_counter()
    folded, chunk = 0, min(limit, 16)
    while position < up_to and folded < limit:
        events = list(store.read_all(after_position=position, limit=min(chunk, limit - folded)))
        events = [event for event in events if event.position <= up_to]
        if not events:
            break
        began = time.perf_counter()
        apply_grouped(target, tx, events)
        position = events[-1].position
        folded += len(events)
        now = time.perf_counter()
        if now - started >= hold:
            break
        each = (now - began) / len(events)
        left = hold - (now - started)
        chunk = limit if left >= limit * each else max(1, int(left / each))
    return position, folded
