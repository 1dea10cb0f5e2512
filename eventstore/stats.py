"""Figures about a store's log: how many events, since when, how fast they come, how big it is.

Cheap on any size of log: nothing here reads the events' contents. The first
position of each day is found by binary search over positions (positions
follow commit order, and so, but for clock steps backwards, time); a day's
count is then the rows in its range of positions, counted on the primary key's
index, so events that retention pruned (positions handed out, rows gone) are
not counted; what was pruned is counted apart from the tombstones (``pruned``),
in one aggregate query.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa

from .checks import check_store
from .errors import InvalidInput
from .schema import flow_events
from .store import EventStore
from .tombstones import PartlyRestored, PrunedFlows, partly_restored, pruned_flows
from .unfinished_import import UnfinishedImport, read_unfinished

_c = flow_events.c


@dataclass(frozen=True, slots=True)
class DayCount:
    day: date  # in UTC
    events: int


@dataclass(frozen=True, slots=True)
class LogStats:
    events: int  # events stored now
    last_position: int  # positions handed out (more than ``events`` once some were pruned)
    first_event_at: datetime | None
    last_event_at: datetime | None
    db_bytes: int  # the database file (SQLite), or the store's tables and indexes (PostgreSQL)
    per_day: tuple[DayCount, ...]  # oldest first, ending today
    unfinished_import: UnfinishedImport | None = None  # an import cut short: the log lacks its rest
    partly_restored: tuple[PartlyRestored, ...] = ()  # flows a restore cut short put only partly back
    pruned: PrunedFlows | None = None  # flows retention pruned into archives, not restored; None if none


def log_stats(store: EventStore, *, days: int = 7, now: datetime | None = None) -> LogStats:
    """The log's size and its events per day over the last ``days`` days (UTC, today included)."""
    check_store(store)
    if type(days) is not int or not 0 <= days <= 366:
        raise InvalidInput(f"days must be an int from 0 to 366, not {days!r}")
    today = (now or store.clock()).astimezone(UTC).date()
    last_position = store.last_position()
    with store.reading() as conn:
        events = int(conn.execute(sa.select(sa.func.count()).select_from(flow_events)).scalar_one())
        first = _event_time(store, conn, "first")
        last = _event_time(store, conn, "last")
        db_bytes = _db_bytes(conn)
        starts = [
            _first_position_at(store, conn, _midnight(today - timedelta(days=back)), last_position)
            for back in range(days - 1, -2, -1)
        ]
        counts = [_stored_between(conn, starts[i], starts[i + 1]) for i in range(days)]
        unfinished = read_unfinished(conn)
        partial = partly_restored(conn)
        pruned = pruned_flows(conn)
    per_day = tuple(DayCount(today - timedelta(days=days - 1 - i), counts[i]) for i in range(days))
    return LogStats(events, last_position, first, last, db_bytes, per_day, unfinished, partial, pruned)


def _stored_between(conn: sa.Connection, first: int, end: int) -> int:
    """How many events are stored at positions ``first`` up to (not including) ``end``."""
    if first >= end:
        return 0
    query = sa.select(sa.func.count()).select_from(flow_events)
    return int(conn.execute(query.where(_c.position >= first, _c.position < end)).scalar_one())


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, UTC)


def _decode_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromisoformat(value)


def _event_time(store: EventStore, conn: sa.Connection, which: str) -> datetime | None:
    order = _c.position if which == "first" else _c.position.desc()
    value = conn.execute(sa.select(_c.recorded_at).order_by(order).limit(1)).scalar()
    return None if value is None else _decode_time(value)


def _first_position_at(store: EventStore, conn: sa.Connection, moment: datetime, last: int) -> int:
    """The first position recorded at or after ``moment`` (``last + 1`` if none): about log2(last) lookups."""
    low, high = 1, last + 1
    query = sa.select(_c.position, _c.recorded_at).order_by(_c.position).limit(1)
    while low < high:
        middle = (low + high) // 2
        row = conn.execute(query.where(_c.position >= middle)).first()
        if row is None or row.position >= high or _decode_time(row.recorded_at) >= moment:
            high = middle
        else:
            low = row.position + 1
    return low


def _db_bytes(conn: sa.Connection) -> int:
    if conn.dialect.name == "sqlite":
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
        page_size = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
        return int(pages) * int(page_size)
    return int(
        conn.exec_driver_sql(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')"
        ).scalar_one()
    )
