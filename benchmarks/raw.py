"""The ceiling: the same rows inserted straight through ``sqlite3`` and ``psycopg``.

Rows are precomputed before the clock starts (same JSON text, same 32-byte
hashes, positions and revisions already chained), into eventstore's own
``flow_events`` table with all its indexes. An append is one transaction:
``execute`` for one row, ``executemany`` for a batch. The unique
(flow_id, revision) key is the only revision check; nothing reads the head or
takes positions from the counter row. Reading pages by position and decodes
each row into eventstore's ``RecordedEvent``, as eventstore's reader does.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson
import psycopg
import sqlalchemy as sa
from psycopg.types.json import set_json_loads

from eventstore import RecordedEvent
from eventstore.backends.base import INSERT_COLUMNS
from eventstore.events import uuid_from_bytes

from .workload import RowMaker, Step

Rows = list[tuple[Any, ...]]

_SELECT = (
    "SELECT position, flow_id, revision, event_id, type, schema_version, data, metadata, "
    "recorded_at, prev_hash, hash FROM flow_events WHERE position > {p} ORDER BY position LIMIT {p}"
)
_loads = orjson.loads
_from_iso = datetime.fromisoformat
_UUID = uuid_from_bytes
WRITER_POSITIONS = 1_000_000_000  # each concurrent writer takes positions from its own range


class RawSQLite:
    """``sqlite3`` on eventstore's table: WAL, synchronous=NORMAL, one transaction per append."""

    label = "raw sqlite3"

    def __init__(self, path: str, *, first_position: int = 1) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.rows = RowMaker(postgres=False, first_position=first_position)
        self._insert = f"INSERT INTO flow_events ({INSERT_COLUMNS}) VALUES ({', '.join('?' * 13)})"

    @classmethod
    def open(cls, target: str) -> RawSQLite:
        return cls(target)

    def prepare(self, steps: Iterable[Step]) -> list[Rows]:
        return [self.rows.rows(step) for step in steps]

    def apply(self, rows: Rows) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        if len(rows) == 1:
            conn.execute(self._insert, rows[0])
        else:
            conn.executemany(self._insert, rows)
        conn.execute("COMMIT")

    def fill(self, steps: Iterable[Step], *, per_commit: int = 100) -> None:
        pending: Rows = []
        for count, step in enumerate(steps, 1):
            pending.extend(self.rows.rows(step))
            if count % per_commit == 0:
                self.apply(pending)
                pending = []
        if pending:
            self.apply(pending)

    def read_all(self, limit: int | None = None, *, page: int = 1000) -> int:
        query = _SELECT.format(p="?")
        count, cursor = 0, 0
        while limit is None or count < limit:
            size = page if limit is None else min(page, limit - count)
            rows = self.conn.execute(query, (cursor, size)).fetchall()
            for r in rows:
                RecordedEvent(
                    r[0],
                    r[1],
                    r[2],
                    _UUID(r[3]),
                    r[4],
                    r[5],
                    _loads(r[6]),
                    _loads(r[7]),
                    _from_iso(r[8]),
                    r[9].hex(),
                    r[10].hex(),
                )
            count += len(rows)
            if len(rows) < size:
                break
            cursor = rows[-1][0]
        return count

    def close(self) -> None:
        self.conn.close()


class RawPostgres:
    """``psycopg`` on eventstore's table: one transaction per append, COPY to bulk-load."""

    label = "raw psycopg"

    def __init__(self, url: str, *, first_position: int = 1) -> None:
        self.conn = psycopg.connect(sa.make_url(url).set(drivername="postgresql").render_as_string(False))
        set_json_loads(_loads, self.conn)
        self.rows = RowMaker(postgres=True, first_position=first_position)
        self._insert = f"INSERT INTO flow_events ({INSERT_COLUMNS}) VALUES ({', '.join(['%s'] * 13)})"

    @classmethod
    def open(cls, target: str) -> RawPostgres:
        return cls(target)

    @classmethod
    def writer(cls, target: str, worker: int) -> RawPostgres:
        return cls(target, first_position=(worker + 1) * WRITER_POSITIONS)

    def prepare(self, steps: Iterable[Step]) -> list[Rows]:
        return [self.rows.rows(step) for step in steps]

    def apply(self, rows: Rows) -> None:
        with self.conn.cursor() as cur:
            if len(rows) == 1:
                cur.execute(self._insert, rows[0])
            else:
                cur.executemany(self._insert, rows)
        self.conn.commit()

    def fill(self, steps: Iterable[Step], *, per_commit: int = 100) -> None:
        pending: Rows = []
        for count, step in enumerate(steps, 1):
            pending.extend(self.rows.rows(step))
            if count % per_commit == 0:
                self._copy(pending)
                pending = []
        if pending:
            self._copy(pending)

    def _copy(self, rows: Rows) -> None:
        with self.conn.cursor() as cur, cur.copy(f"COPY flow_events ({INSERT_COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        self.conn.commit()

    def read_all(self, limit: int | None = None, *, page: int = 1000) -> int:
        query = _SELECT.format(p="%s")
        count, cursor = 0, 0
        while limit is None or count < limit:
            size = page if limit is None else min(page, limit - count)
            with self.conn.cursor() as cur:
                rows = cur.execute(query, (cursor, size)).fetchall()
            self.conn.commit()
            for r in rows:
                RecordedEvent(
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    r[4],
                    r[5],
                    r[6],
                    r[7],
                    r[8],
                    bytes(r[9]).hex(),
                    bytes(r[10]).hex(),
                )
            count += len(rows)
            if len(rows) < size:
                break
            cursor = rows[-1][0]
        return count

    def close(self) -> None:
        self.conn.close()
