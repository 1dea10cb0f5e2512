"""Closing an async store while a call holds a connection: the call ends, and its connection is closed."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import warnings
from typing import Any

import pytest
from sqlalchemy.util import await_only

from eventstore import EventStore, NewEvent, StoreClosed
from eventstore.aio import AsyncEventStore
from tests.conftest import Target


def test_a_connection_given_back_after_close_is_closed_not_left_to_the_garbage_collector(
    target: Target,
) -> None:
    async def main() -> None:
        store = await AsyncEventStore.open(target.url, **target.options)
        await store.append("flow-1", [NewEvent("Started", {})])
        reading, release = asyncio.Event(), asyncio.Event()

        def read_slowly(sync: EventStore) -> int:
            with sync.reading() as conn:
                reading.set()
                await_only(release.wait())  # the store is closed meanwhile
                return int(conn.exec_driver_sql("SELECT count(*) FROM flow_events").scalar_one())

        reader = asyncio.ensure_future(store.run(read_slowly, store.store))
        await reading.wait()
        await store.close()
        release.set()
        assert await reader == 1  # a call under way ends on its connection
        with pytest.raises(StoreClosed):
            await store.read_flow("flow-1")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        asyncio.run(main())
        gc.collect()  # an open connection left to it warns here
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def _closed(dbapi_connection: Any) -> bool:
    """Whether a driver connection (sqlite3 or psycopg) is closed."""
    if hasattr(dbapi_connection, "closed"):
        return bool(dbapi_connection.closed)
    try:
        dbapi_connection.execute("SELECT 1")
    except sqlite3.ProgrammingError:
        return True
    return False


def test_the_engine_after_close_pools_again_while_one_given_back_from_before_is_closed(
    target: Target,
) -> None:
    store = target.open()
    engine = store.engine
    held = engine.connect()  # in use across close()
    given_back_late = held.connection.dbapi_connection
    store.close()
    held.close()
    assert _closed(given_back_late)  # given back to the discarded pool: closed, not kept
    with engine.connect() as conn:
        first = conn.connection.dbapi_connection
    with engine.connect() as conn:
        assert conn.connection.dbapi_connection is first  # the new pool keeps what it is given
    assert engine.pool.checkedout() == 0
    engine.dispose()
