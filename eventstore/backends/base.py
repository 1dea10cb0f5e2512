"""What both backends share: prepared batches, chaining, and idempotent retries."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles

from ..aio import shielded, to_the_end
from ..errors import (
    ConnectionLost,
    DuplicateEventId,
    FlowPruned,
    IntegrityViolation,
    InvalidInput,
    RevisionMismatch,
    StorageError,
    StoreBusy,
)
from ..events import ANY, AppendResult, ExpectedRevision, FoldInput, RecordedEvent
from ..integrity import StoredRow, chain_hash
from ..projection import FusedWrite
from ..schema import flow_events, flow_tombstones

Clock = Callable[[], datetime]

MAX_TIMEOUT_MS = 2**31 - 1
"""The longest timeout SQLite's ``busy_timeout`` and PostgreSQL's lock and idle timeouts take (a C int of
milliseconds): SQLite turns a longer one into no wait at all, PostgreSQL refuses the connection."""
NESTED_WRITE = "this thread is already inside a write transaction of this store; use its Transaction"
_ID_CHUNK = 10_000  # event ids looked up per statement (earlier_append)
_HEAD = (
    sa.select(flow_events.c.revision, flow_events.c.hash)
    .where(flow_events.c.flow_id == sa.bindparam("flow_id"))
    .order_by(flow_events.c.revision.desc())
    .limit(1)
)
"""A flow's last revision and hash (``Backend.head``), built once: building it cost more than running it."""


def milliseconds(name: str, seconds: object) -> int:
    """The timeout option ``name`` in whole milliseconds, rounded up (a fraction of one is 1, not "no limit").

    ``InvalidInput``, naming the option and the range, for anything but a
    number of seconds from 0 to ``MAX_TIMEOUT_MS / 1000``.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds < math.inf:
        raise InvalidInput(f"{name} must be a number of seconds, 0 or more, got {seconds!r}")
    if seconds > MAX_TIMEOUT_MS / 1000 or math.ceil(seconds * 1000) > MAX_TIMEOUT_MS:
        raise InvalidInput(
            f"{name} must be at most {MAX_TIMEOUT_MS / 1000} seconds (2**31-1 ms, the database's limit), "
            f"got {seconds!r}"
        )
    return math.ceil(seconds * 1000)


def abandon(conn: sa.Connection) -> None:
    """Roll back and drop a connection an interruption (a cancelled task, Ctrl-C) cut into.

    The interruption may have come anywhere, say between a statement and the
    fetch of its rows (the driver runs on whether or not the task still
    awaits it), so the connection is never used again: the rollback ends the
    transaction and lets its locks go, then the connection is closed and
    leaves the pool. Both run to the end even if the task is cancelled once
    more (``eventstore.aio.shielded``); a failed rollback (psycopg closes a
    connection whose cancellation was itself interrupted) is no error here:
    the caller raises the interruption.
    """

    def end() -> None:
        try:
            with contextlib.suppress(Exception):
                if conn.in_transaction():
                    conn.rollback()
                else:  # SQLite's writer drives its transaction on the driver connection
                    conn.connection.dbapi_connection.rollback()  # type: ignore[union-attr]  # checked out: it has one
        finally:
            conn.invalidate()

    shielded(end)


def give_back(conn: sa.Connection) -> None:
    """Return a read connection to the pool, to the end, then raise a cancellation that came meanwhile.

    The pool rolls a connection back as it takes it (``reset_on_return``): on
    the async drivers an await, where a cancellation would cut it and
    SQLAlchemy log an ERROR with a traceback ("Exception during reset"). Here
    the return runs to its end (``eventstore.aio.to_the_end``) whatever the
    read ended with, and the cancellation is raised after it (instead of the
    read's own error, if it failed: that is its context), so it is never lost.
    """
    if to_the_end(conn.close)[1]:
        raise asyncio.CancelledError


def _close_given_back(dbapi_connection: Any, record: Any) -> None:
    """A connection given back to the pool of a closed store: closed, not kept (``Backend.close``)."""
    if dbapi_connection is not None:
        record.close()


def _closed_by_driver(conn: sa.Connection) -> bool:
    """Whether the driver closed ``conn``'s connection itself (psycopg's ``closed``; aiosqlite has none)."""
    return bool(getattr(conn.connection.driver_connection, "closed", False))


@contextmanager
def returned(conn: sa.Connection) -> Iterator[sa.Connection]:
    """``conn`` for a read; given back to the pool (``give_back``) however the read ends but interrupted.

    An interruption (a cancelled task) is raised as it is, the connection
    closed by SQLAlchemy's own means; the backend may drop it first (``abandon``).
    One the driver closed itself is dropped, not given back: psycopg closes
    a connection whose query's cancellation was cut by a second one, and the
    pool's rollback-on-return would fail on it, SQLAlchemy logging an ERROR
    with a traceback ("Exception during reset").
    """
    try:
        yield conn
    except (Exception, GeneratorExit):
        give_back(conn)
        raise
    except BaseException:
        if not (conn.invalidated or conn.closed) and _closed_by_driver(conn):
            shielded(conn.invalidate)
        conn.close()
        raise
    give_back(conn)


class PreparedEvent(NamedTuple):
    """An event validated and encoded, waiting for its place in a flow (a tuple: cheap to make)."""

    event_id: uuid.UUID
    event_id_str: str
    type: str
    schema_version: int
    data: bytes
    data_hash: bytes
    metadata: bytes
    metadata_hash: bytes


@dataclass(frozen=True, slots=True)
class Batch:
    flow_id: str
    events: Sequence[PreparedEvent]
    expected: ExpectedRevision


@dataclass(frozen=True, slots=True)
class Written:
    """An append the transaction made, for inline projections and the head cache."""

    result: AppendResult
    rows: list[tuple[Any, ...]]
    last_hash: bytes
    recorded_at: datetime
    generation: int | None = None
    """``event_positions.generation`` as the append's bump of the row saw it (None: not read)."""


def driver_error(
    conn: sa.Connection, exc: Exception, statement: str, params: Any, cursor: Any = None
) -> sa.exc.StatementError:
    """A driver error from SQL run on the raw connection, wrapped as SQLAlchemy would wrap it.

    A connection the error shows to be dead is invalidated, and so is every
    connection the pool opened before it (each is opened afresh at its next
    checkout); the wrapper says so, so the store reports ``ConnectionLost``.
    """
    dialect = conn.dialect
    fairy = conn.connection
    invalid = bool(dialect.is_disconnect(exc, fairy.dbapi_connection, cursor))  # type: ignore[arg-type]  # a driver error is the DBAPI Error it expects
    if invalid:
        # What SQLAlchemy's own execute does on a disconnect (Connection.
        # _handle_dbapi_exception): a server that ended one idle connection
        # (failover, restart, pg_terminate_backend, idle_session_timeout) has
        # likely ended its older pool-mates too, and the pool hands out its
        # oldest first, so a single retry would meet the next dead one.
        # Pool._invalidate marks the pool's generation stale without closing
        # the connections others hold; no public API does that (dispose()
        # swaps the whole pool, and a pre-ping costs a round trip per checkout).
        conn.engine.pool._invalidate(fairy, exc)
        conn.invalidate(exc)
    return sa.exc.DBAPIError.instance(
        statement, params, exc, dialect.loaded_dbapi.Error, connection_invalidated=invalid
    )


class Raced(RevisionMismatch):
    """Another writer appended to the flow between our read and our write."""


def chain_rows(
    batch: Batch,
    revision: int,
    prev_hash: bytes,
    first_position: int,
    recorded_at: str,
    stored_id: Callable[[PreparedEvent], Any] = lambda event: event.event_id,
) -> tuple[list[tuple[Any, ...]], bytes]:
    """The rows to insert, in column order of ``INSERT_COLUMNS``, and the last hash."""
    rows = []
    flow_id = batch.flow_id
    for offset, event in enumerate(batch.events):
        rev = revision + 1 + offset
        digest = chain_hash(
            prev_hash,
            flow_id,
            rev,
            event.event_id_str,
            event.type,
            event.schema_version,
            recorded_at,
            event.data_hash,
            event.metadata_hash,
        )
        rows.append(
            (
                first_position + offset,
                flow_id,
                rev,
                stored_id(event),
                event.type,
                event.schema_version,
                event.data,
                event.metadata,
                recorded_at,
                event.data_hash,
                event.metadata_hash,
                prev_hash,
                digest,
            )
        )
        prev_hash = digest
    return rows, prev_hash


INSERT_COLUMNS = (
    "position, flow_id, revision, event_id, type, schema_version, data, metadata, "
    "recorded_at, data_hash, metadata_hash, prev_hash, hash"
)


FOLD_COLUMNS = [
    flow_events.c.flow_id,
    flow_events.c.revision,
    flow_events.c.type,
    flow_events.c.data,
    flow_events.c.recorded_at,
]


class canonical_time(sa.sql.functions.FunctionElement[str]):
    """A stored ``recorded_at`` as its canonical text; NULL for a time no store could have written.

    SQLite keeps the text itself. PostgreSQL spells it in SQL, so a row edited
    to ``'infinity'`` or a year past 9999 reads as NULL, a problem on that row,
    instead of failing the driver's conversion and with it the whole page.
    """

    type = sa.String()
    name = "canonical_time"
    inherit_cache = True


@compiles(canonical_time)
def _time_as_stored(element: canonical_time, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


@compiles(canonical_time, "postgresql")
def _time_in_sql(element: canonical_time, compiler: Any, **kw: Any) -> str:
    column = compiler.process(element.clauses, **kw)
    return (
        f"CASE WHEN {column} >= '0001-01-01 00:00:00+00' AND {column} < '10000-01-01 00:00:00+00' "
        f"THEN to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') END"
    )


VERIFY_COLUMNS: list[Any] = [
    canonical_time(column) if column.name == "recorded_at" else column for column in flow_events.columns
]
"""Every column, in table order (what the chain covers), the time as its canonical text."""


def checked_row(
    row: Sequence[Any], event_id: Callable[[Any], str | None], recorded_at: Callable[[Any], str | None]
) -> StoredRow:
    """A row of ``VERIFY_COLUMNS`` that failed a backend's quick type check, with what is wrong in it.

    An edit can leave any value in any column (SQLite keeps whatever type it
    is given): each field no store could have written becomes a defect, and
    a stand-in, so verification names the row instead of failing on it.
    ``event_id`` and ``recorded_at`` give the canonical text of the stored
    value, or None if it has none.
    """
    defects: list[str] = []

    def text(name: str, value: Any) -> str:
        if isinstance(value, str):
            return value
        defects.append(f"{name} is {_kind(value)}, not text")
        return str(value)

    def integer(name: str, value: Any) -> int:
        if type(value) is int:
            return value
        defects.append(f"{name} is {_kind(value)}, not an integer")
        return 0

    def digest(name: str, value: Any) -> bytes:
        if isinstance(value, bytes | bytearray | memoryview):
            found = bytes(value)
            if len(found) == 32:
                return found
        defects.append(f"{name} is {_kind(value)}, not 32 bytes")
        return b""

    def decoded(name: str, value: Any, decode: Callable[[Any], str | None], want: str, missing: str) -> str:
        try:
            found = decode(value)
        except (TypeError, ValueError, OverflowError):
            found = None
        if found is None:
            defects.append(f"{name} is {_kind(value)}, not {want}" if value is not None else missing)
            return ""
        return found

    position = row[0] if type(row[0]) is int else 0
    stored = StoredRow(
        position,
        text("flow_id", row[1]),
        integer("revision", row[2]),
        decoded("event_id", row[3], event_id, "a UUID", "event_id is NULL"),
        text("type", row[4]),
        integer("schema_version", row[5]),
        row[6],
        row[7],
        decoded(
            "recorded_at",
            row[8],
            recorded_at,
            "a time a store writes",
            "recorded_at is not a time a store writes (infinite, or outside the years 1 to 9999)",
        ),
        digest("data_hash", row[9]),
        digest("metadata_hash", row[10]),
        digest("prev_hash", row[11]),
        digest("hash", row[12]),
    )
    return dataclasses.replace(stored, defects=tuple(defects)) if defects else stored


COUNTER_MISSING = (
    "the position counter (event_positions) has no row: it was deleted behind the library's back"
)
"""No store deletes the ``event_positions`` row; without it no event can be given a position."""


def counter_missing(consequence: str) -> IntegrityViolation:
    return IntegrityViolation(
        f"{COUNTER_MISSING}, so {consequence}; `eventstore verify` says what else is wrong"
    )


def counter_behind() -> IntegrityViolation:
    """An append's position is taken: only a counter set back below the log's end hands one out twice."""
    return IntegrityViolation(
        "the position the append was given is already taken: the position counter (event_positions) "
        "was set back below the log's end, behind the library's back; nothing was written; "
        "`eventstore verify` says what else is wrong"
    )


def unreadable_event(row: Sequence[Any], cause: str, *, position: bool = True) -> IntegrityViolation:
    """A stored event that cannot be read as an event: only an edit leaves one.

    ``row`` starts with position, flow id and revision (a decoded read), or
    with flow id and revision (``position=False``, a read for a fold).
    """
    where = f"at position {row[0]}" if position else f"{row[0]}@{row[1]}"
    flow_id, revision = row[1:3] if position else row[0:2]
    return IntegrityViolation(
        f"the event {where} cannot be read ({cause}): it was changed after it was written; "
        "`eventstore verify` names every such row",
        # an edit may have left anything in a column: only what a store writes is passed on
        flow_id=flow_id if type(flow_id) is str else None,
        revision=revision if type(revision) is int else None,
        position=row[0] if position and type(row[0]) is int else None,
    )


def not_an_object(
    row: Sequence[Any], data: Any, metadata: Any, *, position: bool = True
) -> IntegrityViolation:
    """``unreadable_event`` for data or metadata that is valid JSON but no object: every append
    stores objects, and every reader (a fold, the audit trail) reads them as such."""
    name, value = ("data", data) if type(data) is not dict else ("metadata", metadata)
    kind = _JSON_KINDS.get(type(value), type(value).__name__)
    return unreadable_event(row, f"{name} is a JSON {kind}, not an object", position=position)


_JSON_KINDS = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def _kind(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return f"{len(value)} bytes"
    if value is None:
        return "NULL"
    shown = repr(value)
    return f"{type(value).__name__} {shown[:40]}{'...' if len(shown) > 40 else ''}"


def unmasked(exc: Exception) -> Exception:
    """The error ``exc`` stands for: itself, or the one sqlite3 hid behind an earlier statement's.

    When sqlite3 cannot bind a value (an int past 64 bits, text with a lone
    surrogate, a type it does not take) to a statement prepared before (its
    cache), and the connection's last statement failed, CPython's sqlite3
    raises that earlier error again ("no such table: ..."), with the binding's
    error as its context. That one was raised in C, so it has no traceback;
    an error a caller was handling when the driver failed has one.
    """
    context = exc.__context__
    if isinstance(exc, sqlite3.Error) and isinstance(context, Exception) and context.__traceback__ is None:
        return context
    return exc


def refused_value(exc: BaseException) -> InvalidInput | None:
    """``InvalidInput`` if ``exc`` (``unmasked``) says a statement's value cannot be stored, else None."""
    if isinstance(exc, OverflowError) or getattr(exc, "sqlstate", None) == "22003":
        return out_of_range(exc)
    if isinstance(exc, UnicodeEncodeError):  # a lone surrogate: the drivers raise it as is
        return InvalidInput(f"text must be valid UTF-8 (it holds {exc.object[exc.start : exc.end]!r})")
    return None


def out_of_range(exc: BaseException) -> InvalidInput:
    """A value in a query (``query``, ``reading()``...) its column cannot hold: alike on every backend."""
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return InvalidInput(f"a value in the query is out of range for its column ({reason})")


def _refuse_out_of_range(context: sa.engine.ExceptionContext) -> None:
    """A statement's value the driver or column cannot take is the caller's bad input, not a driver error.

    sqlite3 raises a bare ``OverflowError`` for an int past 64 bits, which
    SQLAlchemy passes on unwrapped, past the store's translation; PostgreSQL
    says ``numeric_value_out_of_range`` (22003). Both become ``InvalidInput``
    for every statement on the store's engine: its own, and those of
    ``store.reading()`` or ``tx.connection``; so does text with a lone
    surrogate (a bare ``UnicodeEncodeError`` from either driver). An error
    sqlite3 hid behind an earlier one (``unmasked``) is reported as itself.
    """
    original = context.original_exception
    error = unmasked(original) if isinstance(original, Exception) else original
    refused = refused_value(error)
    if refused is not None:
        raise refused from error
    if error is not original and isinstance(error, sqlite3.Error):
        raise sa.exc.DBAPIError.instance(
            context.statement, context.parameters, error, sqlite3.Error
        ) from error


class Backend:
    """Dialect-specific parts of the store. Subclasses fill in the hot paths."""

    name = ""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        sa.event.listen(engine, "handle_error", _refuse_out_of_range)

    # -- connections ---------------------------------------------------
    def write_connection(self) -> AbstractContextManager[sa.Connection]:
        raise NotImplementedError  # abstract: each backend begins writes its own way

    @contextmanager
    def read_connection(self) -> Iterator[sa.Connection]:
        """A pooled connection for reads, given back to the pool to the end (``give_back``)."""
        with returned(self.engine.connect()) as conn:
            yield conn

    def claim(self) -> None:
        """Called once the database is known to be the store's: set what lasts in it (SQLite: WAL)."""

    def close(self) -> None:
        """Close the pooled connections, and each one still in use as it is given back.

        ``engine.dispose`` closes only the connections in the pool: one a call
        under way holds (in another thread, or another task on the async
        drivers) would go back to the discarded pool and be left to the
        garbage collector, which cannot close an async driver's connection
        (a ResourceWarning, and a server connection open until then).
        This is ``engine.dispose`` with the listener that closes them added to
        the discarded pool only: ``dispose`` copies a pool's listeners into the
        pool it puts in its place, and ``store.engine`` must still pool
        normally after ``close``.
        """
        discarded = self.engine.pool
        replacement = discarded.recreate()
        sa.event.listen(discarded, "checkin", _close_given_back)
        self.engine.pool = replacement
        discarded.dispose()
        self.engine.dispatch.engine_disposed(self.engine)

    # -- writing -------------------------------------------------------
    def write(self, conn: sa.Connection, batch: Batch, clock: Clock) -> Written:
        raise NotImplementedError  # abstract: the append statement is per dialect

    def append_alone(self, batch: Batch, clock: Clock) -> Written | None:
        """Append outside any unit of work, if this backend has a faster way; else None."""
        return None

    def append_fused(
        self,
        batch: Batch,
        clock: Clock,
        fuse: Callable[[list[tuple[Any, ...]]], Sequence[FusedWrite] | None],
        generation: int,
    ) -> Written | None:
        """Append with inline projections' writes in one statement, if this backend can and the
        read models are still at ``generation``; else None."""
        return None

    def hold_generation(self, conn: sa.Connection) -> int:
        """The read models' generation, with appends (and so swaps) held until ``conn``'s transaction ends."""
        query = "SELECT generation FROM event_positions WHERE id = 1"
        if self.name == "postgresql":
            query += " FOR UPDATE"  # SQLite: the write transaction already holds the lock
        generation = conn.exec_driver_sql(query).scalar_one_or_none()
        if generation is None:
            raise counter_missing("no event can be given a position: nothing was written")
        return int(generation)

    def remember(self, written: Sequence[Written]) -> None:
        """Called after a commit; a backend may cache flow heads."""

    def forget(self, flow_ids: Sequence[str]) -> None:
        """Called after a rollback."""

    def unique_violation(self, exc: sa.exc.IntegrityError) -> str | None:
        """``"event_id"`` or ``"revision"`` if ``exc`` broke one of the log's unique keys."""
        raise NotImplementedError  # abstract: each driver reports constraints its own way

    def translate(self, exc: sa.exc.SQLAlchemyError) -> Exception:
        return StorageError(f"database error: {exc.orig if hasattr(exc, 'orig') else exc}")

    def connection_error(self, exc: sa.exc.SQLAlchemyError, message: str) -> Exception | None:
        """``ConnectionLost`` if SQLAlchemy found the connection dead; ``StoreBusy`` if no
        connection of the store's pool came free in time (its own message is no database's)."""
        if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
            return ConnectionLost(f"the database connection was lost: {message}")
        if isinstance(exc, sa.exc.TimeoutError):
            limits = str(exc).split(" (Background")[0]
            return StoreBusy(
                f"every connection of the store's pool stayed in use ({limits}): more threads use this "
                "store at once than its pool holds; open it with a larger pool_size, or share it among fewer"
            )
        return None

    # -- reading -------------------------------------------------------
    def decode(self, row: Sequence[Any]) -> RecordedEvent:
        raise NotImplementedError  # abstract: column types differ per dialect

    def decode_for_fold(self, row: Sequence[Any]) -> FoldInput:
        raise NotImplementedError

    def stored_row(self, row: Sequence[Any]) -> StoredRow:
        raise NotImplementedError  # abstract: column types differ per dialect

    # -- shared slow paths ----------------------------------------------
    def head(self, conn: sa.Connection, flow_id: str) -> tuple[int, bytes | None]:
        row = conn.execute(_HEAD, {"flow_id": flow_id}).first()
        return (0, None) if row is None else (row[0], bytes(row[1]))

    def earlier_append(self, conn: sa.Connection, batch: Batch, actual: int) -> AppendResult:
        """Resolve an append whose first event id exists, or whose revision is stale.

        If every event id was written, in this order, by one earlier append to
        this flow with the same type and data, that append's result is
        returned: the caller is retrying. Otherwise the right error is raised.
        """
        ids = [self.id_param(event) for event in batch.events]
        c = flow_events.c
        query = sa.select(c.event_id, c.flow_id, c.revision, c.position, c.type, c.data_hash)
        found = {
            self.id_key(row.event_id): row
            # in chunks: a statement binds at most 65535 parameters on PostgreSQL, 250000 on SQLite
            for start in range(0, len(ids), _ID_CHUNK)
            for row in conn.execute(query.where(c.event_id.in_(ids[start : start + _ID_CHUNK])))
        }
        if not found:
            assert batch.expected is not ANY, "an ANY append only comes here when an id exists"
            raise self.mismatch(conn, batch, actual)
        rows = []
        for event in batch.events:
            row = found.get(event.event_id_str)
            if row is None:
                raise DuplicateEventId(
                    uuid.UUID(next(iter(found))),
                    "was already written, but not with the other events of this append",
                )
            if row.flow_id != batch.flow_id:
                raise DuplicateEventId(event.event_id, f"was already written to flow {row.flow_id!r}")
            if row.type != event.type or bytes(row.data_hash) != event.data_hash:
                raise DuplicateEventId(event.event_id, "was already written with different content")
            rows.append(row)
        revisions = [row.revision for row in rows]
        if revisions != list(range(revisions[0], revisions[0] + len(rows))):
            raise DuplicateEventId(batch.events[0].event_id, "was written by a different append")
        if batch.expected is not ANY and revisions[0] - 1 != batch.expected:
            raise self.mismatch(conn, batch, actual)
        return AppendResult(
            flow_id=batch.flow_id,
            revision=revisions[-1],
            positions=tuple(row.position for row in rows),
            event_ids=tuple(event.event_id for event in batch.events),
        )

    def mismatch(self, conn: sa.Connection, batch: Batch, actual: int) -> RevisionMismatch | FlowPruned:
        """The error for an append at the wrong revision: ``FlowPruned`` if retention pruned the flow.

        A pruned flow (or one a restore has put only partly back) takes no
        append at any revision; saying so beats naming the revision it is at.
        """
        t = flow_tombstones.c
        archive = conn.execute(sa.select(t.archive_id).where(t.flow_id == batch.flow_id)).scalar()
        if archive is not None:
            return FlowPruned(batch.flow_id, archive)
        assert batch.expected is not ANY, "only an append expecting a revision can mismatch"
        return RevisionMismatch(batch.flow_id, batch.expected, actual)

    def id_param(self, event: PreparedEvent) -> Any:
        """An event id as this backend stores it."""
        return event.event_id

    def id_key(self, stored: Any) -> str:
        """A stored event id as its canonical string."""
        return str(stored)
