"""A PostgreSQL read cancelled twice mid-query: psycopg closes the connection, and it is dropped quietly."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import psycopg
import pytest

from eventstore import EventStore, NewEvent
from eventstore.aio import AsyncEventStore
from tests.conftest import Target


def sleeping_read(store: EventStore) -> None:
    """A read of one's own on the driver connection, as the LangGraph saver's reads are: SQLAlchemy
    does not see the interruption, so does not drop the connection itself."""
    with store.reading() as conn:
        raw: Any = conn.connection.dbapi_connection
        raw.cursor().execute("SELECT pg_sleep(30) -- test_async_cancel_pg_reads")


def wait_until_running(url: str) -> None:
    """Until the server runs the read's query (polled: the server is the only one who knows)."""
    deadline = time.monotonic() + 30
    with psycopg.connect(url, autocommit=True) as admin:
        while time.monotonic() < deadline:
            query = "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s"
            row: Any = admin.execute(query, ("%pg_sleep(30) -- test_async_cancel_pg_reads",)).fetchone()
            if row[0]:
                return
    raise AssertionError("the read never started")


def test_a_read_cancelled_twice_mid_query_ends_cancelled_and_logs_no_error(
    pg_target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    """The second cancellation cuts psycopg's cancelling of the query: it closes the connection (and
    warns so). Given back to the pool, its rollback-on-return then failed, and SQLAlchemy logged an
    ERROR with a traceback ("Exception during reset or similar")."""

    async def main() -> None:
        async with await AsyncEventStore.open(pg_target.url, **pg_target.options) as store:
            await store.append("flow-1", [NewEvent("Started", {})])
            reader = asyncio.ensure_future(store.run(sleeping_read, store.store))
            await asyncio.to_thread(wait_until_running, pg_target.url)
            reader.cancel()
            await asyncio.sleep(0)
            reader.cancel()  # while psycopg asks the server to cancel the query
            with pytest.raises(asyncio.CancelledError):
                await reader
            assert [e.revision for e in await store.read_flow("flow-1")] == [1]

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
