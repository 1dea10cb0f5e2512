"""A rebuild's swap: the tail of the log folded and the fresh tables renamed in, appends held."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from eventstore import EventStore, reconnecting
from eventstore.aio import pause
from eventstore.errors import (
    InvalidInput,
    ProjectionError,
)

from .checkpoints import INLINE, lock_appends, read_checkpoint, renew, write_checkpoint
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
