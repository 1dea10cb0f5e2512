"""Indexes a projection declares that its live tables lack: added in place, with no rebuild.

An index changes no row a fold writes, so a projection may declare a new one
without a version bump (the layout check, ``ownership.layout_difference``,
compares columns and keys, never indexes). A store built before it gets it
the next time the projection is ensured, after ``ensure``'s transaction has
committed, so the build never holds the appends lock or the checkpoint row:

* PostgreSQL: ``CREATE INDEX CONCURRENTLY`` on an autocommit connection.
  Appends, reads and other processes' opens go on while it reads the table;
  it waits for the transactions already writing that table to end. One
  process builds a given index at a time, holding a session advisory lock
  on its name; another that finds the lock taken goes on without waiting
  (the index changes plans, never results). An index left INVALID by a
  build that was killed or cancelled is dropped (``DROP INDEX
  CONCURRENTLY``) and built again by the next open that gets the lock.
  The build waits, under the store's ``lock_timeout``, for transactions
  already writing the table (or holding older snapshots) to end; one that
  gives up (lock or statement timeout) is logged and the store opens
  without the index, which the next open builds.
* SQLite: ``CREATE INDEX IF NOT EXISTS`` in a write transaction of its own,
  which holds SQLite's database-wide write lock while it reads the table:
  every write to the file waits until it is built; reads go on (WAL).
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING

import sqlalchemy as sa

from eventstore import reconnecting

if TYPE_CHECKING:
    from eventstore import EventStore

    from .declaration import Projection

log = logging.getLogger("eventstore.projections")

_GAVE_UP = ("55P03", "57014")  # lock not available (lock_timeout), query cancelled (statement timeout)


def add_missing_indexes(store: EventStore, projection: Projection, build: str) -> list[str]:
    """Create the declared indexes the live tables (of build ``build``) lack; return their names.

    Call it outside any transaction of ``store``: on PostgreSQL each one is
    built concurrently, on a connection of its own.
    """
    declared = [
        index
        for table in projection.build_tables("", build).values()
        for index in sorted(table.indexes, key=lambda i: str(i.name))
    ]
    if not declared:
        return []
    if store.dialect == "postgresql":
        return [str(index.name) for index in declared if _build_concurrently(store, index)]
    with store.reading() as conn:
        if not _lacking(conn, declared):
            return []  # the usual case: no write transaction, no write lock
    with store.transaction() as tx:
        lacking = _lacking(tx.connection, declared)
        for index in lacking:
            tx.connection.execute(sa.schema.CreateIndex(index, if_not_exists=True))
        return [str(index.name) for index in lacking]


def _lacking(conn: sa.Connection, declared: list[sa.Index]) -> list[sa.Index]:
    """The indexes of ``declared`` whose table is there without them."""
    inspector = sa.inspect(conn)
    lacking: list[sa.Index] = []
    for index in declared:
        table = index.table
        assert table is not None  # an index of a declared table
        present = inspector.has_table(table.name) and inspector.get_indexes(table.name)
        if present is not False and index.name not in {found["name"] for found in present}:
            lacking.append(index)
    return lacking


_VALID = sa.text("SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(quote_ident(:name))")
_TABLE = sa.text("SELECT to_regclass(quote_ident(:name)) IS NOT NULL")
_LOCK = sa.text("SELECT pg_try_advisory_lock(:key)")
_UNLOCK = sa.text("SELECT pg_advisory_unlock(:key)")


def _build_concurrently(store: EventStore, index: sa.Index) -> bool:
    """Build ``index`` unless it is valid or being built by another process; whether this one built it."""
    table = index.table
    assert table is not None  # an index of a declared table
    name = str(index.name)
    # a pooled connection the server ended while it idled (idle_session_timeout) is replaced
    with reconnecting.reading(store) as conn:
        conn.rollback()  # the liveness check's transaction: none may be under way to set AUTOCOMMIT
        conn.execution_options(isolation_level="AUTOCOMMIT")
        if conn.execute(_VALID, {"name": name}).scalar() is True:
            return False
        if not conn.execute(_TABLE, {"name": table.name}).scalar():
            return False  # swapped out by a rebuild since: its successor was built with it
        schema = conn.exec_driver_sql("SELECT current_schema()").scalar()
        named = f"eventstore index\x00{schema}\x00{name}".encode()
        key = int.from_bytes(hashlib.blake2b(named, digest_size=8).digest(), "big", signed=True)
        if not conn.execute(_LOCK, {"key": key}).scalar():
            return False  # another process is building it now
        try:
            built = _build_locked(conn, index, name)
        except sa.exc.OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) not in _GAVE_UP:
                conn.invalidate()
                raise
            # It waited longer than the store's lock_timeout for older transactions to end: the
            # store opens without it (it changes plans, never results); the next open tries again.
            log.warning("index %s not built, the next open tries again: %s", name, exc.orig)
            built = False
        except BaseException:
            conn.invalidate()  # its session ends, and the advisory lock with it
            raise
        conn.execute(_UNLOCK, {"key": key})
        return built


def _build_locked(conn: sa.Connection, index: sa.Index, name: str) -> bool:
    valid = conn.execute(_VALID, {"name": name}).scalar()  # again, now that no one else builds it
    if valid is True:
        return False
    if valid is False:  # not valid, and no live build holds the lock: left by one killed or cancelled
        conn.exec_driver_sql(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"')
    index.dialect_options["postgresql"]["concurrently"] = True
    conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))
    return True
