"""The backends at their edges: cancelled async appends, timeouts past the database's limit, odd schemas."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.util import await_only

from eventstore import EventStore, InvalidEvent, InvalidInput, NewEvent
from eventstore.aio import AsyncEventStore
from tests.conftest import Target, _admin_connect

LIMIT_SECONDS = (2**31 - 1) / 1000  # the largest timeout either database keeps: 2**31-1 ms


async def cancel_at(
    store: AsyncEventStore, statement: str, write: Coroutine[Any, Any, Any]
) -> asyncio.Task[Any]:
    """Run ``write`` and cancel it while SQLite runs the writer's next ``statement`` on aiosqlite's thread.

    SQLite calls the trace callback as the statement starts: the task is then
    awaiting it, and is cancelled before it can fetch the statement's rows.
    """
    loop = asyncio.get_running_loop()
    reached, release, armed = asyncio.Event(), threading.Event(), [True]

    def trace(sql: str) -> None:
        if armed[0] and sql.startswith(statement):
            armed[0] = False
            loop.call_soon_threadsafe(reached.set)
            release.wait(timeout=30)  # a failsafe, should the test fail before releasing it

    def install(sync: EventStore) -> None:
        with sync.transaction() as tx:  # the writer connection, kept open between appends
            await_only(tx.connection.connection.driver_connection.set_trace_callback(trace))

    await store.run(install, store.store)
    task = asyncio.ensure_future(write)
    try:
        await asyncio.wait_for(reached.wait(), timeout=30)
        task.cancel()
    finally:
        release.set()
    return task


class TestCancelledAsyncAppend:
    @pytest.mark.parametrize("statement", ["SELECT h.revision", "UPDATE event_positions", "INSERT INTO"])
    def test_on_sqlite_mid_statement_it_writes_nothing_and_the_store_appends_on(
        self, tmp_path: Path, statement: str
    ) -> None:
        path = tmp_path / "audit.db"

        async def main() -> None:
            async with await AsyncEventStore.open(f"sqlite:///{path}") as store:
                await store.append("flow-1", [NewEvent("Started", {})])
                task = await cancel_at(store, statement, store.append("flow-1", [NewEvent("Noted", {})]))
                with pytest.raises(asyncio.CancelledError):  # kept: its traceback holds the cursor
                    await task
                assert [e.revision for e in await store.read_flow("flow-1")] == [1]
                other = sqlite3.connect(path, isolation_level=None, timeout=0)  # another process
                other.execute("BEGIN IMMEDIATE")  # the write lock is free
                other.execute("ROLLBACK")
                other.close()
                await store.append("flow-1", [NewEvent("Noted", {})], expected_revision=1)
                report = await store.run(store.store.verify)
                assert (report.ok, report.events_checked) == (True, 2), report.problems

        asyncio.run(main())

    def test_on_postgresql_cancelled_again_mid_cancel_it_stays_cancelled_and_the_store_appends_on(
        self, pg_target: Target
    ) -> None:
        schema = pg_target.options["schema"]

        async def main() -> None:
            async with await AsyncEventStore.open(pg_target.url, **pg_target.options) as store:
                await store.append("flow-1", [NewEvent("Started", {})])
                with _admin_connect(pg_target.url) as watcher, _admin_connect(pg_target.url) as blocker:
                    blocker.execute("BEGIN")
                    blocker.execute(f"SELECT 1 FROM {schema}.event_positions FOR UPDATE")
                    task = asyncio.ensure_future(store.append("flow-2", [NewEvent("Started", {})]))
                    waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    while watcher.execute(waiting).fetchone() != (1,):
                        await asyncio.sleep(0.01)
                    task.cancel()
                    await asyncio.sleep(0)  # psycopg now cancels the query on the server...
                    task.cancel()  # ...and is interrupted: it closes the connection
                    blocker.execute("ROLLBACK")
                    with pytest.raises(asyncio.CancelledError):  # not retried, never a ConnectionLost
                        await task
                assert await store.read_flow("flow-2") == []
                await store.append("flow-1", [NewEvent("Noted", {})], expected_revision=1)
                report = await store.run(store.store.verify)
                assert (report.ok, report.events_checked) == (True, 2), report.problems

        asyncio.run(main())


class TestTimeoutLimits:
    def test_a_busy_timeout_over_2_31_milliseconds_is_refused_and_nothing_is_written(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.db"
        with pytest.raises(InvalidInput, match=r"busy_timeout must be at most 2147483\.647 seconds"):
            EventStore.open(f"sqlite:///{path}", busy_timeout=LIMIT_SECONDS + 0.001)
        assert not path.exists()

    @pytest.mark.parametrize("option", ["lock_timeout", "idle_in_transaction_timeout"])
    def test_a_postgresql_timeout_over_2_31_milliseconds_is_refused_and_nothing_is_written(
        self, pg_target: Target, option: str
    ) -> None:
        with pytest.raises(InvalidInput, match=rf"{option} must be at most 2147483\.647 seconds"):
            pg_target.open(**{option: 1e10})
        with _admin_connect(pg_target.url) as conn:
            tables = "SELECT count(*) FROM pg_tables WHERE schemaname = %s"
            assert conn.execute(tables, (pg_target.options["schema"],)).fetchone() == (0,)

    @pytest.mark.parametrize("option", ["lock_timeout", "idle_in_transaction_timeout"])
    def test_a_postgresql_timeout_is_checked_on_sqlite_too(self, tmp_path: Path, option: str) -> None:
        with pytest.raises(InvalidInput, match=rf"{option} must be at most"):
            EventStore.open(f"sqlite:///{tmp_path / 'audit.db'}", **{option: 1e10})

    def test_the_largest_busy_timeout_is_kept_exactly(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'audit.db'}"
        with EventStore.open(url, busy_timeout=LIMIT_SECONDS) as store, store.reading() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 2**31 - 1

    @pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), "10", True, None])
    @pytest.mark.parametrize("option", ["busy_timeout", "lock_timeout", "idle_in_transaction_timeout"])
    def test_a_timeout_that_is_not_a_number_of_seconds_is_refused(
        self, tmp_path: Path, option: str, value: object
    ) -> None:
        with pytest.raises(InvalidInput, match=rf"{option} must be a number of seconds, 0 or more"):
            EventStore.open(f"sqlite:///{tmp_path / 'audit.db'}", **{option: value})


@contextmanager
def pg_schemas(url: str, *names: str) -> Iterator[None]:
    """Schemas created with these exact names (quoted), dropped afterwards."""
    with _admin_connect(url) as conn:
        for name in names:
            conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield
    finally:
        with _admin_connect(url) as conn:
            for name in names:
                conn.execute(f'DROP SCHEMA "{name}" CASCADE')


class TestSchemaOption:
    def test_a_mixed_case_schema_is_used_exactly_not_its_lowercase_namesake(self, pg_database: str) -> None:
        name = f"Audit_{uuid.uuid4().hex[:8]}"
        with pg_schemas(pg_database, name, name.lower()):
            with EventStore.open(pg_database, schema=name, create=True) as store:
                store.append("flow-1", [NewEvent("Started", {})])
                with store.reading() as conn:
                    assert conn.exec_driver_sql("SELECT current_schema()").scalar() == name
            with _admin_connect(pg_database) as conn:
                where = (
                    "SELECT schemaname FROM pg_tables WHERE tablename = 'flow_events' AND schemaname ILIKE %s"
                )
                assert conn.execute(where, (name,)).fetchall() == [(name,)]
            with EventStore.open(pg_database, schema=name) as again:  # the CLI's and `db upgrade`'s way too
                assert [e.type for e in again.read_flow("flow-1")] == ["Started"]

    @pytest.mark.parametrize("create", [True, False])
    def test_a_missing_schema_is_refused_as_invalid_input(self, pg_database: str, create: bool) -> None:
        name = f"Missing_{uuid.uuid4().hex[:8]}"
        with pytest.raises(InvalidInput, match=f'schema "{name}" does not exist'):
            EventStore.open(pg_database, schema=name, create=create)

    def test_a_schema_name_longer_than_postgresql_keeps_is_refused(self, pg_database: str) -> None:
        with pytest.raises(InvalidInput, match="at most 63 bytes"):
            EventStore.open(pg_database, schema="s" * 64)


class TestJsonbLimits:
    """PostgreSQL's jsonb keeps at most 2**28 - 1 bytes in one string, array or object, whatever
    ``max_payload_bytes`` allows: over it the append is bad input, not a failing database."""

    def test_a_string_over_the_jsonb_limit_is_an_invalid_event_and_nothing_is_written(
        self, pg_target: Target
    ) -> None:
        with pg_target.open(max_payload_bytes=2**30) as store:
            with pytest.raises(InvalidEvent, match=r"at most 268435455 bytes in one string, array or obj"):
                store.append("flow-1", [NewEvent("Noted", {"s": "x" * 2**28})])
            assert store.revision("flow-1") == 0

    def test_an_array_of_small_numbers_meets_the_limit_sooner_than_its_json_text(
        self, pg_target: Target
    ) -> None:
        # 45 MB of JSON text, but each 0 takes 12 bytes as jsonb: over the limit
        rows = [[0] * 1000] * 22_500
        with pg_target.open(max_payload_bytes=2**30) as store:
            with pytest.raises(InvalidEvent, match=r"jsonb array elements.*nothing was written"):
                store.append("flow-1", [NewEvent("Noted", {"rows": rows})])
            assert store.revision("flow-1") == 0
