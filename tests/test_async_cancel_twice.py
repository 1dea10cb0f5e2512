"""Async calls cancelled twice, the second time while the first is cleaned up: nothing is left behind."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.util import await_only

from eventstore import NewEvent
from eventstore.aio import AsyncEventStore
from tests.conftest import Target


def cancel_twice_as_it_connects(engine: sa.Engine) -> list[bool]:
    """Cut the next new connection of ``engine`` as it is configured, then again while the pool closes it.

    The first cancellation lands in the ``connect`` event (which awaits on the
    async drivers); the pool then closes the half-opened connection, awaiting
    again, and the second one lands there, unless the caller has cleared the
    flag returned (the call ended without awaiting again).
    """
    calling = [True]

    def cut(dbapi_connection: Any, record: Any) -> None:
        sa.event.remove(engine, "connect", cut)
        task, loop = asyncio.current_task(), asyncio.get_running_loop()
        assert task is not None
        loop.call_soon(loop.call_soon, lambda: calling[0] and task.cancel())  # once the first is raised
        task.cancel()
        await_only(asyncio.sleep(0))

    sa.event.listen(engine, "connect", cut)
    return calling


CALLS: dict[str, Callable[[AsyncEventStore], Awaitable[Any]]] = {
    "append": lambda store: store.append("flow-1", [NewEvent("Started", {})]),
    "read": lambda store: store.read_flow("flow-1"),
}


@pytest.mark.parametrize("call", list(CALLS))
def test_a_call_cancelled_twice_as_its_connection_opens_leaves_no_task_behind(
    target: Target, call: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The second cancellation lands while the pool closes the connection the first cut into: it is
    closed to the end, no close is left waiting for ever ("Task was destroyed but it is pending!")."""

    async def main() -> None:
        async with (
            await AsyncEventStore.open(target.url, **target.options) as created,
            await AsyncEventStore.like(created) as store,  # no writer connection yet
        ):
            await store.run(store.store.engine.pool.dispose)  # the call opens a connection of its own
            calling = cancel_twice_as_it_connects(store.store.engine)
            with pytest.raises(asyncio.CancelledError):
                await CALLS[call](store)
            calling[0] = False
            await store.append("flow-1", [NewEvent("Started", {})], expected_revision=0)
            assert [e.revision for e in await store.read_flow("flow-1")] == [1]
            assert (await store.run(store.store.verify)).ok
            gc.collect()  # a task waiting for ever is only found when collected
            left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            assert left == []

    with caplog.at_level(logging.ERROR):
        asyncio.run(main(), debug=True)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
