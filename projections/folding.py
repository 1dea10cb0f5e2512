"""Folding a stretch of the log into a projection's tables, a batch at a time."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
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
    """Apply the events after ``position`` up to ``up_to`` to the fresh tables, a batch per transaction.

    Stops at ``up_to`` even while writers go on appending: a rebuild must
    not chase the log. Returns the last position applied and the count done.
    """
    while position < up_to:
        batch = list(store.read_all(after_position=position, limit=min(batch_size, up_to - position)))
        batch = [event for event in batch if event.position <= up_to]
        if not batch:
            break
        folded = done + len(batch)  # recorded in the claim as the batch commits: never ahead of it
        with reconnecting.transaction(store, _renewing(store, projection, tag, folded)) as tx:
            tx.memo = memo
            apply_grouped(target, tx, batch)
        position = batch[-1].position
        done = folded
        report(done)
        if len(memo) > 200_000:
            memo.clear()  # bounded memory; also drops SOLE_WRITER, so lookups resume
    return position, done


def _renewing(
    store: EventStore, projection: Projection, tag: str, folded: int
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
