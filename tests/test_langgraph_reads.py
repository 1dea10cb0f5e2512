"""Reading a LangGraph checkpoint costs the same on a long thread as on a short one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from eventstore.integrations.langgraph import EventStoreSaver
from projections.langgraph_queries import LangGraphQueries
from tests import read_work
from tests.conftest import Target
from tests.test_langgraph_saver import put


@pytest.fixture
def saver(target: Target) -> Iterator[EventStoreSaver]:
    with EventStoreSaver.from_url(target.url, **target.options) as made:
        yield made


def thread(saver: EventStoreSaver, name: str, checkpoints: int) -> None:
    """``checkpoints`` steps, each giving every channel a new value (a new stored blob)."""
    config = None
    for n in range(checkpoints):
        versions = {channel: f"{n + 1:016}.0" for channel in ("a", "b", "c")}
        values = {"a": n, "b": f"step {n}", "c": [n]}
        config = put(saver, name, values, versions, parent=config)


def database_work(saver: EventStoreSaver, tables: tuple[str, ...], read: Callable[[Any], object]) -> int:
    """What ``read(conn)`` cost the database: SQLite VM steps, or rows PostgreSQL read from ``tables``."""
    projection = LangGraphQueries().projection
    return read_work.database_work(saver.store, [projection.table(table).name for table in tables], read)


def work(saver: EventStoreSaver, name: str) -> int:
    """What reading ``name``'s latest checkpoint cost the database."""

    def latest(conn: Any) -> None:
        assert LangGraphQueries().checkpoint(conn, name, "", None) is not None

    return database_work(saver, ("langgraph_blobs", "langgraph_writes"), latest)


def test_reading_the_latest_checkpoint_does_not_grow_with_the_thread(saver: EventStoreSaver) -> None:
    thread(saver, "short", 2)
    thread(saver, "long", 150)  # 450 stored values, of which the latest checkpoint needs 3
    short, long = work(saver, "short"), work(saver, "long")
    assert short > 0, "the database reported no work: nothing was measured (PostgreSQL: track_counts off?)"
    assert long <= short * 1.2, (short, long)
