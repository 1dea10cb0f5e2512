"""``EventStore``: append to flows, read them back, verify their chains.

``Transaction`` (re-exported here) is in ``eventstore.transaction``; the checks of the
store's options and the backend for a URL are in ``eventstore.opening``.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import sqlalchemy as sa
from alembic.util.exc import CommandError as AlembicError

from . import migrate
from .backends.base import (
    COUNTER_MISSING,
    FOLD_COLUMNS,
    VERIFY_COLUMNS,
    Backend,
    Batch,
    Raced,
    counter_missing,
    driver_error,
    refused_value,
    unmasked,
)
from .checks import check_count as _check_count
from .checks import check_type_names, shown
from .errors import (
    ConcurrencyError,
    ConnectionLost,
    EventStoreError,
    InvalidInput,
    SchemaError,
    StoreClosed,
    TransactionAborted,
)
from .events import (
    ANY,
    AppendResult,
    Event,
    EventRegistry,
    ExpectedRevision,
    FoldInput,
    NewEvent,
    RecordedEvent,
)
from .integrity import Problem, VerificationReport, check_chains
from .opening import _backend_for, _check_store_options, _in_greenlet
from .preparation import Preparer, check_flow_id
from .privileged import pruned_count, pruned_problems
from .projection import FusedWrite, InlineProjection, translated
from .retry import RACE_BUDGET, Backoff
from .schema import READ_COLUMNS, flow_events
from .sqljson import one_of
from .statements import compiled_sql
from .transaction import Transaction as Transaction
from .transaction import _recorded_rows
from .unfinished_import import read_unfinished

DEFAULT_URL = "sqlite:///eventstore.db"
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class EventStore:
    """An append-only, hash-chained log of flow events on SQLite or PostgreSQL."""

    def __init__(
        self,
        backend: Backend,
        *,
        clock: Clock = utc_now,
        registry: EventRegistry | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        page_size: int = 1000,
        projections: Sequence[InlineProjection] = (),
    ) -> None:
        self.projections = _check_store_options(clock, registry, max_payload_bytes, projections)
        self._backend = backend
        self.clock = clock
        self.registry = registry if registry is not None else EventRegistry()
        self._preparer = Preparer(self.registry, max_payload_bytes)
        self.page_size = page_size
        self._closed = False
        self._asynchronous = backend.engine.dialect.is_async
        self._opened_with: dict[str, Any] | None = None
        # Fused appends (PostgreSQL) only when every inline projection can fuse: otherwise the
        # attempt would chain and decode the events only to fall back to the transaction.
        self._fusing = backend.name == "postgresql" and all(
            callable(getattr(p, "fuse", None)) and getattr(p, "fuses", True) for p in self.projections
        )
        self._generation: int | None = None
        """The read models' generation (``event_positions.generation``) the inline projections were
        last found current at; None until the first append checks them (``fence``)."""

    # -- opening and closing ---------------------------------------------
    @classmethod
    def open(
        cls,
        url: str | sa.URL = DEFAULT_URL,
        *,
        create: bool | None = None,
        clock: Clock = utc_now,
        registry: EventRegistry | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        synchronous: str = "NORMAL",
        busy_timeout: float = 30.0,
        lock_timeout: float = 10.0,
        idle_in_transaction_timeout: float = 60.0,
        schema: str | None = None,
        pool_size: int = 5,
        check_schema: bool = True,
        projections: Sequence[InlineProjection] = (),
        asynchronous: bool = False,
    ) -> EventStore:
        """Open a store by URL: ``sqlite:///path.db`` or ``postgresql://...``.

        ``create`` creates or upgrades the schema; it defaults to True for
        SQLite and False for PostgreSQL, where ``eventstore db upgrade`` is
        the usual way. ``schema`` (PostgreSQL) sets the search path.
        ``projections`` are inline projections, applied in every append
        transaction. ``asynchronous`` opens it on the async driver, for
        ``eventstore.aio`` (use ``AsyncEventStore.open``).
        """
        backend = _backend_for(
            url,
            synchronous=synchronous,
            busy_timeout=busy_timeout,
            lock_timeout=lock_timeout,
            idle_in_transaction_timeout=idle_in_transaction_timeout,
            schema=schema,
            pool_size=pool_size,
            asynchronous=asynchronous,
            must_exist=create is False,
        )
        if create is None:
            create = backend.name == "sqlite"
        try:
            store = cls(
                backend,
                clock=clock,
                registry=registry,
                max_payload_bytes=max_payload_bytes,
                projections=projections,
            )
        except BaseException:
            backend.close()
            raise
        store._opened_with = {
            "url": url,
            "clock": clock,
            "registry": store.registry,
            "max_payload_bytes": max_payload_bytes,
            "synchronous": synchronous,
            "busy_timeout": busy_timeout,
            "lock_timeout": lock_timeout,
            "idle_in_transaction_timeout": idle_in_transaction_timeout,
            "schema": schema,
            "pool_size": pool_size,
            "projections": store.projections,
        }
        try:
            if create:
                store.upgrade()
            elif check_schema:
                store._check_schema()
            for projection in store.projections:
                projection.prepare(store)
        except BaseException:
            backend.close()
            raise
        return store

    def opened_with(self) -> dict[str, Any]:
        """The URL and options ``open`` was given (with the store's registry and projections)."""
        if self._opened_with is None:
            raise InvalidInput("this store was not made by EventStore.open")
        return dict(self._opened_with)

    def upgrade(self) -> None:
        """Create the schema, or bring it up to this library's version."""
        self._check_open()
        with self._guard():
            self._backend.claim()
        current = self.schema_revision()
        if current == migrate.head_revision():
            return  # the usual case: no write lock needed, so no wait behind a long append
        if current is not None and not migrate.known_revision(current):
            raise _newer_schema(current)
        try:
            with self._guard(), self._backend.write_connection() as conn:
                if conn.dialect.name == "postgresql":
                    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7301550001)")
                if migrate.current_revision(conn) != migrate.head_revision():
                    migrate.upgrade(conn)
        except AlembicError as exc:
            raise SchemaError(
                f"cannot migrate this database ({exc}); is it at a newer version than this library "
                f"({migrate.head_revision()})?"
            ) from exc

    def schema_revision(self) -> str | None:
        """The migration the database is at (None for an empty database)."""
        self._check_open()
        with self._guard(), self._backend.read_connection() as conn:
            return migrate.current_revision(conn)

    def _check_schema(self) -> None:
        current = self.schema_revision()
        required = migrate.head_revision()
        if current == required:
            with self._guard():
                self._backend.claim()  # the database is the store's: WAL on SQLite
            return
        if current is None:
            problem = f"the database has no event store schema yet (this library needs {required})"
        elif migrate.known_revision(current):
            problem = f"the database schema is at {current}, this library needs {required}"
        else:
            raise _newer_schema(current)
        raise SchemaError(
            f"{problem}: run `eventstore db upgrade` or open with create=True",
            current=current,
            required=required,
        )

    @property
    def page_size(self) -> int:
        """How many events a read fetches per round trip (an int >= 1)."""
        return self._page_size

    @page_size.setter
    def page_size(self, value: int) -> None:
        self._page_size = _check_count("page_size", value, minimum=1)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._backend.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def max_payload_bytes(self) -> int:
        """The largest encoded data or metadata an event may have, in bytes."""
        return self._preparer.max_payload_bytes

    @property
    def engine(self) -> sa.Engine:
        return self._backend.engine

    @property
    def dialect(self) -> str:
        return self._backend.name

    # -- writing -------------------------------------------------------
    def append(
        self,
        flow_id: str,
        events: Sequence[Event | NewEvent],
        *,
        expected_revision: ExpectedRevision = ANY,
        metadata: Mapping[str, Any] | None = None,
    ) -> AppendResult:
        """Append events to a flow atomically: all of them or none.

        ``expected_revision`` is the revision the flow must be at (0: it must
        not exist yet) or ``ANY``. Appending events whose ids an earlier
        append already wrote returns that append's result and writes nothing.
        An append that loses a race to another writer tries again after a
        short random wait, for up to ``RACE_BUDGET`` seconds (``eventstore.retry``).
        """
        batch = self._prepare(flow_id, events, expected_revision, metadata)
        reconnected = False
        backoff = Backoff(self.clock)
        while True:
            try:
                written = None
                with self._guard():
                    if not self.projections:
                        written = self._backend.append_alone(batch, self.clock)
                    elif self._fusing and self._generation is not None:
                        fuse = functools.partial(self._fuse, batch)
                        written = self._backend.append_fused(batch, self.clock, fuse, self._generation)
                if written is not None:
                    return written.result
                with self.transaction() as tx:
                    return tx._append(batch)
            except Raced as raced:
                # Lost a race: the next attempt re-reads the head, and either
                # appends (ANY), finds this very append already written by a
                # concurrent retry, or reports the RevisionMismatch. Trying
                # again at once would meet the same writers again.
                if not backoff.wait():
                    raise ConcurrencyError(
                        f"flow {flow_id!r} kept changing: {backoff.attempts} append attempts lost "
                        f"the race in {RACE_BUDGET:g} s"
                    ) from raced
            except ConnectionLost:
                # The pool had a dead connection (say, the server restarted).
                # Retrying is safe: if the first try committed, its event ids
                # make this one return that result instead of writing again.
                if reconnected:
                    raise
                reconnected = True

    def fence(self, tx: Transaction, generation: int) -> None:
        """Before inline projections fold in ``tx``: check them again if a read model was swapped.

        ``generation`` is ``event_positions.generation`` as ``tx`` read it while
        holding the row (the append's bump), so no swap can land before ``tx``
        ends. Every swap of a read model's tables bumps it (``projections.rebuild``);
        a projection that can tell whether the tables are still its own
        (``check_current``) raises ``ProjectionError`` if they are not, as in a
        process opened before a newer version's rebuild: it must not fold with
        its older handlers.
        """
        if generation == self._generation:
            return
        for projection in self.projections:
            check = getattr(projection, "check_current", None)
            if check is not None:
                check(tx)
        self._generation = generation

    def _fuse(self, batch: Batch, rows: list[tuple[Any, ...]]) -> list[FusedWrite] | None:
        """Every inline projection's writes for ``rows`` as SQL for the append; None if one cannot."""
        recorded = _recorded_rows(rows, batch)
        fused = []
        for number, projection in enumerate(self.projections):
            write = projection.fuse(self.dialect, recorded, f"p{number}_")  # type: ignore[attr-defined]  # _fusing checked it has one
            if write is None:
                return None
            fused.append(write)
        return fused

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A unit of work over several flows, each append with its own expected revision."""
        self._check_open()
        tx: Transaction | None = None
        try:
            with self._backend.write_connection() as conn:
                tx = Transaction(self, conn)
                try:
                    yield tx
                finally:
                    tx._ended = True
                if tx._failed is not None:
                    raise TransactionAborted(
                        f"an append in this transaction failed ({tx._failed}); nothing was committed"
                    ) from tx._failed
        except sa.exc.SQLAlchemyError as exc:
            self._backend.forget([w.result.flow_id for w in tx.written] if tx else [])
            raise self._translate(exc) from exc
        except BaseException:
            if tx is not None:
                self._backend.forget([w.result.flow_id for w in tx.written])
            raise
        self._backend.remember(tx.written)

    def _explain_conflict(self, exc: sa.exc.IntegrityError, batch: Batch) -> Exception:
        """Turn a unique-key violation of an append into the error the caller can act on."""
        kind = self._backend.unique_violation(exc)
        if kind is None:
            return self._translate(exc)
        with self._guard(), self._backend.read_connection() as conn:
            actual = self._backend.head(conn, batch.flow_id)[0]
            if kind == "revision":
                expected = batch.expected if batch.expected is not ANY else actual - 1
                return Raced(batch.flow_id, expected, actual)
            try:
                self._backend.earlier_append(conn, batch, actual)
            except EventStoreError as error:
                return error
        # Every id was already written by one earlier append, committed by a
        # concurrent retry of this same call: report it as a lost race.
        return Raced(batch.flow_id, actual, actual)

    def _prepare(
        self,
        flow_id: str,
        events: Sequence[Event | NewEvent],
        expected_revision: ExpectedRevision,
        metadata: Mapping[str, Any] | None,
    ) -> Batch:
        self._check_open()
        return self._preparer.batch(flow_id, events, expected_revision, metadata)

    # -- reading -------------------------------------------------------
    def read_flow(
        self,
        flow_id: str,
        *,
        from_revision: int = 1,
        to_revision: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> Iterator[RecordedEvent]:
        """The flow's events with ``from_revision <= revision <= to_revision``.

        Ascending, or descending with ``backwards=True``; at most ``limit``.
        A flow that does not exist reads as empty.
        """
        self._check_open()
        check_flow_id(flow_id)
        _check_count("from_revision", from_revision, minimum=1)
        if to_revision is not None:
            _check_count("to_revision", to_revision, minimum=0)
        if limit is not None:
            _check_count("limit", limit, minimum=0)
        if type(backwards) is not bool:  # a truthy "no" would read the wrong way
            raise InvalidInput(f"backwards must be True or False, not {shown(backwards)}")
        if from_revision > _BIG:  # past any revision the column holds: nothing, on every backend
            return iter(())
        if to_revision is not None:
            to_revision = min(to_revision, _BIG)
        col = flow_events.c.revision
        base = sa.select(*READ_COLUMNS).where(flow_events.c.flow_id == flow_id)
        if backwards:
            base = base.where(col >= from_revision).order_by(col.desc())
            if to_revision is not None:
                base = base.where(col <= to_revision)
            return self._events(self._pages(lambda cur: base.where(col < cur), lambda r: r[2], _BIG, limit))
        if to_revision is not None:
            base = base.where(col <= to_revision)
        base = base.order_by(col)
        pages = self._pages(lambda cur: base.where(col > cur), lambda r: r[2], from_revision - 1, limit)
        return self._events(pages)

    def read_all(
        self, *, after_position: int = 0, limit: int | None = None, types: Iterable[str] | None = None
    ) -> Iterator[RecordedEvent]:
        """The global log after ``after_position``, in position order.

        Positions are handed out in commit order, so a reader that resumes
        after the last position it saw never misses an event.
        """
        self._check_open()
        _check_count("after_position", after_position, minimum=0)
        if limit is not None:
            _check_count("limit", limit, minimum=0)
        conditions = []
        if types is not None:
            wanted = sorted(set(check_type_names("types", types)))
            conditions.append(one_of(flow_events.c.type, wanted, self.dialect))
        return self.read_where(*conditions, after_position=after_position, limit=limit)

    def read_for_fold(
        self,
        *,
        up_to_position: int | None = None,
        flow_id: str | None = None,
        from_revision: int = 1,
        to_revision: int | None = None,
    ) -> Iterator[FoldInput]:
        """Every flow's events, flow by flow in revision order: only what a fold reads.

        For bulk folds such as projection rebuilds: each flow's events arrive
        together, so a fold can finish a flow and write it once, and rows
        carry neither ids, metadata nor hashes. ``up_to_position`` leaves out
        events appended after that position. With ``flow_id``, only that
        flow's events from ``from_revision`` to ``to_revision``.
        """
        self._check_open()
        c = flow_events.c
        base = sa.select(*FOLD_COLUMNS)
        if up_to_position is not None:
            _check_count("up_to_position", up_to_position, minimum=0)
            base = base.where(c.position <= up_to_position)
        if flow_id is not None:
            check_flow_id(flow_id)
            _check_count("from_revision", from_revision, minimum=1)
            from_revision = min(from_revision, _BIG + 1)  # compared as revision > from_revision - 1
            base = base.where(c.flow_id == flow_id).order_by(c.revision)
            if to_revision is not None:
                _check_count("to_revision", to_revision, minimum=0)
                base = base.where(c.revision <= min(to_revision, _BIG))
            pages = self._pages(
                lambda cur: base.where(c.revision > cur), lambda r: r[1], from_revision - 1, None
            )
        else:
            after = sa.tuple_(c.flow_id, c.revision)
            base = base.order_by(c.flow_id, c.revision)
            pages = self._pages(
                lambda cur: base.where(after > sa.tuple_(*cur)), lambda r: (r[0], r[1]), ("", 0), None
            )
        decode = self._backend.decode_for_fold
        return itertools.chain.from_iterable(map(decode, rows) for rows in pages)

    def _pages(
        self,
        query: Callable[[Any], sa.Select[Any]],
        key: Callable[[Any], Any],
        start: Any,
        limit: int | None,
    ) -> Iterator[Sequence[Any]]:
        """Keyset pagination: short queries, bounded memory, no snapshot held between pages."""
        remaining = limit
        cursor = start
        while remaining is None or remaining > 0:
            page = self.page_size if remaining is None else min(self.page_size, remaining)
            rows = self._fetch(query(cursor).limit(page))
            if rows:
                yield rows
            if len(rows) < page:
                return
            if remaining is not None:
                remaining -= len(rows)
            cursor = key(rows[-1])

    def _events(self, pages: Iterator[Sequence[Any]]) -> Iterator[RecordedEvent]:
        decode = self._backend.decode
        for rows in pages:
            for row in rows:
                yield decode(row)

    # -- queries of your own ---------------------------------------------
    def query(self, query: sa.Select[Any]) -> Sequence[Any]:
        """The rows of a SQLAlchemy Core ``select`` over the store's tables (or read models).

        Driver errors become the store's errors; a pooled connection found
        dead is replaced and the query run once more. Values come back as the
        columns' types give them (a read model's JSON as a value, its times as
        aware datetimes), as on ``reading()``'s connection, on every backend.
        """
        select = _select("query", query)
        return self._read(lambda conn: conn.execute(select).all())

    def query_events(self, query: sa.Select[Any]) -> list[RecordedEvent]:
        """The events of a ``select(*READ_COLUMNS)`` of ``flow_events`` (``eventstore.schema``), decoded."""
        if [column.name for column in _select("query_events", query).selected_columns] != [
            column.name for column in READ_COLUMNS
        ]:
            raise InvalidInput("query_events needs select(*READ_COLUMNS) of flow_events (eventstore.schema)")
        return list(self._events(iter([self._fetch(query)])))

    def read_where(
        self, *conditions: Any, after_position: int = 0, limit: int | None = None
    ) -> Iterator[RecordedEvent]:
        """Events after ``after_position`` matching SQLAlchemy ``conditions`` on ``flow_events``, in order.

        Read in keyset pages of ``page_size``, as ``read_all`` is; an index on
        the conditions' columns keeps each page short.
        """
        self._check_open()
        _check_count("after_position", after_position, minimum=0)
        if limit is not None:
            _check_count("limit", limit, minimum=0)
        if not all(isinstance(condition, sa.ColumnElement) for condition in conditions):
            raise InvalidInput("read_where takes SQLAlchemy conditions on flow_events, such as c.type == 'A'")
        col = flow_events.c.position
        base = sa.select(*READ_COLUMNS).where(*conditions).order_by(col)
        return self._events(
            self._pages(lambda cur: base.where(col > cur), lambda r: r[0], after_position, limit)
        )

    @contextmanager
    def reading(self) -> Iterator[sa.Connection]:
        """A connection for reads of your own; driver errors become the store's errors."""
        self._check_open()
        with self._guard(), self._backend.read_connection() as conn:
            yield conn

    def _fetch(self, query: sa.Select[Any], params: Mapping[str, Any] | None = None) -> Sequence[Any]:
        """One page of a read, retried once on a fresh connection if the pooled one was dead.

        Rows hold the driver's values, unconverted (the log's columns need no
        conversion; verification must see what a row really holds): for the
        store's own reads, where ``query`` would convert them. ``params`` are the
        values of ``query``'s named ``bindparam``s.
        """
        return self._read(lambda conn: _fetch_raw(conn, query, params))

    def _read(self, work: Callable[[sa.Connection], _T]) -> _T:
        """``work`` on a read connection, retried once on a fresh one if the pooled one was dead."""
        self._check_open()
        try:
            with self._guard(), self._backend.read_connection() as conn:
                return work(conn)
        except ConnectionLost:
            with self._guard(), self._backend.read_connection() as conn:
                return work(conn)

    def revision(self, flow_id: str) -> int:
        """The flow's current revision; 0 if it does not exist."""
        self._check_open()
        check_flow_id(flow_id)
        return self._read(lambda conn: self._backend.head(conn, flow_id)[0])

    def last_position(self) -> int:
        """The position of the newest committed event (0 for an empty store)."""
        found = self._read(
            lambda conn: conn.exec_driver_sql(
                "SELECT last_position FROM event_positions"
            ).scalar_one_or_none()
        )
        if found is None:
            raise counter_missing("the last position handed out is not known")
        return int(found)

    def flows(self, *, after: str | None = None, limit: int | None = None) -> Iterator[str]:
        """Flow ids in code point order, after ``after`` (``""``: from the first); streamed in pages."""
        self._check_open()
        if (
            isinstance(after, str) and after
        ):  # "" is before every flow id, as position 0 is before every event
            check_flow_id(after)
        elif after is not None and after != "":
            raise InvalidInput(f"after must be a flow id, or '' for the first flow, not {shown(after)}")
        if limit is not None:
            _check_count("limit", limit, minimum=0)
        col = flow_events.c.flow_id
        base = sa.select(col).where(flow_events.c.revision == 1).order_by(col)
        pages = self._pages(lambda cur: base.where(col > cur), lambda r: r[0], after or "", limit)
        return (row[0] for rows in pages for row in rows)

    def decode(self, recorded: RecordedEvent) -> Event:
        """The typed model of a recorded event, upcast to its current version."""
        return self.registry.decode(recorded)

    # -- integrity -------------------------------------------------------
    def verify(
        self, flow_id: str | None = None, *, progress: Callable[[int], None] | None = None
    ) -> VerificationReport:
        """Re-compute every hash chain (or one flow's) and report each broken link.

        Streams in (flow, revision) order and keeps one row per flow in memory.
        ``progress`` is called with the number of events checked after each page.
        A ``flow_id`` with no events is ``FlowNotFound`` (``FlowArchived`` if
        retention pruned it), never an OK report of nothing checked.
        """
        self._check_open()
        if progress is not None and not callable(progress):
            raise InvalidInput(f"progress must be a function of the events checked, not {shown(progress)}")
        report = VerificationReport()
        for item in check_chains(self._verify_rows(flow_id, report, progress)):
            if isinstance(item, str):
                report.flows_checked += 1
            else:
                report.problems.append(item)
        if flow_id is None:
            report.problems.extend(self._missing_events())
        elif report.events_checked == 0:  # judged on the rows read, so a prune meanwhile is not OK either
            from .tombstones import flow_not_found

            raise flow_not_found(self, flow_id)
        with self._guard(), self._backend.read_connection() as conn:
            unfinished = read_unfinished(conn)
        if unfinished is not None:  # even for one flow: its tail may be among the events still to come
            report.problems.append(unfinished.problem())
        return report

    def _missing_events(self) -> list[Problem]:
        """Whole flows or a flow's tail deleted leave no broken link; the count shows them.

        Events removed by retention are accounted for by ``pruned_events``
        (docs/operations.md): stored + pruned must be every position handed out,
        each once. Deleting the end of the log and setting the position counter
        back leaves the count right; a stored checkpoint over more positions
        than the counter shows that.
        """
        with self._guard(), self._backend.read_connection() as conn:
            count, highest, last, signed = conn.exec_driver_sql(
                "SELECT (SELECT count(*) FROM flow_events), (SELECT max(position) FROM flow_events), "
                "(SELECT last_position FROM event_positions), (SELECT max(tree_size) FROM log_checkpoints)"
            ).one()
            pruned, pruned_highest, doubled = pruned_count(conn)
            problems = pruned_problems(conn)
        if last is None:
            detail = f"{COUNTER_MISSING}, so the positions handed out cannot be counted"
            return [*problems, Problem("", 0, 0, "missing-events", detail)]
        if signed is not None and signed > last:
            detail = (
                f"a checkpoint covers {signed} positions, but positions were handed out only up to {last}: "
                "events were deleted and the position counter set back"
            )
            problems.append(Problem("", signed, 0, "missing-events", detail))
        highest = max(highest or 0, pruned_highest)
        if count + pruned - doubled == last and highest == last:
            return problems
        doubled_text = f", {doubled} of them at a position also stored" if doubled else ""
        pruned_text = f" (and {pruned} pruned{doubled_text})" if pruned else ""
        detail = f"{count} events are stored{pruned_text}, but positions were handed out up to {last}"
        return [*problems, Problem("", highest, 0, "missing-events", detail)]

    def _verify_rows(
        self, flow_id: str | None, report: VerificationReport, progress: Callable[[int], None] | None
    ) -> Iterator[Any]:
        c = flow_events.c
        base = sa.select(*VERIFY_COLUMNS).order_by(c.flow_id, c.revision)
        if flow_id is not None:
            check_flow_id(flow_id)
            base = base.where(c.flow_id == flow_id)
        stored_row = self._backend.stored_row
        after = sa.tuple_(c.flow_id, c.revision)
        pages = self._pages(
            lambda cur: base.where(after > sa.tuple_(*cur)), lambda r: (r[1], r[2]), ("", 0), None
        )
        for rows in pages:
            for row in rows:
                yield stored_row(row)
            report.events_checked += len(rows)
            if progress is not None:
                progress(report.events_checked)

    # -- plumbing ----------------------------------------------------------
    def _translate(self, exc: sa.exc.SQLAlchemyError) -> Exception:
        """The store's error for a driver error; one a projection's fold met says where."""
        return translated(exc, self._backend.translate(exc))

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("the store is closed")
        if self._asynchronous and not _in_greenlet():
            # Else the driver fails mid-call (asyncio's RuntimeError, SQLAlchemy's MissingGreenlet)
            # and the pool logs tracebacks as it gives the connection back.
            raise InvalidInput(
                "this store is on the async driver: call it through AsyncEventStore.run "
                "(await store.run(store.store.method, ...)) or the async append and read_flow"
            )

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except sa.exc.IntegrityError as exc:
            batch = getattr(exc, "eventstore_batch", None)
            if batch is None:
                raise self._translate(exc) from exc
            raise self._explain_conflict(exc, batch) from exc
        except sa.exc.SQLAlchemyError as exc:
            raise self._translate(exc) from exc


def _newer_schema(current: str) -> SchemaError:
    """A database a newer library migrated: upgrading cannot go back down, only a newer library can use it."""
    required = migrate.head_revision()
    return SchemaError(
        f"the database schema is at {current}, newer than this library ({required}): it was "
        "migrated by a newer agent-eventstore; upgrade the agent-eventstore library to open it",
        current=current,
        required=required,
    )


def _fetch_raw(
    conn: sa.Connection, query: sa.Select[Any], params: Mapping[str, Any] | None = None
) -> list[Any]:
    """Run a page query on the driver cursor: the log's columns need no SQLAlchemy result processing.

    SQLAlchemy's per-row result machinery cost as much as decoding the events.
    The statement is compiled by SQLAlchemy, once per shape (``statements``); driver errors are
    wrapped as SQLAlchemy wraps them, for the store to translate.
    """
    sql, values = compiled_sql(conn.dialect, query, params)
    raw: Any = conn.connection.dbapi_connection
    cursor = None
    try:
        cursor = raw.cursor()
        cursor.execute(sql, values)
        return list(cursor.fetchall())
    except (conn.dialect.loaded_dbapi.Error, OverflowError, UnicodeEncodeError) as exc:
        error = unmasked(exc)  # sqlite3's error binding a value, hidden behind an earlier statement's
        refused = refused_value(error)
        if refused is not None:
            raise refused from error
        raise driver_error(conn, error, sql, values, cursor) from error
    finally:
        if cursor is not None:
            cursor.close()


_BIG = 2**31 - 1  # above any revision (an INTEGER column)
_T = TypeVar("_T")


def _select(name: str, query: object) -> sa.Select[Any]:
    if not isinstance(query, sa.Select):
        raise InvalidInput(f"{name} takes a SQLAlchemy Core select(...), not {shown(query)}")
    return query
