"""The store on asyncio: waiting inside store code never stalls the event loop."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.util import await_only
from sqlalchemy.util.concurrency import in_greenlet

from eventstore import EventStore, InvalidInput, NewEvent, RecordedEvent, Transaction
from eventstore.aio import AsyncEventStore, pause, run
from eventstore.errors import StorageError
from eventstore.schema import projection_checkpoints as checkpoints
from projections import FlowProjection, FlowQueries, FlowService, Projection
from projections.checkpoints import claim, read_checkpoint, rebuild_lock
from tests.conftest import Target
from tests.readmodels import assert_matches_rebuild

T = TypeVar("T")


class FlowProjectionV2(FlowProjection):
    """The flow read models after a change to their fold: the version says they need a rebuild."""

    version: ClassVar[int] = FlowProjection.version + 1


class Revisions(Projection):
    """Each flow's revision, an inline read model written through SQLAlchemy (not the driver)."""

    name = "test_flow_revisions"
    kind = "inline"

    def define_tables(self, metadata: sa.MetaData) -> None:
        sa.Table(
            "test_flow_revisions",
            metadata,
            sa.Column("flow_id", sa.String, primary_key=True),
            sa.Column("revision", sa.Integer, nullable=False),
        )

    def apply(self, tx: Transaction, events: Sequence[RecordedEvent]) -> None:
        table = self.table("test_flow_revisions")
        for event in events:
            tx.connection.execute(table.delete().where(table.c.flow_id == event.flow_id))
            tx.connection.execute(table.insert().values(flow_id=event.flow_id, revision=event.revision))

    def read(self, store: EventStore) -> dict[str, int]:
        table = self.table("test_flow_revisions")
        with store.engine.connect() as conn:
            return dict(conn.execute(sa.select(table.c.flow_id, table.c.revision)).all())


class Dangling(Projection):
    """A read model whose row for a ``Dangling`` event breaks a deferred foreign key: the COMMIT fails.

    It writes on the driver connection, as the flow read models do, so the
    store commits there (not through SQLAlchemy, which would drop the
    connection itself on a cancellation).
    """

    name = "test_dangling"
    kind = "inline"

    def define_tables(self, metadata: sa.MetaData) -> None:
        sa.Table("test_dangling_parents", metadata, sa.Column("id", sa.Integer, primary_key=True))
        sa.Table(
            "test_dangling",
            metadata,
            sa.Column("position", sa.Integer, primary_key=True),
            sa.Column(
                "parent",
                sa.Integer,
                sa.ForeignKey("test_dangling_parents.id", deferrable=True, initially="DEFERRED"),
            ),
        )

    def on_Dangling(self, tx: Transaction, event: RecordedEvent) -> None:
        insert = f"INSERT INTO {self.table('test_dangling').name} VALUES (?, ?)"
        tx.connection.connection.dbapi_connection.execute(insert, (event.position, -1))


class CommitHold:
    """Holds the next COMMIT on a store's writer inside SQLite, on aiosqlite's thread, until released.

    SQLite calls a connection's trace callback on the thread running the
    statement, as it starts: the COMMIT is then in flight, and the task that
    issued it is awaiting its result, so it can be cancelled right there.
    """

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.committing = asyncio.Event()
        self.release = threading.Event()
        self.armed = False

    def install(self, store: EventStore) -> None:
        """Under ``run``: trace the store's writer connection, which stays open between appends."""
        with store.transaction() as tx:
            await_only(tx.connection.connection.driver_connection.set_trace_callback(self._trace))

    def _trace(self, statement: str) -> None:
        if self.armed and statement == "COMMIT":
            self.armed = False
            self.loop.call_soon_threadsafe(self.committing.set)
            self.release.wait(timeout=60)  # a failsafe, should the test fail before releasing it


async def cancel_mid_commit(store: AsyncEventStore, write: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Run ``write`` (one write transaction) and cancel it while SQLite runs its COMMIT."""
    hold = CommitHold()
    await store.run(hold.install, store.store)
    hold.armed = True
    writing = asyncio.ensure_future(write)
    try:
        await asyncio.wait_for(hold.committing.wait(), timeout=30)
        writing.cancel()
    finally:
        hold.release.set()  # the COMMIT goes on in SQLite; the task no longer waits for it
    return writing


def test_pause_inside_run_lets_other_tasks_run() -> None:
    async def main() -> list[bool]:
        other_ran = asyncio.Event()
        seen: list[bool] = []

        async def other() -> None:
            other_ran.set()

        def waits() -> None:  # synchronous store code, as run() runs it
            pause(0.001)
            seen.append(other_ran.is_set())

        task = asyncio.ensure_future(other())  # scheduled, and can only run if the loop does
        await run(waits)
        await task
        return seen

    assert asyncio.run(main()) == [True]


def test_an_async_open_waiting_for_another_rebuild_keeps_the_loop_running(target: Target) -> None:
    store = target.open(create=True, projections=[FlowProjection()])
    FlowService(store).start_flow("flow-1", controller_id="c", goal="g", owner_session_key="s-1")
    assert claim(store, FlowProjectionV2(), "another-process")  # its rebuild holds the claim

    async def main() -> AsyncEventStore:
        opening = asyncio.ensure_future(
            AsyncEventStore.open(target.url, **target.options, projections=[FlowProjectionV2()])
        )

        async def tick() -> None:
            for _ in range(2_000):  # a blocked loop would get through a few ticks per poll only
                await asyncio.sleep(0)
                assert not opening.done(), opening.exception() if opening.done() else None

        await asyncio.wait_for(tick(), timeout=30)

        def release() -> None:  # the other process's rebuild ends
            with store.transaction() as tx:
                tx.connection.execute(
                    checkpoints.delete().where(checkpoints.c.name == rebuild_lock(FlowProjectionV2()))
                )

        # On a thread of its own: the opening store may hold SQLite's write lock just now (trying
        # the claim), and it can only let go if the loop runs.
        await asyncio.to_thread(release)
        return await asyncio.wait_for(opening, timeout=60)

    opened = asyncio.run(main())
    try:
        with store.reading() as conn:
            current = read_checkpoint(conn, FlowProjection.name)
        assert current is not None and current.version == FlowProjectionV2.version  # it rebuilt, then opened
    finally:
        asyncio.run(opened.close())
        store.close()


def test_an_async_sqlite_store_without_aiosqlite_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "aiosqlite", None)  # import fails, as without the asyncio extra

    async def main() -> None:
        await AsyncEventStore.open(f"sqlite:///{tmp_path / 'audit.db'}", create=True)

    with pytest.raises(StorageError, match=r"needs aiosqlite: pip install 'agent-eventstore\[asyncio\]'"):
        asyncio.run(main())


@pytest.mark.parametrize("projections", [[], [Revisions()]], ids=["log-only", "read-model-via-sqlalchemy"])
def test_an_append_cancelled_mid_commit_lands_whole_or_not_at_all_and_the_store_writes_on(
    tmp_path: Path, projections: list[Projection]
) -> None:
    steps = [NewEvent("Noted", {"n": n}) for n in range(3)]

    async def main() -> None:
        url = f"sqlite:///{tmp_path / 'audit.db'}"
        async with await AsyncEventStore.open(url, projections=projections) as store:
            await store.append("flow-1", [NewEvent("Started", {})])
            with pytest.raises(asyncio.CancelledError):
                await (await cancel_mid_commit(store, store.append("flow-1", steps)))
            revisions = [e.revision for e in await store.read_flow("flow-1")]
            assert revisions in ([1], [1, 2, 3, 4])  # all of the cancelled append, or none of it
            for projection in projections:
                assert await store.run(projection.read, store.store) == {"flow-1": len(revisions)}
            assert (await store.append("flow-1", steps)).revision == 4  # a retry: written, or found
            await store.append("flow-1", [NewEvent("Noted", {})], expected_revision=4)
            assert [e.position for e in await store.read_flow("flow-1")] == [1, 2, 3, 4, 5]
            report = await store.run(store.store.verify)
            assert (report.ok, report.events_checked) == (True, 5), report.problems
            for projection in projections:
                assert await store.run(projection.read, store.store) == {"flow-1": 5}

    asyncio.run(main())


def test_flow_read_models_agree_with_the_log_after_a_command_cancelled_mid_commit(tmp_path: Path) -> None:
    async def main() -> None:
        url = f"sqlite:///{tmp_path / 'audit.db'}"
        async with await AsyncEventStore.open(url, projections=[FlowProjection()]) as store:
            service = FlowService(store.store)
            await store.run(service.start_flow, "flow-1", controller_id="c", goal="g", owner_session_key="s")
            advancing = store.run(service.advance, "flow-1", current_step="one")
            with pytest.raises(asyncio.CancelledError):
                await (await cancel_mid_commit(store, advancing))
            revision = len(await store.read_flow("flow-1"))
            assert revision in (1, 2)
            await store.run(assert_matches_rebuild, store.store)
            advancing = store.run(service.advance, "flow-1", current_step="two", expected_revision=revision)
            assert (await advancing).revision == revision + 1
            assert (await store.run(store.store.verify)).ok
            await store.run(assert_matches_rebuild, store.store)

    asyncio.run(main())


def test_an_append_cancelled_mid_commit_that_then_fails_leaves_nothing_and_frees_the_write_lock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.db"

    async def main() -> None:
        async with await AsyncEventStore.open(f"sqlite:///{path}", projections=[Dangling()]) as store:
            await store.append("flow-1", [NewEvent("Started", {})])
            failing = store.append("flow-1", [NewEvent("Noted", {}), NewEvent("Dangling", {})])
            with pytest.raises(asyncio.CancelledError):
                await (await cancel_mid_commit(store, failing))
            assert [e.revision for e in await store.read_flow("flow-1")] == [1]  # rolled back
            other = sqlite3.connect(path, isolation_level=None, timeout=0)  # another process
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            other.close()
            await store.append("flow-1", [NewEvent("Noted", {})], expected_revision=1)
            assert [e.position for e in await store.read_flow("flow-1")] == [1, 2]
            report = await store.run(store.store.verify)
            assert (report.ok, report.events_checked) == (True, 2), report.problems

    asyncio.run(main())


def test_flow_commands_and_queries_run_on_the_async_driver(target: Target) -> None:
    """FlowService and FlowQueries on an ``AsyncEventStore``: the read models' own SQL runs on the
    async drivers (aiosqlite, psycopg async) too, and agrees with a rebuild."""

    def drive(store: EventStore) -> tuple[str, list[str]]:
        service = FlowService(store)
        service.start_flow("f", controller_id="c", goal="g", owner_session_key="s")
        for n in range(3):
            service.schedule_step("f", step_id=f"s{n}", name="work", run_id=f"run-{n}")
            service.start_step("f", f"s{n}")
        service.open_gate("f", "s0", prompt="go?", options=[{"value": "yes", "label": "Yes"}])
        service.approve_gate("f", "s0", by="human:ann", selections=["yes"])
        for n in range(3):
            service.complete_step("f", f"s{n}", result={"n": n})
        service.finish("f", result={"ok": True})
        queries = FlowQueries(store)
        flow = queries.flow("f")
        return flow.status, [step.status for step in queries.steps("f")]

    async def main() -> tuple[str, list[str]]:
        async with await AsyncEventStore.open(
            target.url, **{"create": True, **target.options}, projections=[FlowProjection()]
        ) as store:
            found = await store.run(drive, store.store)
            await store.run(assert_matches_rebuild, store.store)
            return found

    assert asyncio.run(main()) == ("finished", ["completed"] * 3)


def test_run_refuses_an_iterator_that_would_read_after_it_returned(target: Target) -> None:
    cleaned_up_inside_run: list[bool] = []

    def positions(store: EventStore) -> Iterator[int]:
        try:
            with store.reading() as conn:
                yield from conn.exec_driver_sql("SELECT position FROM flow_events").scalars()
        finally:
            cleaned_up_inside_run.append(in_greenlet())

    def started(store: EventStore) -> Iterator[int]:
        rows = positions(store)
        next(rows)  # it holds a connection now: closed unread, inside run, it lets it go
        return rows

    async def main() -> None:
        async with await AsyncEventStore.open(target.url, **{"create": True, **target.options}) as store:
            await store.append("flow-1", [NewEvent("A", {}), NewEvent("B", {})])
            held = store.store.engine.pool.checkedout()  # (SQLite's writer stays checked out)
            for call in (store.store.read_all, lambda: started(store.store)):
                with pytest.raises(InvalidInput, match=r"returned an iterator.*consume it inside, as in run"):
                    await store.run(call)
            assert store.store.engine.pool.checkedout() == held and cleaned_up_inside_run == [True]
            assert [e.revision for e in await store.run(lambda: list(store.store.read_all()))] == [1, 2]

    asyncio.run(main())


class TestOpeningBadInput:
    def test_like_takes_an_async_store_too_and_refuses_anything_else(self, target: Target) -> None:
        async def main() -> None:
            async with await AsyncEventStore.open(target.url, **target.options) as first:
                await first.append("flow-1", [NewEvent("Started", {})])
                async with await AsyncEventStore.like(first) as second:
                    assert [e.revision for e in await second.read_flow("flow-1")] == [1]
                with pytest.raises(InvalidInput, match="needs an EventStore or AsyncEventStore, not str"):
                    await AsyncEventStore.like(target.url)

        asyncio.run(main())

    def test_open_refuses_a_sync_driver_and_takes_asynchronous_true(self, target: Target) -> None:
        async def main() -> None:
            with pytest.raises(InvalidInput, match="asynchronous must be True or left out"):
                await AsyncEventStore.open(target.url, **target.options, asynchronous=False)
            async with await AsyncEventStore.open(target.url, **target.options, asynchronous=True) as store:
                assert (await store.append("flow-1", [NewEvent("Started", {})])).revision == 1

        asyncio.run(main())


class TestNestedWrites:
    def test_a_write_inside_a_tasks_transaction_is_refused_while_other_tasks_write(
        self, target: Target
    ) -> None:
        async def main() -> None:
            async with await AsyncEventStore.open(target.url, **target.options) as store:

                def nested() -> None:
                    with store.store.transaction() as tx:
                        tx.append("f", [NewEvent("A", {})])
                        with pytest.raises(InvalidInput, match="already inside a write transaction"):
                            store.store.append("g", [NewEvent("A", {})])

                def alone(flow_id: str) -> None:
                    with store.store.transaction() as tx:
                        tx.append(flow_id, [NewEvent("A", {})])

                await asyncio.gather(store.run(nested), *(store.run(alone, f"t{n}") for n in range(3)))
                assert await store.run(store.store.last_position) == 4

        asyncio.run(main())


class TestCallsOutsideRun:
    """The async store's methods run under ``run``: called directly, they are refused before any I/O."""

    def test_a_direct_call_on_the_loop_is_refused_and_writes_nothing(self, target: Target) -> None:
        async def main() -> None:
            async with await AsyncEventStore.open(target.url, **{"create": True, **target.options}) as store:
                await store.append("flow-1", [NewEvent("A", {})])
                for call in (
                    lambda: store.store.append("flow-1", [NewEvent("B", {})]),
                    lambda: list(store.store.read_flow("flow-1")),
                    store.store.last_position,
                ):
                    with pytest.raises(InvalidInput, match=r"async driver: call it through .*run"):
                        call()
                assert await store.run(store.store.last_position) == 1

        asyncio.run(main())

    def test_a_direct_call_off_the_loop_is_refused_and_writes_nothing(self, target: Target) -> None:
        loop = asyncio.new_event_loop()
        try:
            opening = AsyncEventStore.open(target.url, **{"create": True, **target.options})
            store = loop.run_until_complete(opening)
            with pytest.raises(InvalidInput, match=r"async driver: call it through .*run"):
                store.store.append("flow-1", [NewEvent("A", {})])
            assert loop.run_until_complete(store.run(store.store.last_position)) == 0
            loop.run_until_complete(store.close())
        finally:
            loop.close()

    def test_run_takes_synchronous_callables_only(self, target: Target) -> None:
        async def coroutine_function() -> int:
            return 1

        async def main() -> None:
            async with await AsyncEventStore.open(target.url, **{"create": True, **target.options}) as store:
                with pytest.raises(InvalidInput, match="run needs a function to call, not 5"):
                    await store.run(5)  # type: ignore[arg-type]  # the wrong type is the test
                with pytest.raises(InvalidInput, match="returned a coroutine: await it yourself"):
                    await store.run(coroutine_function)

        asyncio.run(main())
