"""EventStoreSaver's async methods: on the async driver they run on the event loop itself."""

from __future__ import annotations

import asyncio
import gc
import logging
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint

from eventstore import ConnectionLost, RecordedEvent, StoreClosed
from eventstore.aio import AsyncEventStore
from eventstore.events import NewEvent
from eventstore.integrations.langgraph import EventStoreSaver, flow_id_for
from projections import Projection
from projections.langgraph import LangGraphProjection
from projections.langgraph_queries import LangGraphQueries
from tests.conftest import Target


class Threads(Projection):
    """Records which thread folded each checkpoint."""

    name = "test_fold_threads"
    kind = "inline"
    seen: list[int]

    def define_tables(self, metadata: sa.MetaData) -> None:
        sa.Table("test_fold_threads", metadata, sa.Column("position", sa.BigInteger, primary_key=True))

    def on_CheckpointSaved(self, tx: Any, event: RecordedEvent) -> None:
        self.seen.append(threading.get_ident())


def config(thread: str, parent: Any = None) -> Any:
    conf = {"thread_id": thread, "checkpoint_ns": ""}
    if parent is not None:
        conf["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
    return {"configurable": conf}


async def save(saver: EventStoreSaver, thread: str, count: int) -> Any:
    parent = None
    for n in range(count):
        checkpoint = generate_checkpoint(channel_values={"n": n}, channel_versions={"n": n + 1})
        parent = await saver.aput(config(thread, parent), checkpoint, {"step": n}, {"n": n + 1})
    return parent


@pytest.mark.parametrize("async_driver", [True, False], ids=["async-driver", "worker-thread"])
def test_folds_run_on_the_loop_thread_only_on_the_async_driver(target: Target, async_driver: bool) -> None:
    recorder = Threads()
    recorder.seen = []
    store = target.open(create=True, projections=[LangGraphProjection(), recorder])
    saver = EventStoreSaver(store, async_driver=async_driver)

    async def main() -> int:
        await save(saver, "t", 3)
        await saver.aclose()
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert len(recorder.seen) == 3
    assert (set(recorder.seen) == {loop_thread}) is async_driver
    store.close()


def hold_appends(target: Target) -> Callable[[], None]:
    """Another connection takes what every put waits for: SQLite's write lock, or PostgreSQL's
    positions row. The call returned lets it go."""
    if target.dialect == "sqlite":
        holder: Any = sqlite3.connect(target.url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
    else:
        import psycopg

        holder = psycopg.connect(
            target.url.replace("+psycopg", ""), options=f"-c search_path={target.options['schema']}"
        )
        holder.execute("SELECT last_position FROM event_positions WHERE id = 1 FOR UPDATE")

    def release() -> None:
        holder.rollback()
        holder.close()

    return release


@pytest.mark.parametrize("async_driver", [True, False], ids=["async-driver", "worker-thread"])
def test_the_loop_keeps_running_while_a_put_waits_for_a_lock(target: Target, async_driver: bool) -> None:
    """A put waiting for another connection's lock waits off the loop: other tasks run meanwhile."""
    with EventStoreSaver.from_url(target.url, async_driver=async_driver, **target.options) as saver:

        async def main() -> Any:
            parent = await save(saver, "t", 1)  # the loop's connections are open, the head cached
            release = hold_appends(target)
            try:
                checkpoint = generate_checkpoint(channel_values={"n": 1}, channel_versions={"n": 2})
                putting = asyncio.ensure_future(saver.aput(config("t", parent), checkpoint, {}, {"n": 2}))

                async def tick() -> None:
                    for _ in range(2_000):  # a put blocking the loop would let these run only once it failed
                        await asyncio.sleep(0)
                        assert not putting.done(), putting.exception() if putting.done() else None

                await asyncio.wait_for(tick(), timeout=30)
            finally:
                release()
            return await saver.aget_tuple(await asyncio.wait_for(putting, timeout=60))

        stored = asyncio.run(main())
        assert stored is not None and stored.checkpoint["channel_values"] == {"n": 1}


def test_a_saver_moves_to_a_new_loop(target: Target) -> None:
    """Each asyncio.run has its own loop: the saver reopens its async connections in the new one."""
    with EventStoreSaver.from_url(target.url, async_driver=True, **target.options) as saver:
        first = asyncio.run(save(saver, "t", 2))
        second = asyncio.run(save(saver, "u", 2))
        assert asyncio.run(saver.aget_tuple(first)) is not None
        latest = saver.get_tuple(second)
        assert latest is not None and latest.checkpoint["channel_values"] == {"n": 1}
    assert saver._views == {}


def test_two_loops_in_two_threads_share_a_saver(target: Target) -> None:
    """Two threads, each with its own running loop, put and read through one saver at once: each
    loop gets connections of its own, and neither closes the other's under it."""
    both = threading.Barrier(2)

    async def work(saver: EventStoreSaver, thread: str) -> list[Any]:
        await save(saver, thread, 1)
        await asyncio.to_thread(both.wait, 10)  # both loops hold connections now
        found = []
        for _ in range(3):
            latest = await save(saver, thread, 5)
            await asyncio.to_thread(both.wait, 10)  # and take turns with the other loop's calls
            found.append(await saver.aget_tuple(latest))
        return found

    with EventStoreSaver.from_url(target.url, async_driver=True, **target.options) as saver:
        results: dict[str, Any] = {}

        def run(thread: str) -> None:
            try:
                results[thread] = asyncio.run(work(saver, thread))
            except BaseException as exc:  # reported below, with the other thread's outcome
                results[thread] = exc
                both.abort()

        threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)  # a hang is a failure too
        for name in ("a", "b"):
            found = results[name]
            assert isinstance(found, list), found
            assert [t.checkpoint["channel_values"] for t in found] == [{"n": 4}] * 3
            assert len(list(saver.store.read_flow(flow_id_for(name)))) == 16
    assert saver._views == {}


def test_a_closed_saver_refuses_async_calls(target: Target) -> None:
    """After close, an async call says the saver is closed, rather than open connections no one
    will close."""
    saver = EventStoreSaver.from_url(target.url, async_driver=True, **target.options)
    stored = asyncio.run(save(saver, "t", 1))
    saver.close()
    with pytest.raises(StoreClosed, match="this saver is closed"):
        asyncio.run(saver.aget_tuple(stored))
    assert saver._views == {}


def test_close_while_a_loop_opens_its_connections_leaks_none(pg_target: Target) -> None:
    """A loop still opening its connections when the saver is closed closes them itself, and its
    call says the saver is closed: nothing is left connected."""
    import psycopg

    url, schema = pg_target.url.replace("+psycopg", ""), pg_target.options["schema"]
    saver = EventStoreSaver.from_url(pg_target.url, async_driver=True, **pg_target.options)
    stored = asyncio.run(save(saver, "t", 1))
    asyncio.run(saver.aclose())  # the next loop opens afresh
    saver = EventStoreSaver.from_url(pg_target.url, async_driver=True, **pg_target.options)
    outcome: list[BaseException | None] = []

    def call() -> None:
        try:
            asyncio.run(saver.aget_tuple(stored))
            outcome.append(None)
        except BaseException as exc:  # reported below
            outcome.append(exc)

    others = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> ALL(%s)"
    with psycopg.connect(url, autocommit=True) as watch, psycopg.connect(url) as holder:
        holder.execute(f"LOCK TABLE {schema}.alembic_version IN ACCESS EXCLUSIVE MODE")
        caller = threading.Thread(target=call)
        caller.start()
        deadline = time.monotonic() + 10
        while not watch.execute(
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone():
            assert time.monotonic() < deadline, "the loop never started opening"
        saver.close()
        holder.rollback()  # the opening goes on, after the close
        caller.join(timeout=30)
        assert isinstance(outcome[0], StoreClosed), outcome
        mine = [watch.info.backend_pid, holder.info.backend_pid]
        assert watch.execute(others, [mine]).fetchone() == (0,)


def test_async_store_appends_and_reads_on_both_drivers(target: Target) -> None:
    async def main() -> tuple[list[int], bool]:
        async with await AsyncEventStore.open(target.url, **{"create": True, **target.options}) as store:
            await asyncio.gather(
                *(
                    store.append(f"f{n}", [NewEvent("Noted", {"n": n}), NewEvent("Noted", {})])
                    for n in range(6)
                )
            )
            read = await store.read_flow("f3")
            report = await store.run(store.store.verify)
            return [e.revision for e in read], report.ok

    revisions, ok = asyncio.run(main())
    assert revisions == [1, 2] and ok


def test_async_writes_to_one_thread_take_turns(target: Target) -> None:
    """Twenty concurrent aput_writes on one thread's flow, on the async driver: none lost."""
    with EventStoreSaver.from_url(target.url, async_driver=True, **target.options) as saver:

        async def main() -> Any:
            parent = await save(saver, "t", 1)
            await asyncio.gather(
                *(saver.aput_writes(parent, [("result", n)], f"task-{n:02}") for n in range(20))
            )
            return await saver.aget_tuple(parent)

        stored = asyncio.run(main())
        assert sorted(w[2] for w in stored.pending_writes) == list(range(20))
        assert len(list(saver.store.read_flow(flow_id_for("t")))) == 21


def test_a_write_cancelled_while_waiting_for_sqlites_lock_leaves_the_writer_usable(tmp_path: Any) -> None:
    """Another process holds the write lock; a caller's timeout cancels the append waiting for it.
    Once the lock is free, the store writes again, and so can other processes."""
    path = tmp_path / "cancel.db"

    async def main() -> list[int]:
        async with await AsyncEventStore.open(f"sqlite:///{path}") as store:
            await store.append("f", [NewEvent("Noted", {})])
            holder = sqlite3.connect(path, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(store.append("f", [NewEvent("Noted", {})]), 0.2)
            holder.execute("ROLLBACK")
            holder.close()
            await store.append("f", [NewEvent("Noted", {})])
            other = sqlite3.connect(path, isolation_level=None, timeout=5)
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            other.close()
            return [e.revision for e in await store.read_flow("f")]

    assert asyncio.run(main()) == [1, 2]


def test_cancelling_one_caller_while_the_connections_open_spares_the_others(target: Target) -> None:
    with EventStoreSaver.from_url(target.url, async_driver=True, **target.options) as saver:

        async def main() -> Any:
            first = asyncio.create_task(save(saver, "a", 1))
            second = asyncio.create_task(save(saver, "b", 1))
            await asyncio.sleep(0)  # both are waiting for the loop's connections to open
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            return await second

        latest = asyncio.run(main())
        assert saver.get_tuple(latest) is not None


def test_aclose_waits_for_the_loops_calls_under_way_and_leaks_no_connection(target: Target) -> None:
    """Readers on the loop are mid-call when it closes the saver: their calls end first, on their
    connections, which are closed rather than left to the garbage collector (a ResourceWarning)."""
    saver = EventStoreSaver.from_url(target.url, async_driver=True, **target.options)

    async def main() -> list[BaseException]:
        stored = await save(saver, "t", 1)

        async def reader() -> BaseException:
            try:
                while True:
                    await saver.aget_tuple(stored)
            except Exception as exc:  # the outcome under test
                return exc

        readers = [asyncio.create_task(reader()) for _ in range(3)]
        await asyncio.sleep(0)  # each reader is now in a call, waiting on its connection
        await saver.aclose()
        return await asyncio.gather(*readers)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        ended = asyncio.run(main())
        gc.collect()
    assert all(isinstance(exc, StoreClosed) for exc in ended), ended
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


@pytest.mark.parametrize("async_driver", [True, False], ids=["async-driver", "worker-thread"])
def test_a_read_whose_sqlite_connection_died_reports_it_lost_and_the_next_read_works(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, async_driver: bool
) -> None:
    """Not a "cannot rollback" StorageError from a ROLLBACK on a connection made afresh behind its back."""
    read_checkpoint = LangGraphQueries.checkpoint

    def on_a_dead_connection(queries: LangGraphQueries, conn: sa.Connection, *args: Any) -> Any:
        raw: Any = conn.connection.dbapi_connection
        raw.close()
        return read_checkpoint(queries, conn, *args)

    url = f"sqlite:///{tmp_path / 'dead.db'}"

    async def main() -> None:
        async with EventStoreSaver.from_url(url, async_driver=async_driver) as saver:
            stored = await save(saver, "t", 1)
            with monkeypatch.context() as patched:
                patched.setattr(LangGraphQueries, "checkpoint", on_a_dead_connection)
                with pytest.raises(ConnectionLost, match="connection was lost"):
                    await saver.aget_tuple(stored)
            assert await saver.aget_tuple(stored) is not None

    asyncio.run(main())


def test_a_read_cancelled_as_its_connection_goes_back_to_the_pool_logs_no_error(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The cancellation lands in the pool's rollback-on-return (aiosqlite): the read is cancelled,
    without SQLAlchemy's "Exception during reset" traceback in the log, and the next read works."""

    async def main() -> None:
        async with EventStoreSaver.from_url(f"sqlite:///{tmp_path / 'r.db'}", async_driver=True) as saver:
            stored = await save(saver, "t", 1)
            pool = (await saver._on_loop()).store.engine.pool
            caller = asyncio.current_task()
            assert caller is not None

            cancelled: list[bool] = []

            def cancel_the_caller(*_: Any) -> None:
                if not cancelled:
                    cancelled.append(caller.cancel())

            sa.event.listen(pool, "reset", cancel_the_caller)
            with pytest.raises(asyncio.CancelledError):
                await saver.aget_tuple(stored)
            sa.event.remove(pool, "reset", cancel_the_caller)
            caller.uncancel()
            assert await saver.aget_tuple(stored) is not None

    with caplog.at_level(logging.ERROR, logger="sqlalchemy.pool"):
        asyncio.run(main())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_setup_can_be_awaited_as_the_async_savers_is(target: Target) -> None:
    # AsyncSqliteSaver's and AsyncPostgresSaver's setup is a coroutine: code switched to
    # EventStoreSaver as docs/langgraph.md says keeps its `await saver.setup()`.
    async def main() -> bool:
        async with EventStoreSaver.from_url(target.url, **target.options) as saver:
            await saver.setup()
            await save(saver, "t", 1)
            return await saver.aget_tuple(config("t")) is not None

    assert asyncio.run(main())
