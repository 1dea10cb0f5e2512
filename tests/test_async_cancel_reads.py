"""Cancelled async reads on SQLite: no open SELECT outlives them, in the pool or holding the WAL."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint
from sqlalchemy.util import await_only

from eventstore import EventStore, InvalidInput, NewEvent
from eventstore.aio import AsyncEventStore
from eventstore.integrations.langgraph import EventStoreSaver
from projections import FlowProjection, FlowQueries, FlowService
from tests.conftest import Target


async def cancel_read_at(
    store: AsyncEventStore, statement: str, read: Callable[[EventStore], Any], *, times: int
) -> BaseException:
    """Run ``read`` and cancel it ``times`` while SQLite runs its ``statement``; return what it raised."""
    return await cancel_at(store, statement, lambda: store.run(read, store.store), times=times)


async def cancel_at(
    store: AsyncEventStore, statement: str, start: Callable[[], Awaitable[Any]], *, times: int
) -> BaseException:
    """Await ``start()`` and cancel it ``times`` while SQLite runs ``statement`` on ``store``'s engine.

    Every read connection checked out is traced: SQLite calls the callback on
    aiosqlite's thread as the statement starts, so the read is awaiting it.
    The statement runs on once released, its rows never fetched.
    """
    loop = asyncio.get_running_loop()
    reached, release, armed = asyncio.Event(), threading.Event(), [True]

    def trace(sql: str) -> None:
        if armed[0] and sql.startswith(statement):
            armed[0] = False
            loop.call_soon_threadsafe(reached.set)
            release.wait(timeout=30)  # a failsafe, should the test fail before releasing it

    def traced(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        await_only(dbapi_connection.driver_connection.set_trace_callback(trace))

    await store.run(store.store.engine.pool.dispose)  # the read gets a connection of its own
    sa.event.listen(store.store.engine, "checkout", traced)
    task = asyncio.ensure_future(start())
    try:
        await asyncio.wait_for(reached.wait(), timeout=30)
        for _ in range(times):
            task.cancel()  # again while the first cancellation is being cleaned up
            await asyncio.sleep(0)
    finally:
        release.set()
        sa.event.remove(store.store.engine, "checkout", traced)
    with pytest.raises(asyncio.CancelledError) as raised:
        await task
    return raised.value  # kept, as a caller's log may: its traceback holds the driver's cursor


def newest_by_hand(store: EventStore) -> int:
    """A read of one's own on the driver connection (``EventStore.reading``)."""
    with store.reading() as conn:
        raw: Any = conn.connection.dbapi_connection
        return int(raw.execute("SELECT max(position) FROM flow_events").fetchall()[0][0])


READS = {
    "revision": ("SELECT flow_events.revision", lambda store: store.revision("flow-1")),
    "read-by-hand": ("SELECT max(position)", newest_by_hand),
}


@pytest.mark.parametrize("times", [1, 2], ids=["cancelled-once", "cancelled-twice"])
@pytest.mark.parametrize("read", list(READS))
def test_a_cancelled_read_leaves_no_snapshot_for_the_next_reader(
    tmp_path: Path, read: str, times: int
) -> None:
    path = tmp_path / "audit.db"

    async def main() -> None:
        async with await AsyncEventStore.open(f"sqlite:///{path}") as store:
            await store.append("flow-1", [NewEvent("Started", {})])
            kept = await cancel_read_at(store, *READS[read], times=times)
            with EventStore.open(f"sqlite:///{path}") as other:  # another process writes on
                other.append("flow-1", [NewEvent("Noted", {})])
            assert await store.run(newest_by_hand, store.store) == 2
            assert [e.revision for e in await store.read_flow("flow-1")] == [1, 2]
            if read == "revision":  # SQLAlchemy's statement: its cursor is closed, the WAL is free
                checkpointer = sqlite3.connect(path, isolation_level=None, timeout=0)
                assert checkpointer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
                checkpointer.close()
            del kept

    asyncio.run(main())


PAGES: dict[str, Callable[[FlowQueries], Any]] = {
    "flows": lambda queries: queries.flows(owner="s-1", limit=1),
    "step_history": lambda queries: queries.step_history("flow-1", limit=1),
    "sessions": lambda queries: queries.sessions(limit=1),
    "interrupted": lambda queries: queries.interrupted(limit=1),
}


@pytest.mark.parametrize(
    ("statement", "times"),
    [("SELECT count", 1), ("SELECT count", 2), ("ROLLBACK", 1)],
    ids=["in-the-total", "in-the-total-twice", "in-the-rollback"],
)
@pytest.mark.parametrize("page", list(PAGES))
def test_a_cancelled_page_query_ends_cancelled_and_the_next_one_reads_afresh(
    tmp_path: Path, page: str, statement: str, times: int
) -> None:
    path = tmp_path / "flows.db"

    def start(store: EventStore, flow_id: str) -> None:
        FlowService(store).start_flow(flow_id, controller_id="c", goal="g", owner_session_key="s-1")

    async def main() -> None:
        url = f"sqlite:///{path}"
        async with await AsyncEventStore.open(url, projections=[FlowProjection()], create=True) as store:
            await store.run(start, store.store, "flow-1")
            read = PAGES[page]
            await cancel_read_at(store, statement, lambda s: read(FlowQueries(s)), times=times)
            with EventStore.open(url, projections=[FlowProjection()]) as other:  # another process
                start(other, "flow-2")
            checkpointer = sqlite3.connect(path, isolation_level=None, timeout=0)
            assert checkpointer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
            checkpointer.close()
            assert (await store.run(FlowQueries(store.store).flows, owner="s-1")).total == 2

    asyncio.run(main())


SAVER_READS: dict[str, Callable[[EventStoreSaver, Any], Awaitable[Any]]] = {
    "aget_tuple": lambda saver, config: saver.aget_tuple(config),
    "alist": lambda saver, config: anext(saver.alist(config)),
}


@pytest.mark.parametrize(
    ("statement", "times"),
    [("SELECT c.thread_id", 1), ("SELECT c.thread_id", 2), ("ROLLBACK", 1)],
    ids=["in-the-select", "in-the-select-twice", "in-the-rollback"],
)
@pytest.mark.parametrize("read", list(SAVER_READS))
def test_a_cancelled_checkpoint_read_ends_cancelled_and_the_next_one_reads_afresh(
    tmp_path: Path, read: str, statement: str, times: int
) -> None:
    """The saver reads on the driver cursor: a cancel leaves its connection valid, and read_connection
    drops it (with or without the snapshot's own ROLLBACK: this holds on both)."""
    url = f"sqlite:///{tmp_path / 'graph.db'}"
    thread: Any = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}

    def checkpoint(n: int) -> Any:
        return generate_checkpoint(channel_values={"n": n}, channel_versions={"n": n})

    async def main() -> None:
        async with EventStoreSaver.from_url(url, async_driver=True) as saver:
            stored = await saver.aput(thread, checkpoint(1), {}, {"n": 1})
            loop_store = AsyncEventStore(saver._opened[asyncio.get_running_loop()].store)  # on aiosqlite
            await cancel_at(loop_store, statement, lambda: SAVER_READS[read](saver, stored), times=times)
            with EventStoreSaver.from_url(url) as other:  # another process
                newest = other.put(thread, checkpoint(2), {}, {"n": 2})
            checkpointer = sqlite3.connect(tmp_path / "graph.db", isolation_level=None, timeout=0)
            assert checkpointer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
            checkpointer.close()
            latest = await saver.aget_tuple(thread)
            assert latest is not None and latest.config == newest

    asyncio.run(main())


def _fails_mid_read(store: EventStore) -> None:
    with store.reading() as conn:
        conn.execute(sa.text("SELECT 1")).all()
        raise InvalidInput("the read's own error")


RETURNED_READS: dict[str, Callable[[AsyncEventStore], Awaitable[Any]]] = {
    "read_flow": lambda store: store.read_flow("flow-1"),  # the driver's cursor: no SQLAlchemy transaction
    "failing-read": lambda store: store.run(_fails_mid_read, store.store),
}


@pytest.mark.parametrize("read", list(RETURNED_READS))
def test_a_read_cancelled_as_its_connection_goes_back_to_the_pool_ends_cancelled_and_logs_no_error(
    target: Target, read: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The cancellation lands in the pool's rollback-on-return, after the read succeeded or failed with
    an ordinary error: it ends with CancelledError, no "Exception during reset" traceback is logged."""

    async def main() -> None:
        async with await AsyncEventStore.open(target.url, **target.options) as store:
            await store.append("flow-1", [NewEvent("Started", {})])
            cancelled: list[asyncio.Task[Any]] = []

            def cancel_the_reader(*_: Any) -> None:
                if len(cancelled) == 1:
                    cancelled.append(cancelled[0])
                    cancelled[0].cancel()

            sa.event.listen(store.store.engine.pool, "reset", cancel_the_reader)
            task = asyncio.ensure_future(RETURNED_READS[read](store))
            cancelled.append(task)
            with pytest.raises(asyncio.CancelledError):
                await task
            sa.event.remove(store.store.engine.pool, "reset", cancel_the_reader)
            assert len(cancelled) == 2  # the cancellation did come in the reset
            assert [e.revision for e in await store.read_flow("flow-1")] == [1]

    with caplog.at_level(logging.ERROR, logger="sqlalchemy.pool"):
        asyncio.run(main())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
