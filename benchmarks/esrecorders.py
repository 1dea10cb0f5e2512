"""The comparison: the ``eventsourcing`` library's application recorders.

Each append becomes ``StoredEvent`` rows (originator id, originator version,
topic, state) handed to ``insert_events`` in one transaction; the primary key
(originator_id, originator_version) is its revision check. The state is the
event's data, metadata and timestamp as JSON, encoded inside the timed call,
as eventstore encodes its payloads inside ``append``. Reading pages through
``select_notifications`` and decodes each state back into an object.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from eventsourcing.persistence import ApplicationRecorder, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.sqlite import (
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteDatastore,
)

from .workload import Decoded, Step, flow_uuid, metadata_for

Op = tuple[uuid.UUID, int, list[tuple[str, dict[str, Any]]], dict[str, str]]

_dumps = orjson.dumps
_loads = orjson.loads
_from_iso = datetime.fromisoformat


class _NormalSyncPool(SQLiteConnectionPool):
    """eventsourcing's SQLite pool (file, WAL) with synchronous=NORMAL, as eventstore uses."""

    def _create_connection(self) -> SQLiteConnection:
        connection = super()._create_connection()
        connection._sqlite_conn.execute("PRAGMA synchronous = NORMAL")
        return connection


class Recorders:
    """``ApplicationRecorder.insert_events`` per append; ``select_notifications`` to read."""

    label = "eventsourcing"

    def __init__(self, recorder: ApplicationRecorder, datastore: SQLiteDatastore | PostgresDatastore) -> None:
        self.recorder = recorder
        self.datastore = datastore
        self._insert = recorder.insert_events

    @classmethod
    def open(cls, target: str, *, pool_size: int = 5, create: bool = True) -> Recorders:
        """``target`` is a SQLite file path or a PostgreSQL URL of a scratch database."""
        recorder: ApplicationRecorder
        if target.startswith("postgresql"):
            url = sa.make_url(target)
            pg = PostgresDatastore(
                url.database or "",
                url.host or "127.0.0.1",
                url.port or 5432,
                url.username or "",
                url.password or "",
                pool_size=pool_size,
            )
            recorder = PostgresApplicationRecorder(pg)
            if create:
                recorder.create_table()
            return cls(recorder, pg)
        lite = SQLiteDatastore(target)
        lite.pool.close()
        lite.pool = _NormalSyncPool(db_name=target)
        recorder = SQLiteApplicationRecorder(lite)
        recorder.create_table()
        return cls(recorder, lite)

    @classmethod
    def writer(cls, target: str, worker: int) -> Recorders:
        return cls.open(target, pool_size=1, create=False)

    def prepare(self, steps: Iterable[Step]) -> list[Op]:
        return [
            (
                flow_uuid(s.flow),
                s.revision,
                [(f"agents.events:{x.type}", x.data) for x in s.samples],
                metadata_for(s.flow),
            )
            for s in steps
        ]

    def apply(self, op: Op) -> None:
        originator_id, revision, events, metadata = op
        timestamp = datetime.now(UTC).isoformat()
        self._insert(
            [
                StoredEvent(
                    originator_id,
                    revision + 1 + offset,
                    topic,
                    _dumps({"data": data, "metadata": metadata, "timestamp": timestamp}),
                )
                for offset, (topic, data) in enumerate(events)
            ]
        )

    def fill(self, steps: Iterable[Step], *, per_commit: int = 10) -> None:
        """Bulk load: several whole flows per ``insert_events`` call."""
        pending: list[StoredEvent] = []
        timestamp = datetime.now(UTC).isoformat()
        for count, (originator_id, _revision, events, metadata) in enumerate(self.prepare(steps), 1):
            pending.extend(
                StoredEvent(
                    originator_id,
                    offset + 1,
                    topic,
                    _dumps({"data": data, "metadata": metadata, "timestamp": timestamp}),
                )
                for offset, (topic, data) in enumerate(events)
            )
            if count % per_commit == 0:
                self._insert(pending)
                pending = []
        if pending:
            self._insert(pending)

    def read_all(self, limit: int | None = None, *, page: int = 1000) -> int:
        select = self.recorder.select_notifications
        count = 0
        start = 1
        while limit is None or count < limit:
            size = page if limit is None else min(page, limit - count)
            notifications = select(start, size)
            for n in notifications:
                state = _loads(n.state)
                Decoded(
                    n.id,
                    n.originator_id,
                    n.originator_version,
                    n.topic,  # type: ignore[arg-type]
                    state["data"],
                    state["metadata"],
                    _from_iso(state["timestamp"]),
                )
            count += len(notifications)
            if len(notifications) < size:
                break
            start = notifications[-1].id + 1
        return count

    def close(self) -> None:
        self.datastore.close()
