"""A rebuild's swap: the tail of the log folded and the fresh tables renamed in, appends held."""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from eventstore import EventStore, reconnecting
from eventstore.aio import pause
from eventstore.errors import (
    EventStoreError,
    InvalidInput,
    ProjectionError,
)
from eventstore.wording import nouns

from .checkpoints import INLINE, forget_retirement, lock_appends, read_checkpoint, renew, write_checkpoint
from .folding import fold_a_while
from .ownership import drop_dropped_tables, release_fresh_tables

if TYPE_CHECKING:
    from .declaration import Projection


HOLD = 0.2
"""How long the swap keeps appends waiting at a time, in seconds, at first: the hold doubles
while writers outrun it, up to half their own wait for the lock (``longest_hold``)."""
NO_LIMIT = 10.0
"""The hold's cap is half of this when appends wait for the lock without a limit."""
TURN = 0.1
"""The pause between two holds in which appends waiting for SQLite's write lock get it: they
poll it every 100 ms once they have waited a while (SQLite's busy handler)."""


LOCK_WAIT = HOLD
"""How long the swap waits at a time for the live tables' lock on PostgreSQL, in seconds (less if
the store's ``lock_timeout`` is shorter): readers of the tables queue behind the request meanwhile."""
FIRST_PAUSE = 0.1
LONGEST_PAUSE = 2.0
"""The pauses between the swap's tries for live tables a long transaction holds: the first, and
the cap of the doubling ones (writers and readers go on meanwhile)."""
PATIENCE = 300.0
"""How long a rebuild waits in all, by default, for live tables a long transaction holds."""


class LiveTableBusy(Exception):
    """The swap's short wait for a live table ran out: another transaction holds it (rolled back:
    caught by the rebuild, which waits and tries again)."""

    def __init__(self, table: str) -> None:
        super().__init__(table)
        self.table = table


class LiveTableWaits:
    """A rebuild's waits for its live tables while a long transaction holds one (a report).

    Each try waits ``LOCK_WAIT`` at most, holding nothing else, then lets go:
    readers and writers are held back that long at most. Between tries it
    pauses (``FIRST_PAUSE``, doubling up to ``LONGEST_PAUSE``), and renews the
    rebuild's claim (``tag``), whose lease is shorter than the patience may be.
    Patience is spent by the ``store``'s clock or, should that clock stand
    still, by the waits themselves.
    """

    def __init__(self, store: EventStore, projection: Projection, patience: float, tag: str) -> None:
        self._store = store
        self._projection = projection
        self._patience = patience
        self._tag = tag
        self._started: datetime | None = None  # the clock is only read once a wait runs out
        self._waited = 0.0
        self._pause = FIRST_PAUSE

    def wait_out(self, busy: LiveTableBusy) -> None:
        """Return once the live tables could all be locked (and were let go again); ``ProjectionError``
        naming the held table once the patience is spent."""
        while True:
            now = self._store.clock()
            if self._started is None:
                self._started = now
            self._waited += LOCK_WAIT
            spent = max((now - self._started).total_seconds(), self._waited)
            if spent >= self._patience:
                raise ProjectionError(self._gave_up(busy.table, spent)) from busy
            seconds = min(self._pause, self._patience - spent)
            pause(seconds)  # under eventstore.aio, the event loop runs on meanwhile
            self._waited += seconds
            self._pause = min(2 * self._pause, LONGEST_PAUSE)
            with reconnecting.transaction(self._store) as tx:  # committed whether or not the lock is had
                renew(self._store, tx.connection, self._projection, self._tag)
            try:
                with reconnecting.transaction(self._store) as tx:  # holding no append lock
                    _lock_live_tables(tx.connection, self._projection)
                return
            except LiveTableBusy as again:
                busy = again

    def _gave_up(self, table: str, spent: float) -> str:
        holders = _holders(self._store, table)
        return (
            f"the rebuild of {self._projection.name!r} gave up its swap: its live table {table!r} was "
            f"held all the {spent:.1f}s it waited (patience={self._patience:g}s) by another "
            f"transaction, a long read such as a report{holders}; readers kept the old tables, "
            "which are still live: rebuild again once that transaction ends"
        )


def _holders(store: EventStore, table: str) -> str:
    """`` (backend pid N, open Ns)`` for the transactions holding ``table``, if they can be seen."""
    try:
        with reconnecting.reading(store) as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT DISTINCT l.pid, extract(epoch FROM now() - a.xact_start) FROM pg_locks l"
                    " LEFT JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.granted"
                    " AND l.relation = to_regclass(quote_ident(:table)) AND l.pid <> pg_backend_pid()"
                    " ORDER BY l.pid"
                ),
                {"table": table},
            ).all()
    except EventStoreError:
        return ""  # the message names the table all the same
    shown = [f"backend pid {pid}" + ("" if age is None else f", open {age:.0f}s") for pid, age in rows]
    return f" ({'; '.join(shown)})" if shown else ""


def longest_hold(store: EventStore) -> float:
    """Half of how long this store's appends wait for the lock (its ``busy_timeout`` on SQLite,
    ``lock_timeout`` on PostgreSQL), taken as every writer's: a hold that long fails none of them."""
    try:
        options = store.opened_with()
    except InvalidInput:
        return HOLD  # a store put together by hand: its writers' patience is unknown
    patience = float(options["busy_timeout" if store.engine.dialect.name == "sqlite" else "lock_timeout"])
    return max(HOLD, (patience or NO_LIMIT) / 2)


def give_appends_a_turn(store: EventStore) -> None:
    """Let the appends a rebuild held back in: on SQLite they poll for the lock (``TURN``);
    PostgreSQL queues them, and grants them the lock before the rebuild's next request."""
    if store.engine.dialect.name == "sqlite":
        pause(TURN)


def swap_in(
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
    with reconnecting.transaction(store) as tx:
        conn = tx.connection
        head = lock_appends(conn)
        renew(store, conn, projection, tag)
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
            position, more = fold_a_while(store, target, tx, position, head, batch_size, left)
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
        forget_retirement(conn, projection.name)  # retired, then rebuilt on purpose: it is back
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
            f"{nouns(len(found), 'table')} {listed} appeared while projection {projection.name!r} was "
            "first built; not its own, left as found: rename, then rebuild"
        )


def _lock_live_tables(conn: sa.Connection, projection: Projection) -> None:
    """On PostgreSQL, lock the live tables that exist for the swap's DROPs, one after the other in
    order, waiting ``LOCK_WAIT`` in all (``LiveTableBusy`` if a table is still held then).

    A fused append (``eventstore.projection.FusedWrite``) locks the tables it
    names when its statement is planned, in ``projection.tables`` order.
    DROPs one by one would let an append planned between two of them hold
    one table and wait for another the swap already holds: a deadlock. Locks
    taken first, in the same order, leave such an append nothing to hold.

    The wait is short because while the request waits (for a read left open
    on a table, say a report), every new reader of that table queues behind
    it, and appends wait for the swap: a long wait would stall them all.
    """
    lock_tables(conn, [table.name for table in projection.tables.values()])


def lock_tables(conn: sa.Connection, names: list[str]) -> None:
    """On PostgreSQL, lock those of the tables ``names`` that exist, in order, waiting ``LOCK_WAIT`` in
    all (``LiveTableBusy`` if one is still held then): ``_lock_live_tables`` for tables named."""
    if conn.dialect.name != "postgresql":
        return  # SQLite: a write transaction already holds the database's only write lock
    found = set(
        conn.execute(
            sa.text(
                "SELECT name FROM unnest(CAST(:names AS text[])) AS n(name)"
                " WHERE to_regclass(quote_ident(name)) IS NOT NULL"
            ),
            {"names": names},
        ).scalars()
    )
    existing = [name for name in names if name in found]
    if not existing:
        return
    before = conn.exec_driver_sql("SELECT current_setting('lock_timeout')").scalar_one()
    deadline = time.perf_counter() + LOCK_WAIT
    for name in existing:
        left = max(1, math.ceil((deadline - time.perf_counter()) * 1000))
        conn.execute(_SHORTER_LOCK_TIMEOUT, {"ms": left})
        try:
            quoted = conn.dialect.identifier_preparer.quote(name)
            conn.exec_driver_sql(f"LOCK TABLE {quoted} IN ACCESS EXCLUSIVE MODE")
        except sa.exc.OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
                raise
            raise LiveTableBusy(name) from exc
    conn.execute(sa.text("SELECT set_config('lock_timeout', :before, true)"), {"before": before})


_LOCK_NOT_AVAILABLE = "55P03"  # the wait outlasted lock_timeout
_SHORTER_LOCK_TIMEOUT = sa.text(  # the session's own lock_timeout if shorter; 0 is "no limit"
    "SELECT set_config('lock_timeout', CAST(CAST(least(coalesce(nullif(ceil(EXTRACT(EPOCH FROM"
    " CAST(current_setting('lock_timeout') AS interval)) * 1000), 0), :ms), :ms) AS integer) AS text), true)"
)
