"""An async append waiting for SQLite's write lock: a cancellation ends the wait at once.

SQLite's own wait (``busy_timeout``) sleeps in the driver's thread, out of a
cancellation's reach; the async writer waits on the loop instead
(``SQLiteBackend._begin``). Another process holds the lock here with a plain
``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventstore import EventStore, NewEvent, StoreBusy
from eventstore.aio import AsyncEventStore


@pytest.fixture
def path(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    with EventStore.open(f"sqlite:///{path}") as store:
        store.append("f", [NewEvent("Started", {})])
    return path


@pytest.fixture
def holder(path: Path) -> Iterator[sqlite3.Connection]:
    """Another writer, holding the write lock until the test lets it go."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    yield conn
    conn.close()


def revisions(path: Path) -> list[int]:
    with EventStore.open(f"sqlite:///{path}") as store:
        return [event.revision for event in store.read_flow("f")]


def test_a_cancelled_append_stops_waiting_and_writes_nothing(path: Path, holder: sqlite3.Connection) -> None:
    async def main() -> float:
        async with await AsyncEventStore.open(f"sqlite:///{path}", busy_timeout=60) as store:
            task = asyncio.ensure_future(store.append("f", [NewEvent("Noted", {})]))
            with pytest.raises(TimeoutError):  # it is waiting for the lock
                await asyncio.wait_for(asyncio.shield(task), timeout=0.5)
            cancelled = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            waited = time.monotonic() - cancelled
            holder.execute("ROLLBACK")
            assert (await store.append("f", [NewEvent("Later", {})])).revision == 2  # the writer works on
            return waited

    waited = asyncio.run(main())
    assert waited < 10, f"the cancelled append waited {waited:.1f} s of its 60 s busy_timeout"
    assert revisions(path) == [1, 2]


def test_an_append_waits_for_the_lock_to_be_released(path: Path, holder: sqlite3.Connection) -> None:
    async def main() -> int:
        async with await AsyncEventStore.open(f"sqlite:///{path}", busy_timeout=60) as store:
            asyncio.get_running_loop().call_later(0.3, holder.execute, "ROLLBACK")
            return (await store.append("f", [NewEvent("Noted", {})])).revision

    assert asyncio.run(main()) == 2
    assert revisions(path) == [1, 2]


def test_an_append_still_locked_after_busy_timeout_is_store_busy(
    path: Path, holder: sqlite3.Connection
) -> None:
    async def main() -> None:
        async with await AsyncEventStore.open(f"sqlite:///{path}", busy_timeout=0.2) as store:
            with pytest.raises(StoreBusy, match="locked"):
                await store.append("f", [NewEvent("Noted", {})])

    asyncio.run(main())
    holder.execute("ROLLBACK")
    assert revisions(path) == [1]
