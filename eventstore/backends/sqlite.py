"""SQLite: one writer at a time, so appends read the head inside the write lock.

Every write transaction starts with ``BEGIN IMMEDIATE``: it takes SQLite's
write lock up front, so colliding writers wait (``busy_timeout``) instead of
failing with "database is locked" when a read tries to become a write. Reads
run in autocommit mode: each page query sees the latest committed state and
no read holds a snapshot that would keep the WAL from being checkpointed.
Event ids are stored as their 16 bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from urllib.parse import unquote

import orjson
import sqlalchemy as sa
from sqlalchemy.util.concurrency import in_greenlet

from ..aio import LoopLock, current_task, pause, shielded, to_the_end
from ..errors import (
    AppendOnlyViolation,
    FlowPruned,
    IntegrityViolation,
    InvalidInput,
    StorageError,
    StoreBusy,
)
from ..events import ANY, AppendResult, FoldInput, RecordedEvent, uuid_from_bytes
from ..integrity import GENESIS, StoredRow, format_time
from ..schema import flow_tombstones
from .base import (
    INSERT_COLUMNS,
    NESTED_WRITE,
    Backend,
    Batch,
    Clock,
    PreparedEvent,
    Written,
    abandon,
    chain_rows,
    checked_row,
    counter_behind,
    counter_missing,
    milliseconds,
    not_an_object,
    returned,
    unreadable_event,
)

_HEAD = (
    "SELECT h.revision, h.hash, EXISTS (SELECT 1 FROM flow_events WHERE event_id = ?) "
    "FROM (SELECT 1) LEFT JOIN (SELECT revision, hash FROM flow_events "
    "WHERE flow_id = ? ORDER BY revision DESC LIMIT 1) AS h"
)
_TAKE_POSITIONS = (
    "UPDATE event_positions SET last_position = last_position + ? WHERE id = 1 "
    "RETURNING last_position, generation"
)
_INSERT = f"INSERT INTO flow_events ({INSERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"

_loads = orjson.loads
_from_iso = datetime.fromisoformat


def _json_column(value: str | bytes | float) -> Any:
    """A JSON column's value. The read models' JSON columns are TEXT (``projections.types.JSON``),
    but SQLite gives one declared ``JSON`` (``sa.JSON``, or a read model built before) numeric
    affinity: a document that is a bare number comes back as that number, not as its text."""
    return value if isinstance(value, int | float) else orjson.loads(value)


def create_engine(
    url: sa.URL, *, busy_timeout: float, synchronous: str, pool_size: int, asynchronous: bool = False
) -> sa.Engine:
    """The store's engine; with ``asynchronous``, the sync face of an aiosqlite ``AsyncEngine``.

    Code on the async face's connections must run under ``eventstore.aio``
    (in SQLAlchemy's greenlet), where each driver call awaits on the loop.
    A ``busy_timeout`` past SQLite's limit (2**31-1 ms, which SQLite would
    turn into no wait at all) is ``InvalidInput``.
    """
    busy_ms = milliseconds("busy_timeout", busy_timeout)
    options: dict[str, Any] = {
        "connect_args": {"timeout": busy_timeout, "check_same_thread": False},
        "pool_size": pool_size,
        "max_overflow": pool_size * 4,
        "json_serializer": lambda value: orjson.dumps(value).decode(),
        "json_deserializer": _json_column,
    }
    if asynchronous:
        from sqlalchemy.ext.asyncio import create_async_engine

        try:
            engine = create_async_engine(url.set(drivername="sqlite+aiosqlite"), **options).sync_engine
        except ImportError as exc:
            raise StorageError(
                "an async SQLite store needs aiosqlite: pip install 'agent-eventstore[asyncio]'"
            ) from exc
        engine.dialect.do_terminate = _terminate_to_the_end  # type: ignore[method-assign]  # this engine's only
    else:
        engine = sa.create_engine(url, poolclass=sa.QueuePool, **options)

    @sa.event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # autocommit reads; writes say BEGIN IMMEDIATE
        dbapi_connection.execute(f"PRAGMA busy_timeout = {busy_ms}")
        dbapi_connection.execute(f"PRAGMA synchronous = {synchronous}")
        dbapi_connection.execute("PRAGMA foreign_keys = ON")

    @sa.event.listens_for(engine, "handle_error")
    def _close_interrupted(context: sa.engine.ExceptionContext) -> None:
        # An interruption (a cancelled task) makes SQLAlchemy drop the connection, but not close the
        # cursor first: a SELECT the driver had started stays open on it, and the closed connection
        # lingers, holding its read lock, for as long as the traceback keeps the cursor alive.
        # (``context.cursor`` is never set in SQLAlchemy 2.1: the execution context has it.)
        cursor = getattr(context.execution_context, "cursor", None)
        if cursor is not None and not isinstance(context.original_exception, Exception):
            shielded(cursor.close)

    return engine


def _terminate_to_the_end(dbapi_connection: Any) -> None:
    """Close an aiosqlite connection the pool drops, to the end even if the task is cancelled again.

    The pool drops a connection a cancellation cut into (while it was being
    configured, or mid-statement). SQLAlchemy's own way awaits a graceful
    close and, if a second cancellation cuts that wait, stops aiosqlite's
    thread: the graceful close, already under way, then waits for ever for the
    stopped thread, and asyncio logs "Task was destroyed but it is pending!"
    when the garbage collector finds it. Here the close runs to its end
    (``eventstore.aio.to_the_end``), and a cancellation that came meanwhile is
    raised after it. Outside SQLAlchemy's greenlet (the garbage collector's
    clean-up) there is no loop to await on: SQLAlchemy's way stops the thread.
    """
    if not in_greenlet():
        dbapi_connection.terminate()
        return

    def close() -> None:
        with contextlib.suppress(Exception):  # a broken connection: aiosqlite's close stops its thread anyway
            dbapi_connection.close()

    if to_the_end(close)[1]:
        raise asyncio.CancelledError


def _driver_error(exc: sqlite3.Error, statement: str, params: Any) -> sa.exc.StatementError:
    """The driver's error as SQLAlchemy would have wrapped it, for the store to translate once."""
    return sa.exc.DBAPIError.instance(statement, params, exc, sqlite3.Error)


class SQLiteBackend(Backend):
    name = "sqlite"

    def __init__(self, engine: sa.Engine, *, asynchronous: bool = False, busy_timeout: float = 30.0) -> None:
        super().__init__(engine)
        self._asynchronous = asynchronous
        self._busy_timeout = busy_timeout
        self._writer: sa.Connection | None = None
        self._writer_lock: threading.Lock | LoopLock = LoopLock() if asynchronous else threading.Lock()
        self._writer_owner: object = None
        self._owner = current_task if asynchronous else threading.get_ident

    def claim(self) -> None:
        """Put the database in WAL mode, which lasts in the file (a no-op once it is).

        Only for a database known to be the store's (being created or
        upgraded, or its schema checked): a connection does not set it, so
        opening another program's database only to inspect it (``db current``)
        leaves its journal mode as it was.

        Switching a new file to WAL needs its exclusive lock, and SQLite
        refuses it at once, without waiting ``busy_timeout``, when another
        process switching the same file holds its shared lock: each would wait
        for the other. So it tries again after a pause (1 ms, doubling to
        50 ms) until ``busy_timeout`` has passed; once the file is in WAL
        mode the statement takes no lock.
        """

        def switch() -> None:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode = WAL")

        _while_busy(switch, self._busy_timeout)

    @contextmanager
    def write_connection(self) -> Iterator[sa.Connection]:
        """The store's one writer connection, holding SQLite's write lock until the block ends.

        SQLite has one writer at a time anyway: threads of this process queue
        on a lock (a fast hand-over) instead of polling the file lock, and the
        connection stays open between appends. ``BEGIN IMMEDIATE`` takes the
        write lock up front; other processes wait for it (``busy_timeout``).
        The transaction is driven on the driver connection: an append is a
        handful of statements, and SQLAlchemy's per-statement and begin/commit
        machinery cost more than they did. Work done through the yielded
        SQLAlchemy connection joins the same transaction.
        """
        me = self._owner()
        if self._writer_owner == me:
            raise InvalidInput(NESTED_WRITE)
        with self._writer_lock:
            self._writer_owner = me
            try:
                yield from self._transaction()
            finally:
                self._writer_owner = None

    @contextmanager
    def read_connection(self) -> Iterator[sa.Connection]:
        """A pooled connection for reads; one an interruption (a cancelled task) cut into is dropped.

        The interruption may leave a SELECT the driver started open on it (its
        cursor kept alive by the traceback): back in the pool, the connection
        would serve that old snapshot to the next reader and hold the WAL from
        being checkpointed. So it is rolled back and closed (``base.abandon``).
        """
        with returned(self.engine.connect()) as conn:
            try:
                yield conn
            except (Exception, GeneratorExit):
                raise
            except BaseException:
                if not conn.invalidated:  # SQLAlchemy drops one whose statement was interrupted itself
                    abandon(conn)
                raise

    def _transaction(self) -> Iterator[sa.Connection]:
        conn = self._writer
        if conn is None or conn.closed or conn.invalidated:
            conn = self._writer = self.engine.connect()
            if self._asynchronous:  # the wait for the lock is ours (_begin): a cancellation can end it
                conn.connection.dbapi_connection.execute("PRAGMA busy_timeout = 0")  # type: ignore[union-attr]
        raw: Any = conn.connection.dbapi_connection  # sqlite3's, or SQLAlchemy's adapted aiosqlite
        try:
            self._begin(raw)
        except sqlite3.Error as exc:
            raise _driver_error(exc, "BEGIN IMMEDIATE", ()) from exc
        except BaseException:
            # Cancelled while waiting for the lock (asyncio): aiosqlite's thread may still take it.
            # The rollback queues behind the BEGIN, which lets the lock go.
            self._abandon(conn)
            raise
        try:
            yield conn
        except Exception:
            self._end(conn, raw, commit=False)
            raise
        except BaseException:
            self._abandon(conn)
            raise
        self._end(conn, raw, commit=True)

    def _begin(self, raw: Any) -> None:
        """``BEGIN IMMEDIATE``; on the async driver, waiting for the lock here rather than in SQLite.

        SQLite's own wait (``busy_timeout``) sleeps in aiosqlite's thread,
        where no cancellation reaches it: a cancelled append would wait on for
        up to ``busy_timeout``. The async writer has no SQLite wait; it tries
        again after a pause on the loop (1 ms, doubling to 50 ms, as SQLite's
        own back-off does), until ``busy_timeout`` has passed, so a
        cancellation ends the wait at once. Another process's commit may
        take the lock between two tries: as with SQLite's wait, there is no
        queue.
        """
        if not self._asynchronous:
            raw.execute("BEGIN IMMEDIATE")
            return
        _while_busy(lambda: raw.execute("BEGIN IMMEDIATE"), self._busy_timeout)

    def _abandon(self, conn: sa.Connection) -> None:
        """Drop the writer an interruption cut into (``base.abandon``), never to use it again.

        A statement it left in progress would make every later COMMIT on it
        fail ("SQL statements in progress").
        """
        self._writer = None
        abandon(conn)

    def _end(self, conn: sa.Connection, raw: Any, *, commit: bool) -> None:
        try:
            if conn.in_transaction():  # SQLAlchemy work joined: end it there, which ends ours
                conn.commit() if commit else conn.rollback()
            elif getattr(raw, "in_transaction", True):  # (the aiosqlite adapter cannot tell: ending is safe)
                if conn.get_transaction() is not None:
                    conn.rollback()  # SQLAlchemy's went inactive at a fold's COMMIT, refused: ours did not
                raw.commit() if commit else raw.rollback()
        except sqlite3.Error as exc:
            self._discard()
            raise _driver_error(exc, "COMMIT" if commit else "ROLLBACK", ()) from exc
        except Exception:  # SQLAlchemy's errors
            self._discard()
            raise
        except BaseException:  # a cancellation (asyncio) mid-commit: the COMMIT runs on, or failed
            self._abandon(conn)
            raise

    def _discard(self) -> None:
        if self._writer is not None:
            self._writer.invalidate()
            self._writer = None

    def close(self) -> None:
        with self._writer_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        super().close()

    def write(self, conn: sa.Connection, batch: Batch, clock: Clock) -> Written:
        raw: Any = conn.connection.dbapi_connection
        statement: str = _HEAD
        params: Any = (batch.events[0].event_id.bytes, batch.flow_id)
        try:
            revision, prev_hash, first_exists = raw.execute(statement, params).fetchone()
            revision = revision or 0
            if first_exists or (batch.expected is not ANY and batch.expected != revision):
                return _replayed(self.earlier_append(conn, batch, revision))
            count = len(batch.events)
            statement, params = _TAKE_POSITIONS, (count,)
            taken = raw.execute(statement, params).fetchone()
            if taken is None:
                raise counter_missing("no event can be given a position: nothing was written")
            last_position, generation = taken
            now = clock()
            rows, last_hash = chain_rows(
                batch, revision, prev_hash or GENESIS, last_position - count + 1, format_time(now), _id_bytes
            )
            statement, params = _INSERT, rows
            raw.cursor().executemany(statement, rows)
        except sqlite3.Error as exc:
            raise _driver_error(exc, statement, params) from exc
        result = AppendResult(
            flow_id=batch.flow_id,
            revision=revision + count,
            positions=tuple(range(last_position - count + 1, last_position + 1)),
            event_ids=tuple(event.event_id for event in batch.events),
        )
        return Written(result, rows, last_hash, now, generation)

    def id_param(self, event: PreparedEvent) -> Any:
        return event.event_id.bytes

    def id_key(self, stored: Any) -> str:
        return str(uuid_from_bytes(stored))

    def translate(self, exc: sa.exc.SQLAlchemyError) -> Exception:
        message = str(getattr(exc, "orig", exc))
        lost = self.connection_error(exc, message)
        if lost is not None:
            return lost
        if "append-only" in message:
            return AppendOnlyViolation(message)
        if "UNIQUE constraint failed: flow_events.position" in message:
            return counter_behind()
        if "was pruned by retention" in message:
            return self._pruned(exc)
        if "database is locked" in message or "database is busy" in message:
            return StoreBusy(f"SQLite stayed locked past the busy timeout: {message}")
        if str(getattr(getattr(exc, "orig", None), "sqlite_errorname", "")).startswith("SQLITE_READONLY"):
            # a file, or a directory it cannot create -wal and -shm in (even to read), that this user
            # may not write, a read-only file system, or a mode=ro URL: SQLite says only "readonly"
            file = database_file(self.engine.url)
            return StorageError(
                f"SQLite error: {message}: the store must write {file} and create {file}-wal and "
                f"{file}-shm beside it (to read, too); check that this user may write the file and its "
                "directory, and that the file system is not mounted read-only (or the URL says mode=ro)"
            )
        return StorageError(f"SQLite error: {message}")

    def _pruned(self, exc: sa.exc.SQLAlchemyError) -> FlowPruned:
        """The reuse guard's refusal: its message is a constant, so the flow is found in the rows.

        Every insert into ``flow_events`` (an append, an import or restore)
        passes rows in column order: ``(position, flow_id, revision, ...)``;
        the refused row is one of a flow with a tombstone.
        """
        params = getattr(exc, "params", None)
        rows = params if isinstance(params, list) else [params]
        flow_ids = list(dict.fromkeys(row[1] for row in rows if isinstance(row, tuple) and len(row) > 2))
        t = flow_tombstones.c
        try:
            with self.engine.connect() as conn:
                query = sa.select(t.flow_id, t.archive_id).where(t.flow_id.in_(flow_ids[:500]))
                found = {flow_id: archive for flow_id, archive in conn.execute(query)}
        except sa.exc.SQLAlchemyError:
            found = {}  # the refusal is what matters; the flow and archive are only hints
        flow_id = next((flow_id for flow_id in flow_ids if flow_id in found), None)
        if flow_id is None:
            return FlowPruned(flow_ids[0] if len(flow_ids) == 1 else "?", None)
        return FlowPruned(flow_id, found[flow_id])

    def unique_violation(self, exc: sa.exc.IntegrityError) -> str | None:
        message = str(exc.orig)
        if "UNIQUE constraint failed" not in message:
            return None
        if "flow_events.event_id" in message:
            return "event_id"
        if "flow_events.flow_id, flow_events.revision" in message:
            return "revision"
        return None  # a read model's key (a projection's own bug): reported, never retried as a race

    def decode(self, row: Sequence[Any]) -> RecordedEvent:
        try:
            data, metadata = _loads(row[6]), _loads(row[7])
            event = RecordedEvent(
                row[0],
                row[1],
                row[2],
                uuid_from_bytes(row[3]),
                row[4],
                row[5],
                data,
                metadata,
                _from_iso(row[8]),
                row[9].hex(),
                row[10].hex(),
            )
        except (TypeError, ValueError, AttributeError) as exc:  # SQLite keeps whatever an edit wrote
            raise _unreadable(row, exc) from exc
        if type(data) is not dict or type(metadata) is not dict:
            raise not_an_object(row, data, metadata)
        return event

    def decode_for_fold(self, row: Sequence[Any]) -> FoldInput:
        try:
            data = _loads(row[3])
            event = FoldInput(row[0], row[1], row[2], data, _from_iso(row[4]))
        except (TypeError, ValueError) as exc:
            raise _unreadable(row, exc, position=False) from exc
        if type(data) is not dict:
            raise not_an_object(row, data, {}, position=False)
        return event

    def stored_row(self, row: Sequence[Any]) -> StoredRow:
        position, flow_id, revision, event_id, kind, version, data, metadata, at, h1, h2, h3, h4 = row
        if (  # what every append writes; anything else was left by an edit (SQLite keeps any type)
            type(event_id) is bytes
            and type(h1) is bytes
            and type(h2) is bytes
            and type(h3) is bytes
            and type(h4) is bytes
            and len(event_id) + 16 == len(h1) == len(h2) == len(h3) == len(h4) == 32
            and type(at) is str
            and type(flow_id) is str
            and type(kind) is str
            and type(revision) is int
            and type(version) is int
        ):
            event_text = str(uuid_from_bytes(event_id))
            return StoredRow(
                position, flow_id, revision, event_text, kind, version, data, metadata, at, h1, h2, h3, h4
            )
        return checked_row(row, _id_text, _time_text)


def _while_busy(attempt: Callable[[], object], busy_timeout: float) -> None:
    """``attempt()``, tried again while SQLite says SQLITE_BUSY, after a pause (1 ms, doubling to
    50 ms, as SQLite's own back-off does; on the loop under ``run``), until ``busy_timeout`` has
    passed: for the waits SQLite's own ``busy_timeout`` does not cover."""
    deadline = time.monotonic() + busy_timeout
    delay = 0.001
    while True:
        try:
            attempt()
            return
        except (sqlite3.OperationalError, sa.exc.OperationalError) as exc:
            left = deadline - time.monotonic()
            if not _busy(exc) or left <= 0:
                raise
        pause(min(delay, left))
        delay = min(delay * 2, 0.05)


def _busy(exc: Exception) -> bool:
    """Whether SQLite said SQLITE_BUSY (any extended code): sqlite3's error, or SQLAlchemy's wrapping
    it (the async adapter's wraps it once more)."""
    orig = getattr(exc, "orig", None)
    for error in (exc, orig, getattr(orig, "__cause__", None)):
        code = getattr(error, "sqlite_errorcode", None)
        if code is not None:
            return bool(code & 0xFF == sqlite3.SQLITE_BUSY)
    return False


def database_file(url: sa.URL) -> str:
    """The file a SQLite URL names, for messages: a ``uri=true`` URL's ``file:`` path as SQLite reads
    it (``file:x``, ``file:///x``, ``file://localhost/x``, percent-escapes decoded)."""
    name = url.database or ""
    if name[:5].lower() != "file:" or not sa.util.asbool(url.query.get("uri", False)):
        return name
    name = name[5:]
    if name.startswith("//"):
        name = name[2:]
        name = name[name.find("/") :] if "/" in name else ""
    return unquote(name.partition("#")[0])


def _unreadable(row: Sequence[Any], exc: Exception, *, position: bool = True) -> IntegrityViolation:
    return unreadable_event(row, f"{type(exc).__name__}: {exc}", position=position)


def _id_text(value: Any) -> str | None:
    return str(uuid_from_bytes(value)) if type(value) is bytes and len(value) == 16 else None


def _time_text(value: Any) -> str | None:
    return value if type(value) is str else None


def _id_bytes(event: PreparedEvent) -> bytes:
    return event.event_id.bytes


def _replayed(result: AppendResult) -> Written:
    """An append answered from history: nothing new was written."""
    return Written(result, [], b"", datetime.min)
