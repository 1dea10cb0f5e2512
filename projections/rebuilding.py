"""Versions and rebuilds: creating a projection's tables, and rebuilding them from the log.

``ensure`` creates the tables on first use and rebuilds them when the
version changed. ``rebuild`` folds the whole log into fresh tables while
readers and writers carry on, then swaps them in (``swap.py``) in one
transaction, so readers see the old, consistent read model until the swap.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from eventstore import EventStore, reconnecting
from eventstore.aio import pause
from eventstore.checks import check_callback, check_count, check_flag, check_store, shown
from eventstore.errors import (
    ConcurrencyError,
    ConnectionLost,
    EventStoreError,
    InvalidInput,
    ProjectionError,
    ProjectionFailed,
    ReconnectFailed,
    StoreBusy,
)
from eventstore.schema import flow_events
from eventstore.schema import projection_checkpoints as checkpoints

from . import rebuild_locks
from .checkpoints import (
    INLINE,
    REBUILD_LEASE,
    claim,
    claimed_live,
    lock_appends,
    newer_version,
    read_checkpoint,
    rebuild_lock,
    renew,
    renewed,
    store_has_events,
    write_checkpoint,
)
from .corruption import corrupt, unreadable
from .definitions import REBUILD_SUFFIX
from .folding import fold_up_to
from .indexes import add_missing_indexes
from .ownership import drop_fresh_tables, refuse_other_tables, take_tables
from .rebuild_locks import RebuildLock
from .retiring import refuse_retired
from .swap import HOLD, PATIENCE, LiveTableBusy, LiveTableWaits, give_appends_a_turn, longest_hold, swap_in

if TYPE_CHECKING:
    from .declaration import Projection


SOLE_WRITER = ("eventstore", "sole-writer")
"""Set in a transaction's memo by a rebuild: every row of the target tables
was written through this memo, so a key missing from it is missing from the
tables too, and need not be looked up."""


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a long operation has got."""

    done: int
    total: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


def check_arguments(store: object, projection: object) -> None:
    """``InvalidInput`` unless ``store`` is an ``EventStore`` and ``projection`` a ``Projection``
    instance: the wrong kind failed with an ``AttributeError`` somewhere inside."""
    from .declaration import Projection  # declaration imports this module

    check_store(store)
    if not isinstance(projection, Projection):
        what = shown(projection)
        if isinstance(projection, type):
            what = f"the class {projection.__name__}: pass an instance, {projection.__name__}()"
        raise InvalidInput(f"projection must be a projections.Projection, not {what}")
    check_made(projection)


def check_made(projection: Projection) -> None:
    """``ProjectionError`` unless ``Projection.__init__`` ran: an ``__init__`` of the subclass's own
    that does not call it leaves the definition unchecked and the tables undeclared (it failed
    with ``AttributeError: ... '_tables'``)."""
    if getattr(projection, "_tables", None) is None:
        cls = type(projection).__name__
        raise ProjectionError(
            f"projection {projection.name!r}: {cls}.__init__ does not call super().__init__(), which "
            "checks the projection's definition and declares its tables; call it first"
        )


def check_creatable(store: EventStore, projection: Projection) -> None:
    """``ProjectionError`` unless the store's database can create every table of ``projection``:
    a type it has no form of (PostgreSQL's ``ARRAY`` on SQLite) failed as the tables were built,
    as a "SQLite error" quoting SQLAlchemy's compiler."""
    dialect = store.engine.dialect
    for base, table in projection.tables.items():
        try:
            sa.schema.CreateTable(table).compile(dialect=dialect)
        except sa.exc.CompileError as exc:
            for column in table.columns:
                try:
                    column.type.compile(dialect=dialect)
                except sa.exc.CompileError:
                    raise ProjectionError(
                        f"projection {projection.name!r}: the column {column.name!r} of its table {base!r} "
                        f"has the type {column.type!r}, which {dialect.name} has no form of; nothing was "
                        "created"
                    ) from exc
            detail = str(exc.args[0]) if exc.args else str(exc)
            raise ProjectionError(
                f"projection {projection.name!r}: its table {base!r} cannot be created on {dialect.name} "
                f"({detail}); nothing was created"
            ) from exc


def ensure(store: EventStore, projection: Projection, *, inline: bool = False, rebuilt: bool = False) -> str:
    """Create the projection's tables if new; rebuild them if its version changed; add the
    indexes declared since they were built (``indexes.py``). Return the build its checkpoint
    names then (a runner tells that build from a rebuild under its feet).
    """
    check_creatable(store, projection)
    build = _ensure(store, projection, inline=inline, rebuilt=rebuilt)
    if build:  # after the transaction that held appends: the build must not hold them
        add_missing_indexes(store, projection, build)
    return build


def _ensure(store: EventStore, projection: Projection, *, inline: bool, rebuilt: bool) -> str:
    """``ensure`` but for the indexes declared since the tables were built.

    Several processes may open a store at once after a version bump: one
    rebuilds, the others wait for it and then find the version current.
    ``inline``: for a store's inline projection, whose checkpoint then says
    so: a runner would fold its events a second time. A checkpoint a runner
    left behind the log's head is rebuilt first (as is one written inline by
    code from before kinds were kept, which cannot be told apart): appends
    fold only their own events, so the ones in between would be missed.
    """
    behind = False
    with reconnecting.transaction(store) as tx:
        conn = tx.connection
        head = lock_appends(conn)
        current = read_checkpoint(conn, projection.name, lock=True)
        if current is None:
            refuse_retired(store, conn, projection.name)  # not to be built again unasked
        if current is not None and type(current.version) is not int:  # SQLite keeps what an UPDATE put
            problem = unreadable(current.version, "an integer")
            raise corrupt(projection.name, checkpoints.name, {"name": projection.name}, "version", problem)
        if current is not None and current.version > projection.version:
            raise newer_version(projection, current)
        if current is not None and current.version == projection.version:
            refuse_other_tables(conn, projection, current.version)
        take_tables(conn, projection, current, fresh=False)
        if current is not None and current.version == projection.version:
            if not inline or current.kind == INLINE:
                return current.build
            behind = current.position < head and not rebuilt
            if not behind:
                write_checkpoint(
                    store, conn, projection, position=current.position, build=current.build, kind=INLINE
                )
                return current.build
        if current is None and not store_has_events(conn):
            tag = secrets.token_hex(4)
            for table in projection.build_tables("", tag).values():
                _create_table(conn, table)
            write_checkpoint(store, conn, projection, position=0, build=tag, kind=INLINE if inline else None)
            return tag
    rebuild(store, projection, wait=True, only_if_outdated=not behind)
    if inline:  # mark it inline (a runner may have rebuilt it)
        return _ensure(store, projection, inline=True, rebuilt=True)
    with reconnecting.reading(store) as conn:
        current = read_checkpoint(conn, projection.name)
    return "" if current is None else current.build


def rebuild(
    store: EventStore,
    projection: Projection,
    *,
    batch_size: int = 10_000,
    progress: Callable[[Progress], None] | None = None,
    wait: bool = False,
    only_if_outdated: bool = False,
    patience: float = PATIENCE,
) -> Progress:
    """Rebuild ``projection`` from the whole log into fresh tables, then swap them in.

    Readers and writers carry on while the fresh tables fill; the swap takes
    the append lock only to apply the last few events and rename the tables.
    One rebuild of a projection runs at a time: another one raises
    ``ProjectionError``, or with ``wait=True`` waits for it.
    ``progress`` gets a ``Progress`` after each batch (``batch_size`` events, or
    fewer once a second of work by the store's clock has passed) and at the end.
    On PostgreSQL the swap waits for transactions holding the live tables
    (a long report) a short while at a time, up to ``patience`` seconds in
    all, then fails with ``ProjectionError``, the old tables still live.
    """
    check_arguments(store, projection)
    check_creatable(store, projection)
    check_count("batch_size", batch_size, minimum=1)
    check_callback("progress", progress)
    check_flag("wait", wait)
    check_flag("only_if_outdated", only_if_outdated)
    if isinstance(patience, bool) or not isinstance(patience, int | float) or not patience > 0:
        raise InvalidInput(f"patience must be a number of seconds above 0, not {shown(patience)}")
    tag = secrets.token_hex(4)
    lock = _claim(store, projection, tag, wait)
    try:
        waits = LiveTableWaits(store, projection, float(patience), tag)
        return _claimed(store, projection, tag, batch_size, progress, only_if_outdated, lock.held, waits)
    finally:
        lock.release()  # after the claim is given up: a claim left with its lock let go is dead


def _claim(store: EventStore, projection: Projection, tag: str, wait: bool) -> RebuildLock:
    """Claim ``projection``, holding its rebuild lock if it can be had; the lock, to release."""
    while True:
        taken = rebuild_locks.take(store, projection)  # None: a live rebuild holds it
        if taken is not None or not claimed_live(store, projection):  # else refused without the append lock
            lock = taken or RebuildLock()
            try:
                if claim(store, projection, tag, locked=lock.held):
                    return lock
            except BaseException:
                lock.release()
                raise
            lock.release()
        if not wait:
            raise ProjectionError(f"a rebuild of {projection.name!r} is already running")
        pause(0.25)  # another process is rebuilding; its lease renews every batch


def _claimed(
    store: EventStore,
    projection: Projection,
    tag: str,
    batch_size: int,
    progress: Callable[[Progress], None] | None,
    only_if_outdated: bool,
    locked: bool,
    waits: LiveTableWaits,
) -> Progress:
    failure: BaseException | None = None
    try:
        with reconnecting.reading(store) as conn:
            current = read_checkpoint(conn, projection.name)
            if only_if_outdated and current is None:  # retired since ``ensure`` looked: still not built
                refuse_retired(store, conn, projection.name)
        if only_if_outdated and current is not None and current.version >= projection.version:
            if current.version > projection.version:  # newer code rebuilt it while this one waited
                raise newer_version(projection, current)
            return Progress(0, 0, 0.0)
        return _rebuild(store, projection, tag, batch_size, progress, waits)
    except BaseException as exc:
        failure = exc
        if isinstance(exc, ReconnectFailed):  # a start found its connection dead, and no live fresh one
            exc.add_note(
                f"the rebuild of {projection.name!r} stopped before that transaction began; "
                "run the rebuild again once the database is reachable (it starts over)"
            )
        elif isinstance(exc, ConnectionLost):  # inside a transaction, or a read of the log retried once
            exc.add_note(
                f"the connection died during the rebuild of {projection.name!r}; "
                "run the rebuild again (it starts over)"
            )
        if _sqlite_busy(store, exc):  # a cleanup would wait as long again for the same lock
            exc.add_note(f"its fresh {REBUILD_SUFFIX} tables were left behind; the next rebuild drops them")
        else:
            _drop_fresh_tables(store, projection, tag, exc)
        raise
    finally:
        _release(store, projection, tag, failure, locked)


def _sqlite_busy(store: EventStore, failure: BaseException) -> bool:
    """Whether ``failure`` is SQLite's write lock held past ``busy_timeout`` by another connection
    (the database's refusal, not a ``StoreBusy`` a handler raised)."""
    return (
        store.dialect == "sqlite"
        and isinstance(failure, StoreBusy)
        and isinstance(failure.__cause__, sa.exc.SQLAlchemyError)
    )


def _release(
    store: EventStore, projection: Projection, tag: str, failure: BaseException | None, locked: bool
) -> None:
    """Give up the rebuild's claim. If the rebuild failed, its ``failure`` is what the caller sees:
    a release that fails too is a note on it (the next rebuild takes the claim over once this one
    lets go of its rebuild lock; without one, once the claim's lease expires)."""
    try:
        with reconnecting.transaction(store) as tx:
            tx.connection.execute(
                checkpoints.delete().where(
                    checkpoints.c.name == rebuild_lock(projection), checkpoints.c.build == tag
                )
            )
    except Exception as exc:
        if failure is None:
            raise
        then = (
            "takes it over as this one ends"
            if locked
            else f"waits until its lease expires (within {REBUILD_LEASE.total_seconds() / 60:g} minutes)"
        )
        failure.add_note(
            f"its claim could not be given up ({type(exc).__name__}: {exc}); another rebuild of "
            f"{projection.name!r} {then}"
        )


def _rebuild(
    store: EventStore,
    projection: Projection,
    tag: str,
    batch_size: int,
    progress: Callable[[Progress], None] | None,
    waits: LiveTableWaits,
) -> Progress:
    target = projection.targeting(REBUILD_SUFFIX, tag)
    started = time.perf_counter()
    late_indexes: list[sa.Index] = []
    with reconnecting.transaction(store) as tx:
        take_tables(tx.connection, projection, read_checkpoint(tx.connection, projection.name), fresh=True)
        for table in reversed(list(target.tables.values())):
            tx.connection.execute(sa.schema.DropTable(table, if_exists=True))
        for table in target.tables.values():
            # Secondary indexes are built once at the end, not row by row.
            late_indexes.extend(table.indexes)
            _create_table(tx.connection, table, indexes=False)
    head = start = store.last_position()
    total = _events_up_to(store, head)  # fewer than ``head`` once retention pruned flows
    memo: dict[Any, Any] = {SOLE_WRITER: True}
    position = 0
    done = 0
    reported = [0]  # the count last reported: committed, so what a fill's next batch records

    def report(count: int) -> None:
        reported[0] = count
        if progress is not None:
            # Writers append meanwhile, and the swap folds their events too: the total grows with
            # the log's head, so done reaches it only once nothing is left (positions after the
            # start have no gaps, and the rebuild's claim keeps retention from pruning any).
            grown = total + store.last_position() - start
            progress(Progress(count, max(grown, count), time.perf_counter() - started))

    fill = getattr(target, "fill", None)
    if fill is not None:
        # The projection folds the log flow by flow and writes each row once;
        # what follows then looks rows up as an inline append would. Each batch records in the
        # claim the count of the batch before it, reported once committed (a fill counts its own).
        try:
            done = fill(
                store,
                head,
                lambda: renewed(store, projection, tag, folded=reported[0]),
                report,
                batch_size=batch_size,
            )
        except (EventStoreError, sa.exc.SQLAlchemyError):
            raise
        except Exception as exc:  # the projection's own bulk fold: name it, as a handler's error is
            detail = f": {type(exc).__name__}: {exc}"
            raise ProjectionFailed(projection.name, "fill", (1, head), detail) from exc
        memo, position = {}, head
    else:
        position, done = fold_up_to(
            store, projection, target, tag, memo, position, head, batch_size, done, report
        )
    # Writers carried on meanwhile: fold what they appended, up to the head as it is now, pass
    # after pass while what is left shrinks (the fold outruns the writers). Whatever is left is
    # folded by the swap, which holds appends: a while at a time, if the writers outran the fold.
    left: int | None = None
    for _ in range(_CATCH_UP_PASSES):
        remaining = store.last_position() - position
        if remaining <= batch_size or (left is not None and remaining >= left):
            break
        left, head = remaining, position + remaining
        position, done = fold_up_to(
            store, projection, target, tag, memo, position, head, batch_size, done, report
        )
    with reconnecting.transaction(store) as tx:
        renew(store, tx.connection, projection, tag, folded=done)
        for index in late_indexes:
            index.create(tx.connection)
    failures = 0
    hold, was_behind = HOLD, None
    while True:
        try:
            position, folded, swapped = swap_in(
                store, projection, target, tag, position, memo, batch_size, hold
            )
        except LiveTableBusy as busy:  # a long transaction holds a live table: let go, wait, try again
            memo.clear()
            waits.wait_out(busy)
            continue
        except (ConcurrencyError, StoreBusy) as exc:
            # PostgreSQL chose the swap as a deadlock's victim, or its wait for the positions row
            # outlasted the store's lock_timeout. Nothing of it stayed: fold the tail again from
            # the tables as they are.
            # Only the database's own refusal, as the transaction translated it: the same error
            # raised by a handler is the handler's, and would be raised again.
            if not isinstance(exc.__cause__, sa.exc.SQLAlchemyError):
                raise
            memo.clear()
            failures += 1
            if failures == _SWAP_ATTEMPTS:
                raise
            continue
        done += folded
        if swapped:
            break
        report(done)
        behind = store.last_position() - position
        if was_behind is not None and behind >= was_behind:
            hold = min(hold * 2, longest_hold(store))  # the writers outran a hold: hold them longer
        was_behind = behind
        give_appends_a_turn(store)
    for live in (projection, *store.projections):
        forget = getattr(live, "forget_remembered", None)
        if forget is not None:
            forget()  # states remembered from the old tables are not trusted past a rebuild
    result = Progress(done, max(total + position - start, done), time.perf_counter() - started)
    if progress is not None:
        try:
            progress(result)
        except Exception as exc:  # the swap committed: say so, rather than pass for a failed rebuild
            raise ProjectionError(
                f"the rebuild of {projection.name!r} committed, and its new tables are live "
                f"({result.done} events folded), but the progress callback then raised on the final "
                f"report: {type(exc).__name__}: {exc}"
            ) from exc
    return result


def _drop_fresh_tables(store: EventStore, projection: Projection, tag: str, failure: BaseException) -> None:
    """After a failed rebuild, drop its ``__rebuild`` tables (those the projection owns) and free
    their names, while its claim is still its own (a rebuild that took an expired claim over has
    tables of its own under those names).

    Best effort: the rebuild's own ``failure`` is what the caller sees; if this fails too, a note on
    it says so (the next rebuild drops them first).
    """
    try:
        with reconnecting.transaction(store) as tx:
            conn = tx.connection
            claimed = read_checkpoint(conn, rebuild_lock(projection), lock=True)
            if claimed is None or claimed.build != tag:
                return
            drop_fresh_tables(conn, projection)
    except Exception as exc:
        failure.add_note(
            f"its fresh {REBUILD_SUFFIX} tables were left behind ({type(exc).__name__}: {exc}); "
            "the next rebuild drops them"
        )


def _create_table(conn: sa.Connection, table: sa.Table, *, indexes: bool = True) -> None:
    """Create ``table`` (with its indexes, unless a rebuild makes them last), and first the types of its
    own a column names (an enum, on PostgreSQL) unless they exist: another projection's table may use
    one too, and ``Table.create`` would make it whatever exists."""
    for column in table.columns:
        if isinstance(column.type, sa.types.SchemaType):
            column.type.create(conn, checkfirst=True)
    conn.execute(sa.schema.CreateTable(table))
    for index in table.indexes if indexes else ():
        index.create(conn)


def _events_up_to(store: EventStore, position: int) -> int:
    """How many events the log holds up to ``position``: a rebuild's total to report."""
    query = sa.select(sa.func.count()).select_from(flow_events).where(flow_events.c.position <= position)
    return int(store.query(query)[0][0])


_SWAP_ATTEMPTS = 5
_CATCH_UP_PASSES = 10
