"""The store on asyncio: waiting inside store code never stalls the event loop."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import ClassVar

import pytest

from eventstore.aio import AsyncEventStore, pause, run
from eventstore.errors import StorageError
from eventstore.schema import projection_checkpoints as checkpoints
from projections import FlowProjection, FlowService
from projections.base import _claim, _rebuild_lock, read_checkpoint
from tests.conftest import Target


class FlowProjectionV2(FlowProjection):
    """The flow read models after a change to their fold: the version says they need a rebuild."""

    version: ClassVar[int] = FlowProjection.version + 1


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
    assert _claim(store, FlowProjectionV2(), "another-process")  # its rebuild holds the claim

    async def main() -> AsyncEventStore:
        opening = asyncio.ensure_future(
            AsyncEventStore.open(target.url, **target.options, projections=[FlowProjectionV2()])
        )

        async def tick() -> None:
            for _ in range(2_000):  # a blocked loop would get through a few ticks per poll only
                await asyncio.sleep(0)
                assert not opening.done(), opening.exception() if opening.done() else None

        await asyncio.wait_for(tick(), timeout=30)
        with store.transaction() as tx:  # the other process's rebuild ends
            tx.connection.execute(
                checkpoints.delete().where(checkpoints.c.name == _rebuild_lock(FlowProjectionV2()))
            )
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
