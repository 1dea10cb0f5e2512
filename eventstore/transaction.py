"""``Transaction``: a unit of work whose appends to several flows commit together or not at all."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from .backends.base import Batch, Written
from .errors import InvalidInput, TransactionAborted
from .events import ANY, AppendResult, Event, ExpectedRevision, NewEvent, RecordedEvent
from .preparation import check_flow_id
from .projection import apply_inline

if TYPE_CHECKING:
    from .store import EventStore


class Transaction:
    """A unit of work: appends to several flows that commit together or not at all."""

    def __init__(self, store: EventStore, connection: sa.Connection) -> None:
        self._store = store
        self.connection = connection
        self.written: list[Written] = []
        self.memo: dict[Any, Any] = {}
        """Scratch space for inline projections and services, discarded with the transaction."""
        self._failed: BaseException | None = None
        self._ended = False

    @property
    def store(self) -> EventStore:
        return self._store

    def append(
        self,
        flow_id: str,
        events: Sequence[Event | NewEvent],
        *,
        expected_revision: ExpectedRevision = ANY,
        metadata: Mapping[str, Any] | None = None,
    ) -> AppendResult:
        """Append within this transaction; see ``EventStore.append``.

        A refused append (``InvalidEvent``, ``InvalidInput``, ...) aborts the
        unit of work too, even if the caller catches the error: all or nothing.
        """
        self._check_usable()
        try:
            batch = self._store._prepare(flow_id, events, expected_revision, metadata)
        except BaseException as exc:
            self._failed = exc
            raise
        return self._append(batch)

    def _append(self, batch: Batch) -> AppendResult:
        self._check_usable()
        try:
            return self._write(batch)
        except BaseException as exc:
            # Part of the append may have been written (SQLite) or the whole
            # transaction aborted (PostgreSQL): it can no longer commit.
            self._failed = exc
            raise

    def _write(self, batch: Batch) -> AppendResult:
        flow_id = batch.flow_id
        if self.written and any(w.result.flow_id == flow_id for w in self.written):
            # The PostgreSQL head cache only learns of our own appends at commit.
            self._store._backend.forget([flow_id])
        try:
            written = self._store._backend.write(self.connection, batch, self._store.clock)
        except sa.exc.IntegrityError as exc:
            # The same public error on both backends, raised here rather than at
            # the end of the block (PostgreSQL has aborted the transaction anyway).
            raise self._store._explain_conflict(exc, batch) from exc
        self.written.append(written)
        if written.rows and self._store.projections:
            if written.generation is not None:
                self._store.fence(self, written.generation)
            recorded = _recorded(written, batch)
            for projection in self._store.projections:
                apply_inline(projection, self, recorded)
        return written.result

    def _check_usable(self) -> None:
        self._store._check_open()
        if self._ended:
            raise InvalidInput("this transaction has ended; open a new one with store.transaction()")
        if self._failed is not None:
            raise TransactionAborted("an earlier append in this transaction failed; it will be rolled back")

    def fence(self) -> None:
        """Before folding events this transaction wrote without an append (an import): hold
        appends, and check the inline projections as an append would (``EventStore.fence``)."""
        self._check_usable()
        self._store.fence(self, self._store._backend.hold_generation(self.connection))

    def revision(self, flow_id: str) -> int:
        """The flow's revision as this transaction sees it."""
        self._check_usable()
        return self._store._backend.head(self.connection, check_flow_id(flow_id))[0]


def _recorded(written: Written, batch: Batch) -> list[RecordedEvent]:
    """The events an append just wrote, as a reader will see them."""
    return _recorded_rows(written.rows, batch)


def _recorded_rows(rows: list[tuple[Any, ...]], batch: Batch) -> list[RecordedEvent]:
    loads = orjson.loads
    recorded_at = datetime.fromisoformat(rows[0][8])
    return [
        RecordedEvent(
            row[0],
            row[1],
            row[2],
            event.event_id,
            row[4],
            row[5],
            loads(row[6]),
            loads(row[7]),
            recorded_at,
            row[11].hex(),
            row[12].hex(),
        )
        for row, event in zip(rows, batch.events, strict=True)
    ]
