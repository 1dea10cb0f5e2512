"""What a read cost the database, counted by the database: no timings.

SQLite: the VM steps its statements ran (a progress handler called each
step). PostgreSQL: the rows it read from the given tables, by index or by
scan (``pg_stat_xact_user_tables``). Both grow with the rows a query
touches, so a read that does not grow with a table is proven by comparing
the counts before and after the table grew.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from eventstore import EventStore


def database_work(store: EventStore, tables: Sequence[str], read: Callable[[Any], object]) -> int:
    """What ``read(conn)`` cost: SQLite VM steps, or rows PostgreSQL read from ``tables`` (names)."""
    with store.reading() as conn:
        if conn.dialect.name == "sqlite":
            steps = 0

            def step() -> int:
                nonlocal steps
                steps += 1
                return 0

            raw: Any = conn.connection.dbapi_connection
            raw.set_progress_handler(step, 1)
            try:
                read(conn)
            finally:
                raw.set_progress_handler(None, 1)
            return steps
        quoted = [conn.dialect.identifier_preparer.quote(name) for name in tables]
        # The backend's counts not yet reported (some of earlier transactions' too): before and after.
        count = sa.text(
            "SELECT coalesce(sum(idx_tup_fetch + seq_tup_read), 0) FROM pg_stat_xact_user_tables "
            "WHERE relid = ANY(CAST(:tables AS regclass[]))"
        )
        before = conn.execute(count, {"tables": quoted}).scalar_one()
        read(conn)
        return int(conn.execute(count, {"tables": quoted}).scalar_one() - before)


def call_work(store: EventStore, tables: Sequence[str], read: Callable[[], object]) -> int:
    """``database_work`` of a call that takes its own connections (``store.reading()``).

    SQLite: the VM steps of every statement the call ran, on whichever
    connection. PostgreSQL: the rows each of its transactions read from
    ``tables``, counted as it ends (each connection's earlier counts reported as it is taken).
    """
    engine, work = store.engine, 0
    if engine.dialect.name == "sqlite":
        stepped: dict[int, Any] = {}

        def step() -> int:
            nonlocal work
            work += 1
            return 0

        def count_steps(conn: sa.Connection, *_: object) -> None:
            raw: Any = conn.connection.dbapi_connection
            if id(raw) not in stepped:
                stepped[id(raw)] = raw
                raw.set_progress_handler(step, 1)

        def checked_out(dbapi_connection: Any, *_: object) -> None:  # the store's own reads use its cursor
            if id(dbapi_connection) not in stepped:
                stepped[id(dbapi_connection)] = dbapi_connection
                dbapi_connection.set_progress_handler(step, 1)

        sa.event.listen(engine, "before_cursor_execute", count_steps)
        sa.event.listen(engine, "checkout", checked_out)
        try:
            read()
        finally:
            sa.event.remove(engine, "before_cursor_execute", count_steps)
            sa.event.remove(engine, "checkout", checked_out)
            for raw in stepped.values():
                raw.set_progress_handler(None, 1)
        return work
    regclasses = [engine.dialect.identifier_preparer.quote(name) for name in tables]

    def flushed(dbapi_connection: Any, *_: object) -> None:
        """Report the connection's pending counts first: its transactions' counts are then their own."""
        dbapi_connection.autocommit = True  # checked out: no transaction under way
        dbapi_connection.execute("SELECT pg_stat_force_next_flush()")  # done as it goes idle
        dbapi_connection.execute("SELECT 1")
        dbapi_connection.autocommit = False

    def ended(conn: sa.Connection) -> None:
        nonlocal work
        cursor: Any = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]  # checked out
        cursor.execute(
            "SELECT coalesce(sum(idx_tup_fetch + seq_tup_read), 0) FROM pg_stat_xact_user_tables "
            "WHERE relid = ANY(CAST(%s AS regclass[]))",
            (regclasses,),
        )
        work += int(cursor.fetchone()[0])

    events: list[tuple[str, Callable[..., None]]] = [
        ("checkout", flushed),
        ("commit", ended),
        ("rollback", ended),
    ]
    for name, listener in events:
        sa.event.listen(engine, name, listener)
    try:
        read()
    finally:
        for name, listener in events:
            sa.event.remove(engine, name, listener)
    return work
