"""Events read together with their rows' own check: what ``verify`` would find wrong with each row.

The audit trail and ``eventstore history`` show what a row holds now; one
read gives both the event and the row as stored, so a row edited after it
was written is shown marked (``data-edited``, ``hash-mismatch``...), not
passed off as what was recorded. Reading the page again for its hashes took
half of a long trail's time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from .backends.base import VERIFY_COLUMNS
from .events import RecordedEvent
from .integrity import check_envelope
from .preparation import check_flow_id
from .schema import flow_events
from .store import EventStore

Checked = tuple[RecordedEvent, tuple[str, ...]]
"""An event, and the kinds of what ``verify`` would find wrong with its row on its own (empty: none)."""

CHECKED_COLUMNS = [*VERIFY_COLUMNS, flow_events.c.recorded_at]
"""A row as ``verify`` reads it, then the time as the event's (``VERIFY_COLUMNS`` has its text)."""

_c = flow_events.c


def checked_by_position(
    store: EventStore, base: sa.Select[Any], after: int, limit: int | None
) -> Iterator[Checked]:
    """The events ``base`` selects after the position ``after``, at most ``limit``, in keyset pages by
    position, each with its row's own check."""
    query = base.with_only_columns(*CHECKED_COLUMNS).order_by(_c.position)
    pages = store._pages(lambda cursor: query.where(_c.position > cursor), lambda row: row[0], after, limit)
    return _checked(store, pages)


def checked_flow(store: EventStore, flow_id: str) -> Iterator[Checked]:
    """The flow's events in revision order, as ``EventStore.read_flow`` reads them, each with its row's
    own check. A flow id no flow could have is refused as ``read_flow`` refuses it."""
    store._check_open()
    check_flow_id(flow_id)
    query = sa.select(*CHECKED_COLUMNS).where(_c.flow_id == flow_id).order_by(_c.revision)
    pages = store._pages(lambda cursor: query.where(_c.revision > cursor), lambda row: row[2], 0, None)
    return _checked(store, pages)


def _checked(store: EventStore, pages: Iterator[Any]) -> Iterator[Checked]:
    decode, stored = store._backend.decode, store._backend.stored_row
    for rows in pages:
        for row in rows:
            event = decode((*row[:8], row[13], row[11], row[12]))
            yield event, tuple(problem.kind for problem in check_envelope(stored(row[:13])))
