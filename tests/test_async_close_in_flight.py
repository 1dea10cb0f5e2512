"""Closing an async store while a call holds a connection: the call ends, and its connection is closed."""

from __future__ import annotations

import asyncio
import gc
import warnings

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
