"""Transactions of long-running loops that survive a pooled connection the server ended while it idled.

A rebuild, a catch-up runner, a command or a maintenance job may find that
the pooled connection it checks out was ended while it sat in the pool
(``idle_session_timeout``, a firewall, a failover, ``pg_terminate_backend``):
its first statement fails, as ``ConnectionLost``. There is no ping before
every checkout (a round trip per append, ``docs/design.md``); instead these
loops begin each transaction with a first statement of their own (``start``)
and, if that one finds the connection dead, begin again once on a fresh one.

That retry is always safe: the failed statement was the transaction's first,
so nothing of it ran, let alone committed. The connection that finds itself
dead invalidates the pool's older connections too (``driver_error``), so the
retry gets a fresh connection even when the server ended them all. If that
fresh one is found dead as well, or cannot be opened (the database is down
or unreachable), the caller gets ``ReconnectFailed`` (a ``ConnectionLost``):
nothing ran. A connection that dies later in the
transaction is not retried here (the work may have half run, or its commit
may have landed): the caller gets a plain ``ConnectionLost``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, TypeVar

import sqlalchemy as sa

from .errors import ConnectionLost, ReconnectFailed, StorageError, StoreBusy

if TYPE_CHECKING:
    from .store import EventStore
    from .transaction import Transaction

__all__ = ["begun", "reading", "transaction"]

_C = TypeVar("_C")


@contextmanager
def begun(enter: Callable[[], AbstractContextManager[_C]], start: Callable[[_C], object]) -> Iterator[_C]:
    """``enter()``'s context, ``start`` run in it first; entered again once if ``start`` found it dead.

    ``enter`` must translate driver errors (``store.transaction``,
    ``store.reading``): a dead connection is ``ConnectionLost`` as it exits.
    Both found dead, or no fresh one could be opened: ``ReconnectFailed``
    (its cause the first loss, its context the second failure), before
    anything of the transaction ran.
    """
    first: ConnectionLost | None = None
    while True:
        opened = started = False
        try:
            with enter() as context:
                opened = True
                start(context)
                started = True  # from here on, an error is the caller's: never entered again
                yield context
            return
        except ConnectionLost as exc:
            if started:
                raise
            if first is not None:
                raise ReconnectFailed(
                    "the connection was found dead, and a fresh one too; "
                    f"nothing of the transaction ran ({exc})"
                ) from first
            first = exc
        except StorageError as exc:
            if started or first is None or opened or isinstance(exc, StoreBusy):
                raise
            raise ReconnectFailed(  # the database went down, or cannot be reached any more
                f"the connection was found dead, and no fresh one could be opened ({exc}); "
                "nothing of the transaction ran"
            ) from first


def transaction(
    store: EventStore, start: Callable[[sa.Connection], object] | None = None
) -> AbstractContextManager[Transaction]:
    """``store.transaction()`` begun with ``start`` (default: ``SELECT 1`` on PostgreSQL), once more if dead.

    ``start`` must be harmless to run again (a lock, a read): it is the
    statement that finds a dead connection. On SQLite, where a connection is
    not ended by a server, the default runs nothing.
    """
    first = _alive if start is None else start
    return begun(store.transaction, lambda tx: first(tx.connection))


def reading(store: EventStore) -> AbstractContextManager[sa.Connection]:
    """``store.reading()`` on a connection found alive by a first round trip, once more if it was dead."""
    return begun(store.reading, _alive)


def _alive(conn: sa.Connection) -> None:
    """A round trip that finds a dead connection (SQLite's cannot be ended by a server: none)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SELECT 1")
