"""SQLite: one writer at a time, so appends read the head inside the write lock.

Every write transaction starts with ``BEGIN IMMEDIATE``: it takes SQLite's
write lock up front, so colliding writers wait (``busy_timeout``) instead of
failing with "database is locked" when a read tries to become a write. Reads
run in autocommit mode: each page query sees the latest committed state and
no read holds a snapshot that would keep the WAL from being checkpointed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from ..errors import AppendOnlyViolation, StorageError, StoreBusy
from ..events import ANY, AppendResult, RecordedEvent, uuid_from_str
from ..integrity import GENESIS, StoredRow, format_time
from .base import INSERT_COLUMNS, Backend, Batch, Clock, Written, chain_rows

_HEAD = (
    "SELECT h.revision, h.hash, EXISTS (SELECT 1 FROM flow_events WHERE event_id = ?) "
    "FROM (SELECT 1) LEFT JOIN (SELECT revision, hash FROM flow_events "
    "WHERE flow_id = ? ORDER BY revision DESC LIMIT 1) AS h"
)
_TAKE_POSITIONS = (
    "UPDATE event_positions SET last_position = last_position + ? WHERE id = 1 RETURNING last_position"
)
_INSERT = f"INSERT INTO flow_events ({INSERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"

_loads = orjson.loads
_from_iso = datetime.fromisoformat


def create_engine(url: sa.URL, *, busy_timeout: float, synchronous: str, pool_size: int) -> sa.Engine:
    engine = sa.create_engine(
        url,
        connect_args={"timeout": busy_timeout, "check_same_thread": False},
        poolclass=sa.QueuePool,
        pool_size=pool_size,
        max_overflow=pool_size * 4,
    )

    @sa.event.listens_for(engine, "connect")
    def _configure(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        dbapi_connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        if url.database not in (None, "", ":memory:"):
            dbapi_connection.execute("PRAGMA journal_mode = WAL")
        dbapi_connection.execute(f"PRAGMA synchronous = {synchronous}")
        dbapi_connection.execute("PRAGMA foreign_keys = ON")

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        if conn.get_execution_options().get("eventstore_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class SQLiteBackend(Backend):
    name = "sqlite"

    @contextmanager
    def write_connection(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn:
            conn.execution_options(eventstore_write=True)
            with conn.begin():
                yield conn

    def write(self, conn: sa.Connection, batch: Batch, clock: Clock) -> Written:
        run = conn.exec_driver_sql
        first = batch.events[0]
        revision, prev_hash, first_exists = run(_HEAD, (first.event_id_str, batch.flow_id)).one()
        revision = revision or 0
        if first_exists or (batch.expected is not ANY and batch.expected != revision):
            return _replayed(self.earlier_append(conn, batch, revision))
        count = len(batch.events)
        last_position = run(_TAKE_POSITIONS, (count,)).scalar_one()
        now = clock()
        rows, last_hash = chain_rows(
            batch, revision, prev_hash or GENESIS, last_position - count + 1, format_time(now)
        )
        run(_INSERT, rows)
        result = AppendResult(
            flow_id=batch.flow_id,
            revision=revision + count,
            positions=tuple(range(last_position - count + 1, last_position + 1)),
            event_ids=tuple(event.event_id for event in batch.events),
        )
        return Written(result, rows, last_hash, now)

    def translate(self, exc: sa.exc.SQLAlchemyError) -> Exception:
        message = str(getattr(exc, "orig", exc))
        if "append-only" in message:
            return AppendOnlyViolation(message)
        if "database is locked" in message or "database is busy" in message:
            return StoreBusy(f"SQLite stayed locked past the busy timeout: {message}")
        return StorageError(f"SQLite error: {message}")

    def unique_violation(self, exc: sa.exc.IntegrityError) -> str | None:
        message = str(exc.orig)
        if "UNIQUE constraint failed" not in message:
            return None
        return "event_id" if "flow_events.event_id" in message else "revision"

    def decode(self, row: Sequence[Any]) -> RecordedEvent:
        return RecordedEvent(
            row[0],
            row[1],
            row[2],
            uuid_from_str(row[3]),
            row[4],
            row[5],
            _loads(row[6]),
            _loads(row[7]),
            _from_iso(row[8]),
            row[9].hex(),
            row[10].hex(),
        )

    def stored_row(self, row: Sequence[Any]) -> StoredRow:
        return StoredRow(*row)


def _replayed(result: AppendResult) -> Written:
    """An append answered from history: nothing new was written."""
    return Written(result, [], b"", datetime.min)
