"""An AsyncEventStore belongs to the event loop that opened it: another loop's calls are refused, clearly."""

from __future__ import annotations

import asyncio
import threading

import pytest

from eventstore import InvalidInput, NewEvent, StoreClosed
from eventstore.aio import AsyncEventStore
from tests.conftest import Target

OTHER_LOOP = "belongs to the event loop that opened it"


def test_a_second_loop_is_refused_and_can_still_close_the_store_of_a_finished_one(target: Target) -> None:
    """Before, appends taking turns on SQLite's writer there raised asyncio's RuntimeError
    ("bound to a different event loop"), which is no store error."""

    async def opened() -> AsyncEventStore:
        store = await AsyncEventStore.open(target.url, **target.options)
        await asyncio.gather(*(store.append("flow-1", [NewEvent("Noted", {})]) for _ in range(3)))
        return store

    store = asyncio.run(opened())

    async def again() -> None:
        appends = [store.append("flow-1", [NewEvent("Noted", {})]) for _ in range(3)]
        for refused in await asyncio.gather(*appends, store.read_flow("flow-1"), return_exceptions=True):
            assert isinstance(refused, InvalidInput) and OTHER_LOOP in str(refused), refused
        await store.close()  # the loop it belonged to is gone: this one may close it

    asyncio.run(again())


def test_a_loop_in_another_thread_is_refused_while_the_stores_loop_runs(target: Target) -> None:
    """Before, on SQLite, the two loops' appends could wait for each other's writer lock for ever."""
    ready, done = threading.Event(), threading.Event()
    holder: list[AsyncEventStore] = []
    revisions: list[int] = []

    async def owner() -> None:
        async with await AsyncEventStore.open(target.url, **target.options) as store:
            holder.append(store)
            ready.set()
            await asyncio.to_thread(done.wait, 60)  # a failsafe, should the test fail first
            await store.append("flow-1", [NewEvent("Noted", {})], expected_revision=0)  # nothing was written
            revisions.extend(e.revision for e in await store.read_flow("flow-1"))

    thread = threading.Thread(target=asyncio.run, args=(owner(),))
    thread.start()
    try:
        assert ready.wait(60)
        with pytest.raises(InvalidInput, match=OTHER_LOOP):
            asyncio.run(holder[0].append("flow-1", [NewEvent("Noted", {})]))
        with pytest.raises(InvalidInput, match=OTHER_LOOP):
            asyncio.run(holder[0].close())
    finally:
        done.set()
        thread.join()
    assert revisions == [1]  # its own loop's calls carried on


def test_a_closed_store_is_closed_on_any_loop(target: Target) -> None:
    """docs/api.md: after close every call raises StoreClosed. Before, a call from another loop
    raised InvalidInput about loops, as if the store could still be used from its own."""

    async def closed() -> AsyncEventStore:
        async with await AsyncEventStore.open(target.url, **target.options) as store:
            await store.append("flow-1", [NewEvent("Noted", {})])
        return store

    store = asyncio.run(closed())
    for call in (store.append("flow-1", [NewEvent("Noted", {})]), store.read_flow("flow-1")):
        with pytest.raises(StoreClosed):
            asyncio.run(call)
    asyncio.run(store.close())  # still idempotent, from any loop once its own has closed


def test_a_closed_store_refuses_with_store_closed_while_its_loop_still_runs(target: Target) -> None:
    """Its own loop alive in another thread: a call from here is StoreClosed, and close a no-op."""
    ready, done = threading.Event(), threading.Event()
    holder: list[AsyncEventStore] = []

    async def owner() -> None:
        store = await AsyncEventStore.open(target.url, **target.options)
        await store.close()
        holder.append(store)
        ready.set()
        await asyncio.to_thread(done.wait, 60)  # a failsafe, should the test fail first

    thread = threading.Thread(target=asyncio.run, args=(owner(),))
    thread.start()
    try:
        assert ready.wait(60)
        with pytest.raises(StoreClosed):
            asyncio.run(holder[0].append("flow-1", [NewEvent("Noted", {})]))
        asyncio.run(holder[0].close())
    finally:
        done.set()
        thread.join(60)
