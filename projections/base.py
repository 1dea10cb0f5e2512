"""Projection machinery: tables a projection owns, its checkpoint, and rebuilds.

A ``Projection`` declares its tables once (``define_tables``) and folds
events into them (``apply``, or ``on_<EventType>`` handlers). The machinery
creates the tables, records the projection's version, and rebuilds them from
the log into fresh tables that replace the live ones in one transaction, so
readers see the old, consistent read model until the swap.

Every index and constraint name carries the tag of the build that created
it, so a rebuild's tables can sit beside the live ones.
"""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, Self

import sqlalchemy as sa
from sqlalchemy.sql.elements import quoted_name

from eventstore import EventStore, RecordedEvent, Transaction
from eventstore.aio import pause
from eventstore.checks import check_count
from eventstore.errors import (
    ConcurrencyError,
    EventStoreError,
    InvalidInput,
    ProjectionError,
    ProjectionFailed,
    StoreBusy,
)
from eventstore.integrity import format_time
from eventstore.projection import NOTHING, FusedWrite, fold_errors, fold_failed
from eventstore.schema import flow_events
from eventstore.schema import projection_checkpoints as checkpoints

from .definitions import REBUILD_CLAIM, REBUILD_SUFFIX, check_definition, check_returned
from .ownership import drop_dropped_tables, refuse_other_tables, release_fresh_tables, take_tables
from .rowio import run

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


@dataclass(frozen=True, slots=True)
class Checkpoint:
    name: str
    kind: str
    version: int
    position: int
    build: str


class Projection:
    """Base class for read models.

    Subclasses set ``name`` and ``version``, declare tables in
    ``define_tables`` with their base names, and either override ``apply`` or
    write ``on_<EventType>(self, tx, event)`` handlers. Handlers reach their
    tables through ``self.table("name")``, which a rebuild points elsewhere.
    Bump ``version`` whenever the tables or the fold change: the next open
    rebuilds the read model from the log.

    A projection may also define a bulk fold for rebuilds,
    ``fill(store, up_to, batch, report, *, batch_size) -> int``: fold the
    events up to position ``up_to`` into its (empty) tables, writing about
    ``batch_size`` events' worth per transaction opened by ``batch()``, calling
    ``report(events_done)`` after each, and return the number of events read.
    Without one, a rebuild applies the log in position order, a batch at a
    time.
    """

    name: ClassVar[str] = ""
    version: ClassVar[int] = 1
    kind: ClassVar[str] = "catchup"

    def __init__(self) -> None:
        check_definition(self)
        self._tables = self.build_tables("", "")

    def define_tables(self, metadata: sa.MetaData) -> None:
        """Declare this projection's tables on ``metadata``."""
        raise NotImplementedError  # abstract: every projection owns some tables

    def table(self, name: str) -> sa.Table:
        return self._tables[name]

    @property
    def tables(self) -> dict[str, sa.Table]:
        return dict(self._tables)

    def build_tables(self, suffix: str, tag: str) -> dict[str, sa.Table]:
        """This projection's tables named ``<name><suffix>``, constraints tagged with ``tag``.

        A foreign key to another of these tables points at its ``<name><suffix>``
        too, so a rebuild's fresh tables refer to each other, never to the live ones.
        """
        source = sa.MetaData()
        self.define_tables(source)
        target = sa.MetaData()
        built: dict[str, sa.Table] = {}
        inner: list[sa.ForeignKeyConstraint] = []
        for base in source.sorted_tables:
            keys = [key for key in base.foreign_key_constraints if _refers_within(key, source)]
            for key in keys:
                base.constraints.discard(key)  # copied below, pointing at the copies (source is ours)
            inner.extend(keys)
            built[base.name] = base.to_metadata(target, name=base.name + suffix)
        for key in inner:
            built[key.table.name].append_constraint(_key_between(key, built))
        if tag:
            for name, table in built.items():
                _tag_names(table, name, tag)
        return built

    def targeting(self, suffix: str, tag: str) -> Self:
        """A copy of this projection that writes to the tables of another build."""
        clone = copy.copy(self)
        clone._tables = self.build_tables(suffix, tag)
        return clone

    def apply(self, tx: Transaction, events: Sequence[RecordedEvent]) -> None:
        """Fold events into the read model; by default, call ``on_<type>`` handlers."""
        event: RecordedEvent | None = None
        try:  # one try for the batch, not a context per event: a no-op handler's cost stays the same
            for event in events:
                handler = getattr(self, f"on_{event.type}", None)
                if handler is not None:
                    check_returned(self, f"on_{event.type}", handler(tx, event))
        except (EventStoreError, sa.exc.SQLAlchemyError):
            raise
        except Exception as exc:
            if event is None:
                raise
            raise fold_failed(self.name, f"on_{event.type}", [event], exc) from exc

    @property
    def fuses(self) -> bool:
        """Whether ``fuse`` can ever fold: overridden, or the handlers of the default ``apply``."""
        return type(self).fuse is not Projection.fuse or type(self).apply is Projection.apply

    def fuse(self, dialect: str, events: Sequence[RecordedEvent], prefix: str) -> FusedWrite | None:
        """The fold of ``events`` as SQL in the append statement (``eventstore.projection.FusedWrite``).

        Here: nothing to write when no ``on_<type>`` handler takes these events,
        else None (the ordinary path). A projection that can write its fold as
        SQL overrides this.
        """
        if not self.fuses:
            return None
        if any(getattr(self, f"on_{event.type}", None) is not None for event in events):
            return None
        return NOTHING

    def prepare(self, store: EventStore) -> None:
        """Create the tables on first use; rebuild them if the version changed (as an inline projection)."""
        ensure(store, self, inline=True)

    def check_current(self, tx: Transaction) -> None:
        """``ProjectionError`` unless the live tables are this version's: called within an append
        that holds appends, after a read model was swapped (``EventStore.fence``).

        A process opened before a newer version's rebuild would otherwise fold its
        appends into the new tables with its older handlers.
        """
        current = read_checkpoint(tx.connection, self.name)
        if current is None:
            raise ProjectionError(
                f"projection {self.name!r} has no read model in this store any more; nothing was "
                "written: open the store again to build it"
            )
        if current.version > self.version:
            raise ProjectionError(
                f"projection {self.name!r} was rebuilt by version {current.version} while this process "
                f"folds version {self.version}; nothing was written: restart it with the newer code"
            )
        if current.version < self.version:
            raise ProjectionError(
                f"projection {self.name!r} was rebuilt by version {current.version} while this process "
                f"folds version {self.version}; nothing was written: open the store again to rebuild it"
            )


def _refers_within(key: sa.ForeignKeyConstraint, metadata: sa.MetaData) -> bool:
    """Whether ``key`` points at a table of ``metadata``: one of the same projection's."""
    try:
        referred = key.referred_table
    except sa.exc.NoReferenceError:
        return False  # a table the projection does not define: the key names it as written
    return metadata.tables.get(referred.key) is referred


def _key_between(key: sa.ForeignKeyConstraint, built: dict[str, sa.Table]) -> sa.ForeignKeyConstraint:
    """``key``, with all its options, from and to the built copies of its tables."""
    return sa.ForeignKeyConstraint(
        [element.parent.key for element in key.elements],
        [built[element.column.table.name].c[element.column.key] for element in key.elements],
        name=key.name,
        onupdate=key.onupdate,
        ondelete=key.ondelete,
        deferrable=key.deferrable,
        initially=key.initially,
        use_alter=key.use_alter,
        match=key.match,
        comment=key.comment,
        info=dict(key.info),
        **key.dialect_kwargs,
    )


def _tag_names(table: sa.Table, base: str, tag: str) -> None:
    table.primary_key.name = f"pk_{base}_{tag}"
    for number, constraint in enumerate(sorted(table.constraints, key=lambda c: str(c.name))):
        if isinstance(constraint, sa.UniqueConstraint) and not isinstance(
            constraint, sa.PrimaryKeyConstraint
        ):
            constraint.name = f"uq_{base}_{number}_{tag}"
    for index in table.indexes:
        index.name = quoted_name(f"{index.name}_{tag}", None)


def read_checkpoint(conn: sa.Connection, name: str, *, lock: bool = False) -> Checkpoint | None:
    query = sa.select(checkpoints).where(checkpoints.c.name == name)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        return None
    return Checkpoint(row.name, row.kind, row.version, row.position, row.build)


def write_checkpoint(
    store: EventStore,
    conn: sa.Connection,
    projection: Projection,
    *,
    position: int,
    build: str,
    kind: str | None = None,
) -> None:
    values = {
        "kind": kind or projection.kind,
        "version": projection.version,
        "position": position,
        "build": build,
        "updated_at": format_time(store.clock()),
    }
    updated = conn.execute(checkpoints.update().where(checkpoints.c.name == projection.name).values(**values))
    if updated.rowcount == 0:
        conn.execute(checkpoints.insert().values(name=projection.name, **values))


def lock_appends(conn: sa.Connection) -> int:
    """Stop appends until this transaction ends; the last position (SQLite's write lock is already held)."""
    query = "SELECT last_position FROM event_positions WHERE id = 1"
    if conn.dialect.name == "postgresql":
        query += " FOR UPDATE"
    return int(conn.exec_driver_sql(query).scalar_one())


def hold_appends(conn: sa.Connection) -> None:
    """``lock_appends`` without reading the position: nothing to do on SQLite, whose
    write transactions already exclude each other."""
    if conn.dialect.name == "postgresql":
        run(conn, "SELECT last_position FROM event_positions WHERE id = 1 FOR UPDATE", None)


def ensure(store: EventStore, projection: Projection, *, inline: bool = False, rebuilt: bool = False) -> None:
    """Create the projection's tables if new; rebuild them if its version changed.

    Several processes may open a store at once after a version bump: one
    rebuilds, the others wait for it and then find the version current.
    ``inline``: for a store's inline projection, whose checkpoint then says
    so: a runner would fold its events a second time. A checkpoint a runner
    left behind the log's head is rebuilt first (as is one written inline by
    code from before kinds were kept, which cannot be told apart): appends
    fold only their own events, so the ones in between would be missed.
    """
    behind = False
    with store.transaction() as tx:
        conn = tx.connection
        head = lock_appends(conn)
        current = read_checkpoint(conn, projection.name, lock=True)
        if current is not None and current.version > projection.version:
            raise _newer_version(projection, current)
        if current is not None and current.version == projection.version:
            refuse_other_tables(conn, projection, current.version)
        take_tables(conn, projection, current, fresh=False)
        if current is not None and current.version == projection.version:
            if not inline or current.kind == INLINE:
                return
            behind = current.position < head and not rebuilt
            if not behind:
                write_checkpoint(
                    store, conn, projection, position=current.position, build=current.build, kind=INLINE
                )
                return
        if current is None and not store_has_events(conn):
            tag = secrets.token_hex(4)
            for table in projection.build_tables("", tag).values():
                table.create(conn, checkfirst=False)
            write_checkpoint(store, conn, projection, position=0, build=tag, kind=INLINE if inline else None)
            return
    rebuild(store, projection, wait=True, only_if_outdated=not behind)
    if inline:
        ensure(store, projection, inline=True, rebuilt=True)  # mark it inline (a runner may have rebuilt it)


INLINE = "inline"
"""A checkpoint's kind when appends fold the projection: its position stays where it was built."""


def _newer_version(projection: Projection, current: Checkpoint) -> ProjectionError:
    """Code older than the read model's tables (a rolling deploy's old process, a rollback) must not
    rebuild them back on its own: the newer code would rebuild them again at its next open."""
    return ProjectionError(
        f"projection {projection.name!r} in this store was built by version {current.version}, newer than "
        f"this code's {projection.version}: run the newer code, or, to go back on purpose, rebuild it "
        f"with this code (`eventstore rebuild`, or projections.rebuild)"
    )


def store_has_events(conn: sa.Connection) -> bool:
    return int(conn.exec_driver_sql("SELECT last_position FROM event_positions").scalar_one()) > 0


REBUILD_LEASE = timedelta(minutes=2)
"""How long a rebuild's claim lasts without renewal (it renews every batch)."""


def _rebuild_lock(projection: Projection) -> str:
    return projection.name + REBUILD_CLAIM


def _claim(store: EventStore, projection: Projection, tag: str) -> bool:
    """Claim the right to rebuild ``projection``: one rebuild at a time, across processes.

    The claim is a lease row in ``projection_checkpoints`` that expires, so a
    rebuild that died does not block the next one for longer than the lease.
    """
    name = _rebuild_lock(projection)
    with store.transaction() as tx:
        conn = tx.connection
        lock_appends(conn)
        row = conn.execute(
            sa.select(checkpoints.c.build, checkpoints.c.updated_at).where(checkpoints.c.name == name)
        ).first()
        now = store.clock()
        if row is not None and row.build != tag and row.updated_at > format_time(now):
            return False
        values = {
            "kind": "lock",
            "version": 0,
            "position": 0,
            "build": tag,
            "updated_at": format_time(now + REBUILD_LEASE),
        }
        if row is None:
            conn.execute(checkpoints.insert().values(name=name, **values))
        else:
            conn.execute(checkpoints.update().where(checkpoints.c.name == name).values(**values))
    return True


def _renew(store: EventStore, conn: sa.Connection, projection: Projection, tag: str) -> None:
    table = checkpoints
    now = store.clock()
    renewed = conn.execute(
        table.update()
        .where(
            table.c.name == _rebuild_lock(projection),
            table.c.build == tag,
            # An expired claim is lost even if nobody took it: a prune may have run meanwhile.
            table.c.updated_at > format_time(now),
        )
        .values(updated_at=format_time(now + REBUILD_LEASE))
    )
    if renewed.rowcount != 1:
        raise ProjectionError(f"the rebuild of {projection.name!r} lost its claim (its lease expired)")


def rebuild(
    store: EventStore,
    projection: Projection,
    *,
    batch_size: int = 10_000,
    progress: Callable[[Progress], None] | None = None,
    wait: bool = False,
    only_if_outdated: bool = False,
) -> Progress:
    """Rebuild ``projection`` from the whole log into fresh tables, then swap them in.

    Readers and writers carry on while the fresh tables fill; the swap takes
    the append lock only to apply the last few events and rename the tables.
    One rebuild of a projection runs at a time: another one raises
    ``ProjectionError``, or with ``wait=True`` waits for it.
    """
    check_count("batch_size", batch_size, minimum=1)
    tag = secrets.token_hex(4)
    while not _claim(store, projection, tag):
        if not wait:
            raise ProjectionError(f"a rebuild of {projection.name!r} is already running")
        pause(0.25)  # another process is rebuilding; its lease renews every batch
    try:
        with store.reading() as conn:
            current = read_checkpoint(conn, projection.name)
        if only_if_outdated and current is not None and current.version >= projection.version:
            if current.version > projection.version:  # newer code rebuilt it while this one waited
                raise _newer_version(projection, current)
            return Progress(0, 0, 0.0)
        return _rebuild(store, projection, tag, batch_size, progress)
    finally:
        with store.transaction() as tx:
            tx.connection.execute(
                checkpoints.delete().where(
                    checkpoints.c.name == _rebuild_lock(projection), checkpoints.c.build == tag
                )
            )


def _rebuild(
    store: EventStore,
    projection: Projection,
    tag: str,
    batch_size: int,
    progress: Callable[[Progress], None] | None,
) -> Progress:
    target = projection.targeting(REBUILD_SUFFIX, tag)
    started = time.perf_counter()
    late_indexes: list[sa.Index] = []
    with store.transaction() as tx:
        take_tables(tx.connection, projection, read_checkpoint(tx.connection, projection.name), fresh=True)
        for table in reversed(list(target.tables.values())):
            tx.connection.execute(sa.schema.DropTable(table, if_exists=True))
        for table in target.tables.values():
            # Secondary indexes are built once at the end, not row by row.
            late_indexes.extend(table.indexes)
            tx.connection.execute(sa.schema.CreateTable(table))
    head = store.last_position()
    total = _events_up_to(store, head)  # fewer than ``head`` once retention pruned flows
    memo: dict[Any, Any] = {SOLE_WRITER: True}
    position = 0
    done = 0

    def report(count: int) -> None:
        if progress is not None:
            progress(Progress(count, max(total, count), time.perf_counter() - started))

    fill = getattr(target, "fill", None)
    if fill is not None:
        # The projection folds the log flow by flow and writes each row once;
        # what follows then looks rows up as an inline append would.
        try:
            done = fill(store, head, lambda: _renewed(store, projection, tag), report, batch_size=batch_size)
        except (EventStoreError, sa.exc.SQLAlchemyError):
            raise
        except Exception as exc:  # the projection's own bulk fold: name it, as a handler's error is
            detail = f": {type(exc).__name__}: {exc}"
            raise ProjectionFailed(projection.name, "fill", (1, head), detail) from exc
        memo, position = {}, head
    else:
        position, done = _fold(store, projection, target, tag, memo, position, head, batch_size, done, report)
    # Writers carried on meanwhile: fold what they appended, up to the head as it is now, pass
    # after pass while what is left shrinks (the fold outruns the writers). Whatever is left is
    # folded by the swap, which holds appends: a while at a time, if the writers outran the fold.
    left: int | None = None
    for _ in range(_CATCH_UP_PASSES):
        remaining = store.last_position() - position
        if remaining <= batch_size or (left is not None and remaining >= left):
            break
        left, head = remaining, position + remaining
        position, done = _fold(store, projection, target, tag, memo, position, head, batch_size, done, report)
    with store.transaction() as tx:
        _renew(store, tx.connection, projection, tag)
        for index in late_indexes:
            index.create(tx.connection)
    failures = 0
    hold, was_behind = _HOLD, None
    while True:
        try:
            position, folded, swapped = _swap(
                store, projection, target, tag, position, memo, batch_size, hold
            )
        except (ConcurrencyError, StoreBusy):
            # PostgreSQL chose the swap as a deadlock's victim, or its wait for the positions row
            # or the live tables outlasted the store's lock_timeout (a long read transaction on
            # one of them). Nothing of it stayed: fold the tail again from the tables as they are.
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
            hold = min(hold * 2, _longest_hold(store))  # the writers outran a hold: hold them longer
        was_behind = behind
        _give_appends_a_turn(store)
    for live in (projection, *store.projections):
        forget = getattr(live, "forget_remembered", None)
        if forget is not None:
            forget()  # states remembered from the old tables are not trusted past a rebuild
    result = Progress(done, max(total, done), time.perf_counter() - started)
    if progress is not None:
        progress(result)
    return result


def _events_up_to(store: EventStore, position: int) -> int:
    """How many events the log holds up to ``position``: a rebuild's total to report."""
    query = sa.select(sa.func.count()).select_from(flow_events).where(flow_events.c.position <= position)
    return int(store.query(query)[0][0])


_SWAP_ATTEMPTS = 5
_CATCH_UP_PASSES = 10
_HOLD = 0.2
"""How long the swap keeps appends waiting at a time, in seconds, at first: the hold doubles
while writers outrun it, up to half their own wait for the lock (``_longest_hold``)."""
_NO_LIMIT = 10.0
"""The hold's cap is half of this when appends wait for the lock without a limit."""
_TURN = 0.1
"""The pause between two holds in which appends waiting for SQLite's write lock get it: they
poll it every 100 ms once they have waited a while (SQLite's busy handler)."""


def _fold(
    store: EventStore,
    projection: Projection,
    target: Projection,
    tag: str,
    memo: dict[Any, Any],
    position: int,
    up_to: int,
    batch_size: int,
    done: int,
    report: Callable[[int], None],
) -> tuple[int, int]:
    """Apply the events after ``position`` up to ``up_to`` to the fresh tables, a batch per transaction.

    Stops at ``up_to`` even while writers go on appending: a rebuild must
    not chase the log. Returns the last position applied and the count done.
    """
    while position < up_to:
        batch = list(store.read_all(after_position=position, limit=min(batch_size, up_to - position)))
        batch = [event for event in batch if event.position <= up_to]
        if not batch:
            break
        with store.transaction() as tx:
            _renew(store, tx.connection, projection, tag)
            tx.memo = memo
            _apply_grouped(target, tx, batch)
        position = batch[-1].position
        done += len(batch)
        report(done)
        if len(memo) > 200_000:
            memo.clear()  # bounded memory; also drops SOLE_WRITER, so lookups resume
    return position, done


def _fold_a_while(
    store: EventStore, target: Projection, tx: Transaction, position: int, up_to: int, limit: int, hold: float
) -> tuple[int, int]:
    """Apply up to ``limit`` events after ``position`` (none past ``up_to``) in ``tx``, for ``hold`` s or so.

    Events go in chunks sized so that one takes what is left of ``hold``, as
    far as the chunks so far tell. Returns the last position applied and the count.
    """
    started = time.perf_counter()
    folded, chunk = 0, min(limit, 16)
    while position < up_to and folded < limit:
        events = list(store.read_all(after_position=position, limit=min(chunk, limit - folded)))
        events = [event for event in events if event.position <= up_to]
        if not events:
            break
        began = time.perf_counter()
        _apply_grouped(target, tx, events)
        position = events[-1].position
        folded += len(events)
        now = time.perf_counter()
        if now - started >= hold:
            break
        each = (now - began) / len(events)
        left = hold - (now - started)
        chunk = limit if left >= limit * each else max(1, int(left / each))
    return position, folded


def _longest_hold(store: EventStore) -> float:
    """Half of how long this store's appends wait for the lock (its ``busy_timeout`` on SQLite,
    ``lock_timeout`` on PostgreSQL), taken as every writer's: a hold that long fails none of them."""
    try:
        options = store.opened_with()
    except InvalidInput:
        return _HOLD  # a store put together by hand: its writers' patience is unknown
    patience = float(options["busy_timeout" if store.engine.dialect.name == "sqlite" else "lock_timeout"])
    return max(_HOLD, (patience or _NO_LIMIT) / 2)


def _give_appends_a_turn(store: EventStore) -> None:
    """Let the appends a rebuild held back in: on SQLite they poll for the lock (``_TURN``);
    PostgreSQL queues them, and grants them the lock before the rebuild's next request."""
    if store.engine.dialect.name == "sqlite":
        pause(_TURN)


def _swap(
    store: EventStore,
    projection: Projection,
    target: Projection,
    tag: str,
    position: int,
    memo: dict[Any, Any],
    batch_size: int,
    hold: float,
) -> tuple[int, int, bool]:
    """Fold the events after ``position`` into the fresh tables and swap them in, appends held.

    Appends wait for about ``hold`` seconds at most: a tail the fold cannot
    finish by then is folded in part, and committed without the swap.
    Returns the last position folded, the count, and whether the tables
    were swapped.
    """
    with store.transaction() as tx:
        conn = tx.connection
        head = lock_appends(conn)
        _renew(store, conn, projection, tag)
        recorded = read_checkpoint(conn, projection.name, lock=True)
        if recorded is None:
            _refuse_foreign_live_tables(conn, projection)
        tx.memo = memo
        started = time.perf_counter()
        folded = 0
        while position < head:
            if folded and time.perf_counter() - started >= hold:
                return position, folded, False
            left = hold - (time.perf_counter() - started)
            position, more = _fold_a_while(store, target, tx, position, head, batch_size, left)
            if not more:
                break  # the rest of the tail was pruned
            folded += more
        _lock_live_tables(conn, projection)
        drop_dropped_tables(conn, projection)  # first: one may refer to a live table dropped next
        for live in reversed(list(projection.tables.values())):
            conn.execute(sa.schema.DropTable(live, if_exists=True))
        for name, fresh in target.tables.items():
            quote = conn.dialect.identifier_preparer.quote_identifier
            conn.exec_driver_sql(f"ALTER TABLE {quote(fresh.name)} RENAME TO {quote(name)}")
        release_fresh_tables(conn, projection)
        inline = recorded is not None and recorded.kind == INLINE  # appends fold it on: a runner may not
        write_checkpoint(store, conn, projection, position=head, build=tag, kind=INLINE if inline else None)
        # every store checks its inline projections again at its next append (EventStore.fence)
        conn.exec_driver_sql("UPDATE event_positions SET generation = generation + 1 WHERE id = 1")
    return position, folded, True


def _refuse_foreign_live_tables(conn: sa.Connection, projection: Projection) -> None:
    """A first build found its live names free (``take_tables``): a table there now is someone else's."""
    inspector = sa.inspect(conn)
    found = [table.name for table in projection.tables.values() if inspector.has_table(table.name)]
    if found:
        listed = ", ".join(map(repr, found))
        raise ProjectionError(
            f"table(s) {listed} appeared while projection {projection.name!r} was first built; "
            "they are not its own and were left as they are: rename them, then rebuild"
        )


def _lock_live_tables(conn: sa.Connection, projection: Projection) -> None:
    """On PostgreSQL, lock the live tables that exist for the swap's DROPs, all at once, in order.

    A fused append (``eventstore.projection.FusedWrite``) locks the tables it
    names when its statement is planned, in ``projection.tables`` order.
    DROPs one by one would let an append planned between two of them hold
    one table and wait for another the swap already holds: a deadlock. One
    ``LOCK TABLE`` in the same order leaves such an append nothing to hold.
    """
    if conn.dialect.name != "postgresql":
        return  # SQLite: the swap already holds the database's only write lock
    names = [table.name for table in projection.tables.values()]
    found = set(
        conn.execute(
            sa.text(
                "SELECT name FROM unnest(CAST(:names AS text[])) AS n(name)"
                " WHERE to_regclass(quote_ident(name)) IS NOT NULL"
            ),
            {"names": names},
        ).scalars()
    )
    existing = [conn.dialect.identifier_preparer.quote(name) for name in names if name in found]
    if existing:
        conn.exec_driver_sql(f"LOCK TABLE {', '.join(existing)} IN ACCESS EXCLUSIVE MODE")


@contextmanager
def _renewed(store: EventStore, projection: Projection, tag: str) -> Iterator[Transaction]:
    """A transaction of a rebuild that still holds its claim."""
    with store.transaction() as tx:
        _renew(store, tx.connection, projection, tag)
        yield tx


def _apply_grouped(projection: Projection, tx: Transaction, events: Sequence[RecordedEvent]) -> None:
    name = "apply_many" if getattr(projection, "apply_many", None) is not None else "apply"
    fold: Callable[[Transaction, Sequence[RecordedEvent]], object] = getattr(projection, name)
    with fold_errors(projection.name, name, events, tx.connection):
        returned = fold(tx, events)
    check_returned(projection, name, returned)


class CatchUpRunner:
    """Keeps a catch-up projection current: reads the log from its checkpoint, in batches.

    Each batch's read-model writes and the new checkpoint commit in one
    transaction, so every event takes effect exactly once, and a crashed
    runner resumes where it left off.
    """

    def __init__(self, store: EventStore, projection: Projection, *, batch_size: int = 500) -> None:
        check_count("batch_size", batch_size, minimum=1)
        if projection.kind == "inline" or any(p.name == projection.name for p in store.projections):
            raise ProjectionError(
                f"projection {projection.name!r} is inline here: appends fold it already, and a runner "
                "would fold their events a second time; use it inline or with a runner, not both"
            )
        self.store = store
        self.projection = projection
        self.batch_size = batch_size
        ensure(store, projection)

    def run_once(self) -> int:
        """Apply the next batch; return how many events it held (0: caught up)."""
        with self.store.transaction() as tx:
            checkpoint = read_checkpoint(tx.connection, self.projection.name, lock=True)
            if checkpoint is not None and checkpoint.version > self.projection.version:
                raise _newer_version(self.projection, checkpoint)  # not to be rebuilt back by this code
            if checkpoint is None or checkpoint.version != self.projection.version:
                raise ProjectionError(
                    f"projection {self.projection.name!r} needs a rebuild before it can catch up"
                )
            if checkpoint.kind == INLINE:
                raise ProjectionError(
                    f"projection {self.projection.name!r} is folded inline by the stores opened with it "
                    "(projections=[...]): a runner would fold their events a second time; nothing was "
                    "written: run it with a runner under another name"
                )
            events = list(self.store.read_all(after_position=checkpoint.position, limit=self.batch_size))
            if not events:
                return 0
            _apply_grouped(self.projection, tx, events)
            write_checkpoint(
                self.store,
                tx.connection,
                self.projection,
                position=events[-1].position,
                build=checkpoint.build,
            )
        return len(events)

    def run_until_caught_up(self) -> int:
        """Apply batches until none is left; return the number of events applied."""
        total = 0
        while applied := self.run_once():
            total += applied
        return total

    def position(self) -> int:
        with self.store.reading() as conn:
            checkpoint = read_checkpoint(conn, self.projection.name)
        return 0 if checkpoint is None else checkpoint.position
