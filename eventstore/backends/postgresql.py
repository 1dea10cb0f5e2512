"""PostgreSQL: a one-statement compare-and-append, gapless positions in commit order.

The append is a single statement (docs/design.md explains it):

1. ``guard``: the flow's head is exactly the (revision, hash) we chained
   from, and the batch's first event id is not yet stored. Checked before a
   position is taken.
2. ``counter``: bump the single ``event_positions`` row. Its row lock is held
   until commit, so position blocks are handed out in commit order with no
   gaps: a reader that has seen position N can never later find a smaller one.
3. insert the rows, unnested from arrays.

Heads of recently written flows are cached per process, so the usual append
is one round trip plus the commit; a stale cache only costs a re-read, since
the guard is re-checked by the database.
"""

from __future__ import annotations

import functools
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from threading import Lock
from typing import Any

import orjson
import sqlalchemy as sa

from ..aio import current_task
from ..errors import (
    AppendOnlyViolation,
    ConcurrencyError,
    FlowPruned,
    IntegrityViolation,
    InvalidEvent,
    InvalidInput,
    StorageError,
    StoreBusy,
)
from ..events import ANY, AppendResult, FoldInput, RecordedEvent
from ..integrity import GENESIS, StoredRow, format_time
from ..projection import FusedWrite
from .base import (
    NESTED_WRITE,
    Backend,
    Batch,
    Clock,
    Raced,
    Written,
    abandon,
    chain_rows,
    checked_row,
    counter_behind,
    counter_missing,
    driver_error,
    milliseconds,
    not_an_object,
)

_HEAD = (
    "SELECT h.revision, h.hash, EXISTS (SELECT 1 FROM flow_events WHERE event_id = %(event_id)s) "
    "FROM (SELECT 1) AS one LEFT JOIN (SELECT revision, hash FROM flow_events "
    "WHERE flow_id = %(flow_id)s ORDER BY revision DESC LIMIT 1) AS h ON true"
)

_GUARDED = """
WITH guard AS (
    SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM flow_events WHERE event_id = %(first_id)s)
      AND NOT EXISTS (SELECT 1 FROM flow_events WHERE flow_id = %(flow_id)s AND revision = %(revision)s + 1)
      AND (%(revision)s = 0 OR EXISTS (
            SELECT 1 FROM flow_events
            WHERE flow_id = %(flow_id)s AND revision = %(revision)s AND hash = %(prev_hash)s))
), counter AS (
    UPDATE event_positions SET last_position = last_position + %(count)s
    WHERE id = 1 AND EXISTS (SELECT 1 FROM guard)
    RETURNING last_position, generation
)"""
# Arrays go in binary (%b): the text format escapes every quote of every JSON document, slowly.
_INSERT_ROWS = """
INSERT INTO flow_events (position, flow_id, revision, event_id, type, schema_version, data, metadata,
                         recorded_at, data_hash, metadata_hash, prev_hash, hash)
SELECT counter.last_position - %(count)s + e.ord, %(flow_id)s, %(revision)s + e.ord, e.event_id,
       e.type, e.schema_version, e.data, e.metadata, %(recorded_at)s, e.data_hash, e.metadata_hash,
       e.prev_hash, e.hash
FROM counter, unnest(%(event_ids)b::uuid[], %(types)b::text[], %(versions)b::int[],
                     %(data)b::text[]::jsonb[], %(metadata)b::text[]::jsonb[], %(data_hashes)b::bytea[],
                     %(metadata_hashes)b::bytea[], %(prev_hashes)b::bytea[], %(hashes)b::bytea[])
     WITH ORDINALITY AS e(event_id, type, schema_version, data, metadata, data_hash, metadata_hash,
                          prev_hash, hash, ord)"""
# One event (the usual append): scalar parameters, which psycopg dumps several times faster than arrays.
_INSERT_ONE = """
INSERT INTO flow_events (position, flow_id, revision, event_id, type, schema_version, data, metadata,
                         recorded_at, data_hash, metadata_hash, prev_hash, hash)
SELECT counter.last_position, %(flow_id)s, %(revision)s + 1, %(event_id)s, %(type)s, %(version)s,
       %(data1)s::jsonb, %(metadata1)s::jsonb, %(recorded_at)s, %(data_hash)s, %(metadata_hash)s,
       %(prev_hash1)s, %(hash)s
FROM counter"""
# The read models' generation comes back with the positions (``Written.generation``).
_APPEND = f"{_GUARDED}{_INSERT_ROWS}\nRETURNING position, (SELECT generation FROM counter)"
_APPEND_ONE = f"{_GUARDED}{_INSERT_ONE}\nRETURNING position, (SELECT generation FROM counter)"


FUSED_LOCK_WAIT_MS = 200
"""How long a fused append waits for the positions row before it gives way (it then retries as an
ordinary transaction): well under ``deadlock_timeout`` (1 s by default), see ``_fused_append``.
A store whose own ``lock_timeout`` is shorter keeps its own; a server whose ``deadlock_timeout``
is under twice this gets half of it."""
_GUARD_START = "SELECT 1 WHERE NOT EXISTS"
_COUNTER_WHERE = "WHERE id = 1 AND EXISTS (SELECT 1 FROM guard)"
_FUSED_COUNTER_WHERE = "WHERE id = 1 AND generation = %(generation)s AND EXISTS (SELECT 1 FROM guard)"


def _setting_ms(name: str) -> str:
    """A time setting of the session in milliseconds, as SQL."""
    return f"ceil(EXTRACT(EPOCH FROM CAST(current_setting('{name}') AS interval)) * 1000)"


_FUSED_LOCK_WAIT = (  # a lock_timeout of 0 is "no limit", never a shorter one
    f"CAST(CAST(least(coalesce(nullif({_setting_ms('lock_timeout')}, 0), {FUSED_LOCK_WAIT_MS}),"
    f" {FUSED_LOCK_WAIT_MS}, ceil({_setting_ms('deadlock_timeout')} / 2)) AS integer) AS text)"
)
_FUSED_GUARD_START = (
    f"SELECT 1 WHERE set_config('lock_timeout', {_FUSED_LOCK_WAIT}, true) IS NOT NULL AND NOT EXISTS"
)


def _fused_append(ctes: Sequence[str], *, one: bool) -> str:
    """The append with inline projections' writes (``FusedWrite.ctes``) in the same statement.

    PostgreSQL locks every table a statement names when it plans it, so a
    fused append holds the read model's tables while it waits for the
    positions row, the order opposite to a rebuild's swap (the row, then the
    tables). So its guard first sets ``lock_timeout`` for the statement's own
    transaction: the wait for the row that follows gives up after
    ``FUSED_LOCK_WAIT_MS`` (or less, see there), long before any deadlock check (which would
    abort whoever's wait reached a second first, the swap included), and the
    append is retried as an ordinary transaction, which takes the row first.

    The projections' writes are only right for the read models' generation
    the store last checked them against, so the counter also requires it
    (re-checked on the row as it is after any wait): after a swap the
    statement writes nothing, and the ordinary transaction checks them again.
    """
    insert = _INSERT_ONE if one else _INSERT_ROWS
    guarded = _GUARDED.replace(_GUARD_START, _FUSED_GUARD_START, 1).replace(
        _COUNTER_WHERE, _FUSED_COUNTER_WHERE, 1
    )
    return (
        f"{guarded}, appended AS ({insert}\n    RETURNING position, revision\n), "
        + ", ".join(ctes)
        + "\nSELECT position FROM appended"
    )


def _one_line(error: BaseException) -> str:
    """The server's message on one line: its primary text, then its detail and hint.

    psycopg's own text adds lines (``LINE 1: ...`` with a caret under the
    statement, ``DETAIL:``) meant for a terminal showing the SQL, not for
    an error a user reads.
    """
    diag = getattr(error, "diag", None)
    primary = getattr(diag, "message_primary", None)
    if not primary:
        return " ".join(str(error).split())
    parts = [primary]
    for label in ("detail", "hint"):
        text = getattr(diag, f"message_{label}", None)
        if text:
            parts.append(f"{label}: {' '.join(text.split())}")
    return "; ".join(parts)


_HEAD_CACHE_SIZE = 10_000
_LOCK_ORDER_STATES = ("40P01", "55P03")  # deadlock detected, lock not available (lock_timeout)


def create_engine(
    url: sa.URL,
    *,
    lock_timeout: float,
    idle_in_transaction_timeout: float,
    schema: str | None,
    pool_size: int,
    asynchronous: bool = False,
) -> sa.Engine:
    """The store's engine; with ``asynchronous``, the sync face of a psycopg async ``AsyncEngine``.

    ``InvalidInput`` for a timeout past PostgreSQL's limit (2**31-1 ms) or a
    schema name it could not hold; a schema that does not exist is
    ``InvalidInput`` at the first connection (``_check_schema``).
    """
    options = [
        # in ms, rounded up: under a millisecond is not 0, "forever"
        f"-c lock_timeout={milliseconds('lock_timeout', lock_timeout)}",
        "-c idle_in_transaction_session_timeout="
        f"{milliseconds('idle_in_transaction_timeout', idle_in_transaction_timeout)}",
        # a client killed mid-statement should not keep the positions lock until the statement ends
        "-c client_connection_check_interval=1000",
    ]
    if schema is not None:
        options.append(f"-c search_path={_search_path(schema)}")
    url, driver_options = _driver_options(url)
    make: Any = sa.create_engine
    if asynchronous:
        from sqlalchemy.ext.asyncio import create_async_engine

        make = create_async_engine
    engine = make(
        url,
        connect_args={"options": " ".join(options), **driver_options},
        isolation_level="READ COMMITTED",  # the append and head cache assume it, whatever the server default
        json_deserializer=orjson.loads,
        json_serializer=lambda value: orjson.dumps(value).decode(),
        pool_size=pool_size,
        max_overflow=pool_size * 4,
        pool_recycle=3600,
    )
    result: sa.Engine = engine.sync_engine if asynchronous else engine
    if schema is not None:
        sa.event.listen(result, "connect", functools.partial(_check_schema, schema))
    expected = {
        "lock_timeout": milliseconds("lock_timeout", lock_timeout),
        "idle_in_transaction_session_timeout": milliseconds(
            "idle_in_transaction_timeout", idle_in_transaction_timeout
        ),
    }
    sa.event.listen(result, "connect", functools.partial(_check_settings, expected, schema))
    return result


def _driver_options(url: sa.URL) -> tuple[sa.URL, dict[str, Any]]:
    """``url`` without the query parameters meant for psycopg itself, and those parameters as it takes them.

    ``prepare_threshold`` (how many runs of a statement before psycopg
    prepares it on the server): a whole number, or ``none`` never to
    prepare, as a transaction-pooling PgBouncer needs. In the URL's query
    it is text, which psycopg would compare with a number at the first
    statement (a ``TypeError``); ``InvalidInput`` for anything else.
    """
    if "prepare_threshold" not in url.query:
        return url, {}
    value = url.query["prepare_threshold"]
    text = value.strip().lower() if isinstance(value, str) else None
    threshold: int | None
    if text == "none":
        threshold = None
    elif text is not None and text.isascii() and text.isdigit():
        threshold = int(text)
    else:
        raise InvalidInput(
            "prepare_threshold in a PostgreSQL URL must be a whole number, 0 or more, or none "
            f"(never prepare statements, for PgBouncer in transaction mode), not {value!r}"
        )
    return url.difference_update_query(["prepare_threshold"]), {"prepare_threshold": threshold}


_BACKEND_PID = sa.text("SELECT pg_backend_pid()")

_SETTINGS = sa.text(
    "SELECT current_schema(), (SELECT setting FROM pg_settings WHERE name = 'lock_timeout'),"
    " (SELECT setting FROM pg_settings WHERE name = 'idle_in_transaction_session_timeout')"
)


def _check_settings(
    expected: dict[str, int], schema: str | None, dbapi_connection: Any, _record: Any
) -> None:
    """On each new connection: ``StorageError`` if the settings the store connects with did not arrive.

    They travel in libpq's ``options`` startup parameter, which a pooler may
    drop: PgBouncer refuses a connection that has it, unless its
    ``ignore_startup_parameters`` lists ``options``, and then the server
    never sees them. The store would then write to the schema first on the
    server's ``search_path`` (``public``), not the one it was opened on, and
    wait for locks and idle in transactions with no limit.
    """
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(str(_SETTINGS))
        current_schema, *settings = cursor.fetchone()
        if schema is not None and current_schema is None:  # set, and there (_check_schema), yet not used
            cursor.execute("SELECT has_schema_privilege(%s, 'USAGE'), current_user", (schema,))
            usable, user = cursor.fetchone()
            if not usable:
                dbapi_connection.rollback()
                dbapi_connection.close()
                raise StorageError(
                    f"the role {user!r} may not use the schema {schema!r} (it lacks the USAGE "
                    "privilege on it): ask its owner to GRANT USAGE (and CREATE, to create the store) ON "
                    "SCHEMA to that role, or open the store on another schema"
                )
    finally:
        cursor.close()
    dbapi_connection.rollback()  # idle again, as the pool hands connections out
    wrong = [
        f"{name} is {setting} ms, not {want} ms"
        for (name, want), setting in zip(expected.items(), settings, strict=True)
        if setting != str(want)
    ]
    if schema is not None and current_schema != schema:
        wrong.insert(0, f"the schema in use is {current_schema!r}, not {schema!r}")
    if wrong:
        dbapi_connection.close()
        raise StorageError(
            "PostgreSQL did not get the settings the store connects with ("
            + "; ".join(wrong)
            + "): something between them dropped libpq's options startup parameter, such as "
            "PgBouncer with ignore_startup_parameters = options. Connect to PostgreSQL itself, "
            "or see 'Behind PgBouncer' in docs/operations.md"
        )


JSONB_MAX_BYTES = 2**28 - 1  # JENTRY_OFFLENMASK: one jsonb string, array or object holds no more
_MAX_NAME_BYTES = 63  # NAMEDATALEN - 1: PostgreSQL silently cuts a longer name short, to another schema's


def _search_path(schema: str) -> str:
    """``schema`` as the one entry of a ``search_path``, for libpq's ``options``.

    Quoted as an identifier, so its case is kept ("Audit" is not "audit"), and
    with libpq's escapes (a backslash before a space or backslash).
    """
    if not isinstance(schema, str) or not schema or "\x00" in schema:
        raise InvalidInput(f"schema must be the name of a PostgreSQL schema, not {schema!r}")
    if len(schema.encode()) > _MAX_NAME_BYTES:
        raise InvalidInput(f"schema names are at most {_MAX_NAME_BYTES} bytes in PostgreSQL: {schema!r}")
    quoted = '"' + schema.replace('"', '""') + '"'
    return "".join("\\" + char if char.isspace() or char == "\\" else char for char in quoted)


def _check_schema(schema: str, dbapi_connection: Any, _record: Any) -> None:
    """On each new connection: ``InvalidInput`` if the schema it is set to does not exist.

    Without it every statement would fail (or, creating the tables, say "no
    schema has been selected to create in") with the driver's error.
    """
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s)", (schema,))
        (exists,) = cursor.fetchone()
    finally:
        cursor.close()
    dbapi_connection.rollback()  # idle again, as the pool hands connections out
    if not exists:
        dbapi_connection.close()
        quoted = schema.replace('"', '""')
        raise InvalidInput(
            f'schema "{quoted}" does not exist in this PostgreSQL database: create it '
            f'(CREATE SCHEMA "{quoted}") or fix the schema option (names are case-sensitive)'
        )


class PostgresBackend(Backend):
    name = "postgresql"

    def __init__(self, engine: sa.Engine, *, asynchronous: bool = False) -> None:
        super().__init__(engine)
        self._heads: OrderedDict[str, tuple[int, bytes]] = OrderedDict()
        self._heads_lock = Lock()
        self._owner: Callable[[], object] = current_task if asynchronous else threading.get_ident
        self._writing: set[object] = set()
        """The threads (tasks, on the async driver) inside a write transaction of this store: a write
        of theirs on another connection would wait for the locks their own transaction holds."""

    def claim(self) -> None:
        """``StorageError`` if a pooler shares server sessions between the store's connections.

        PgBouncer in transaction (or statement) mode hands each transaction
        whichever server session is free, so what lasts in a session does not
        stay with the connection that set it: a process lock
        (``process_locks``) would be held by no one in particular, and taken
        by two processes at once. Two connections of the store's, the first
        idle between transactions, are asked which server process serves
        them: PostgreSQL itself gives each its own, such a pooler gives the
        second the first's (it hands out the session freed last).
        """
        # Connections of their own, not the store's pool: it keeps the one connection it has.
        probe = sa.create_engine(self.engine.url.set(drivername="postgresql+psycopg"), poolclass=sa.NullPool)
        try:
            with probe.connect() as first, probe.connect() as second:
                pid = first.execute(_BACKEND_PID).scalar()
                first.commit()  # between transactions: a transaction pooler takes its session back
                shared = second.execute(_BACKEND_PID).scalar() == pid
        finally:
            probe.dispose()
        if shared:
            raise StorageError(
                "two connections of the store were served by the same PostgreSQL session: a pooler in "
                "transaction mode (PgBouncer's pool_mode = transaction) stands in between, and the "
                "store's process locks (rebuilds, maintenance jobs) need sessions of their own. Use "
                "pool_mode = session, or connect to PostgreSQL itself "
                "(docs/operations.md, 'Behind PgBouncer')"
            )

    def _refuse_nested(self) -> object:
        """Who is calling; ``InvalidInput`` at once, as on SQLite, if they are inside a write transaction."""
        me = self._owner()
        if me in self._writing:
            raise InvalidInput(NESTED_WRITE)
        return me

    @contextmanager
    def write_connection(self) -> Iterator[sa.Connection]:
        """A transaction, committed when the block ends, rolled back if it raises.

        An interruption (a cancelled task, Ctrl-C) drops the connection
        (``base.abandon``) and is raised as it is: never as the error of a
        rollback on a connection psycopg closed (a second cancellation cuts
        its cancelling of the query short), which an append would take for a
        lost connection and retry, in a task told to stop.
        """
        me = self._refuse_nested()
        self._writing.add(me)
        try:
            with self.engine.connect() as conn:
                conn.begin()
                try:
                    yield conn
                except Exception:
                    conn.rollback()
                    raise
                except BaseException:
                    abandon(conn)
                    raise
                conn.commit()
        finally:
            self._writing.discard(me)

    @contextmanager
    def _autocommit(self) -> Iterator[sa.Connection]:
        """A connection for one statement in autocommit mode, dropped if an interruption cuts into it."""
        self._refuse_nested()
        with self.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            try:
                yield conn
            except Exception:
                raise
            except BaseException:
                abandon(conn)
                raise

    def write(self, conn: sa.Connection, batch: Batch, clock: Clock) -> Written:
        flow_id = batch.flow_id
        cached = self._cached_head(flow_id)
        if cached is not None and (batch.expected is ANY or cached[0] == batch.expected):
            written = self._insert(conn, batch, cached[0], cached[1], clock)
            if written is not None:
                return written
            self.forget([flow_id])  # the guard failed: the cache was stale or the first id is stored
        revision, prev_hash, first_exists = self._read_head(conn, batch)
        if first_exists or (batch.expected is not ANY and batch.expected != revision):
            return Written(self.earlier_append(conn, batch, revision), [], b"", clock())
        written = self._insert(conn, batch, revision, prev_hash, clock)
        if written is None:
            with self.engine.connect() as fresh:
                actual = self.head(fresh, flow_id)[0]
                if not fresh.exec_driver_sql("SELECT count(*) FROM event_positions").scalar_one():
                    # the insert found no counter to bump: no race, no retry
                    raise counter_missing("no event can be given a position: nothing was written")
            raise Raced(flow_id, batch.expected if batch.expected is not ANY else revision, actual)
        return written

    def append_alone(self, batch: Batch, clock: Clock) -> Written | None:
        """One statement in autocommit mode, when the flow's head is cached: one round trip.

        The statement's guard re-checks the cached head inside the database, so
        a stale cache only means ``None`` (the caller takes the full path).
        """
        cached = self._cached_head(batch.flow_id)
        if cached is None or (batch.expected is not ANY and cached[0] != batch.expected):
            return None
        with self._autocommit() as conn:
            try:
                written = self._insert(conn, batch, cached[0], cached[1], clock)
            except sa.exc.IntegrityError as exc:
                self.forget([batch.flow_id])
                exc.eventstore_batch = batch  # type: ignore[attr-defined]  # read by the store's guard
                raise
        if written is None:
            self.forget([batch.flow_id])
            return None
        self.remember([written])
        return written

    def _read_head(self, conn: sa.Connection, batch: Batch) -> tuple[int, bytes, bool]:
        revision, prev_hash, first_exists = conn.exec_driver_sql(
            _HEAD, {"event_id": batch.events[0].event_id, "flow_id": batch.flow_id}
        ).one()
        return revision or 0, bytes(prev_hash) if prev_hash is not None else GENESIS, first_exists

    def append_fused(
        self,
        batch: Batch,
        clock: Clock,
        fuse: Callable[[list[tuple[Any, ...]]], Sequence[FusedWrite] | None],
        generation: int,
    ) -> Written | None:
        """``append_alone`` with the inline projections' writes in the same statement.

        ``fuse`` gets the rows about to be inserted (positions not yet known)
        and returns the projections' ``FusedWrite``s, or None when one of them
        cannot fuse: then, as on a stale head, or when the read models'
        generation is no longer ``generation``, the caller takes the full path.
        """
        cached = self._cached_head(batch.flow_id)
        if cached is None or (batch.expected is not ANY and cached[0] != batch.expected):
            return None
        revision, prev_hash = cached
        now = clock()
        rows, last_hash = chain_rows(batch, revision, prev_hash, 0, format_time(now))
        fused = fuse(rows)
        if fused is None:
            return None
        params: dict[str, Any] = {"generation": generation}
        for write in fused:
            params.update(write.params)
        ctes = [cte for write in fused for cte in write.ctes]
        with self._autocommit() as conn:
            try:
                written = self._run(conn, batch, revision, prev_hash, rows, last_hash, now, ctes, params)
            except sa.exc.IntegrityError as exc:
                self.forget([batch.flow_id])
                exc.eventstore_batch = batch  # type: ignore[attr-defined]  # read by the store's guard
                raise
            except sa.exc.DBAPIError as exc:
                if getattr(exc.orig, "sqlstate", None) not in _LOCK_ORDER_STATES:
                    raise
                # The statement locks the read models' tables when it is parsed, before the
                # positions row: a rebuild's swap takes them the other way round. Nothing was
                # written; the ordinary transaction takes the locks in the swap's order.
                written = None
        if written is None:
            self.forget([batch.flow_id])
            return None
        self.remember([written])
        return written

    def _insert(
        self, conn: sa.Connection, batch: Batch, revision: int, prev_hash: bytes, clock: Clock
    ) -> Written | None:
        now = clock()
        rows, last_hash = chain_rows(batch, revision, prev_hash, 0, format_time(now))
        return self._run(conn, batch, revision, prev_hash, rows, last_hash, now)

    def _run(
        self,
        conn: sa.Connection,
        batch: Batch,
        revision: int,
        prev_hash: bytes,
        rows: list[tuple[Any, ...]],
        last_hash: bytes,
        now: datetime,
        ctes: Sequence[str] = (),
        fused_params: Mapping[str, Any] | None = None,
    ) -> Written | None:
        """Run the append (with ``ctes`` fused in, if any); None if its guard found the head moved."""
        events = batch.events
        one = len(events) == 1
        params: dict[str, Any] = {
            "first_id": events[0].event_id,
            "flow_id": batch.flow_id,
            "revision": revision,
            "prev_hash": prev_hash,
            "count": len(events),
            "recorded_at": now,
        }
        if one:
            event, row = events[0], rows[0]
            params.update(
                event_id=event.event_id,
                type=event.type,
                version=event.schema_version,
                data1=event.data.decode(),
                metadata1=event.metadata.decode(),
                data_hash=event.data_hash,
                metadata_hash=event.metadata_hash,
                prev_hash1=row[11],
                hash=row[12],
            )
        else:
            params.update(
                event_ids=[event.event_id for event in events],
                types=[event.type for event in events],
                versions=[event.schema_version for event in events],
                data=[event.data.decode() for event in events],
                metadata=[event.metadata.decode() for event in events],
                data_hashes=[event.data_hash for event in events],
                metadata_hashes=[event.metadata_hash for event in events],
                prev_hashes=[row[11] for row in rows],
                hashes=[row[12] for row in rows],
            )
        statement = _APPEND_ONE if one else _APPEND
        if ctes:
            statement = _fused_append(ctes, one=one)
            params.update(fused_params or {})
        raw: Any = conn.connection.dbapi_connection  # SQLAlchemy's statement machinery costs ~0.1 ms here
        cursor = raw.cursor()
        try:
            cursor.execute(statement, params)
            returned = cursor.fetchall()
        except conn.dialect.loaded_dbapi.Error as exc:
            raise driver_error(conn, exc, statement, params, cursor) from exc
        finally:
            cursor.close()
        if not returned:
            return None
        positions = sorted(row[0] for row in returned)
        # a fused statement only wrote at the generation it was given
        generation = params["generation"] if ctes else returned[0][1]
        rows = [(position, *row[1:]) for position, row in zip(positions, rows, strict=True)]
        result = AppendResult(
            flow_id=batch.flow_id,
            revision=revision + len(events),
            positions=tuple(positions),
            event_ids=tuple(event.event_id for event in events),
        )
        return Written(result, rows, last_hash, now, generation)

    # -- the head cache ------------------------------------------------
    def _cached_head(self, flow_id: str) -> tuple[int, bytes] | None:
        with self._heads_lock:
            return self._heads.get(flow_id)

    def remember(self, written: Sequence[Written]) -> None:
        with self._heads_lock:
            for item in written:
                if item.rows:
                    flow_id = item.result.flow_id
                    self._heads[flow_id] = (item.result.revision, item.last_hash)
                    self._heads.move_to_end(flow_id)
            while len(self._heads) > _HEAD_CACHE_SIZE:
                self._heads.popitem(last=False)

    def forget(self, flow_ids: Sequence[str]) -> None:
        with self._heads_lock:
            for flow_id in flow_ids:
                self._heads.pop(flow_id, None)

    # -- errors and decoding -------------------------------------------
    def translate(self, exc: sa.exc.SQLAlchemyError) -> Exception:
        orig = getattr(exc, "orig", None)
        sqlstate = getattr(orig, "sqlstate", None)
        message = _one_line(orig if orig is not None else exc)
        lost = self.connection_error(exc, message)
        if lost is not None:
            return lost
        if sqlstate is None and _unreadable_value(orig):
            # psycopg could not load a value the server sent: only a row edited by hand holds one
            return IntegrityViolation(
                f"a stored value cannot be read ({message}); the log holds a row no store writes: "
                "`eventstore verify` names it"
            )
        if sqlstate == "EA001":
            return AppendOnlyViolation(message)
        if sqlstate == "EA002":  # migration 0005's reuse guard: the flow as DETAIL, its archive as HINT
            diag = getattr(orig, "diag", None)
            flow_id = getattr(diag, "message_detail", None) or "?"
            return FlowPruned(flow_id, getattr(diag, "message_hint", None))
        if sqlstate == "54000" and "jsonb" in message:  # program_limit_exceeded, by an event's data
            # Not PayloadTooLarge: what is over the limit is jsonb's own encoding of one value, which
            # can be larger than the event's JSON text (a number takes 12 bytes as jsonb), so no
            # honest size can be given; max_payload_bytes cannot raise the limit.
            return InvalidEvent(
                f"PostgreSQL cannot store this event data or metadata ({message}): its jsonb holds at "
                f"most {JSONB_MAX_BYTES} bytes in one string, array or object, whatever "
                "max_payload_bytes allows; nothing was written"
            )
        if sqlstate == "23505":
            constraint = getattr(getattr(orig, "diag", None), "constraint_name", None)
            if constraint == "pk_flow_events":
                return counter_behind()
            return StorageError(f"a unique constraint was violated: {message}")
        if sqlstate in ("55P03", "57014"):
            return StoreBusy(f"PostgreSQL lock or statement timeout: {message}")
        if sqlstate in ("40001", "40P01"):
            return ConcurrencyError(f"PostgreSQL aborted a conflicting transaction: {message}")
        return StorageError(f"PostgreSQL error: {message}")

    def unique_violation(self, exc: sa.exc.IntegrityError) -> str | None:
        orig = exc.orig
        if getattr(orig, "sqlstate", None) != "23505":
            return None
        constraint = getattr(getattr(orig, "diag", None), "constraint_name", "") or ""
        if constraint == "uq_flow_events_event_id":
            return "event_id"
        if constraint == "uq_flow_events_flow_revision":
            return "revision"
        return None  # a read model's key (a projection's own bug): reported, never retried as a race

    def decode(self, row: Sequence[Any]) -> RecordedEvent:
        if type(row[6]) is not dict or type(row[7]) is not dict:  # jsonb holds any JSON an edit wrote
            raise not_an_object(row, row[6], row[7])
        return RecordedEvent(
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            row[6],
            row[7],
            row[8],
            bytes(row[9]).hex(),
            bytes(row[10]).hex(),
        )

    def decode_for_fold(self, row: Sequence[Any]) -> FoldInput:
        if type(row[3]) is not dict:
            raise not_an_object(row, row[3], {}, position=False)
        return FoldInput(row[0], row[1], row[2], row[3], row[4])

    def stored_row(self, row: Sequence[Any]) -> StoredRow:
        recorded_at = row[8]  # canonical text, or NULL for a time no store writes (VERIFY_COLUMNS)
        hashes = bytes(row[9]), bytes(row[10]), bytes(row[11]), bytes(row[12])
        if (
            recorded_at is not None
            and len(hashes[0]) == len(hashes[1]) == len(hashes[2]) == len(hashes[3]) == 32
        ):
            return StoredRow(
                row[0], row[1], row[2], str(row[3]), row[4], row[5], row[6], row[7], recorded_at, *hashes
            )
        return checked_row(row, str, _time_text)  # an edit left a value no store writes


def _time_text(value: Any) -> str | None:
    return value if type(value) is str else None


_UNLOADABLE = re.compile(r"too (large|small) \((after|before) year|can't parse|not supported by Python")
"""What psycopg says when a value it fetched has no Python form (its loaders; a parameter it
could not send, e.g. a NUL in text, says something else)."""


def _unreadable_value(orig: object) -> bool:
    """psycopg's error for a value it could not convert to Python, e.g. a time of ``'infinity'``."""
    import psycopg

    return isinstance(orig, psycopg.DataError) and bool(_UNLOADABLE.search(str(orig)))
