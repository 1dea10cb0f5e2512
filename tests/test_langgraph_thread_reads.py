"""A page of a whole LangGraph thread (every namespace) costs the page, not the thread."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from eventstore.integrations.langgraph import EventStoreSaver
from projections.langgraph_queries import LangGraphQueries
from tests.conftest import Target
from tests.test_langgraph_reads import database_work
from tests.test_langgraph_saver import put


@pytest.fixture
def saver(target: Target) -> Iterator[EventStoreSaver]:
    with EventStoreSaver.from_url(target.url, **target.options) as made:
        yield made


def grow(saver: EventStoreSaver, name: str, checkpoints: int) -> None:
    """``checkpoints`` more in each of two namespaces of thread ``name``."""
    for namespace in ("", "sub:1"):
        for n in range(checkpoints):
            versions = {"a": f"{n + 1:016}.0"}
            put(saver, name, {"a": n}, versions, configurable={"checkpoint_ns": namespace})


def keys_work(saver: EventStoreSaver, name: str) -> int:
    """What choosing a page of 5 of the thread's checkpoints cost (their values are not read)."""

    def page(conn: Any) -> None:
        rows = LangGraphQueries().checkpoints(
            conn,
            thread_id=name,
            checkpoint_ns=None,
            checkpoint_id=None,
            before=None,
            metadata=None,
            after=None,
            limit=5,
        )
        assert len(rows) == 5

    return database_work(saver, ("langgraph_checkpoints",), page)


def test_a_page_of_a_whole_thread_does_not_grow_with_the_thread(saver: EventStoreSaver) -> None:
    grow(saver, "t", 10)
    short = keys_work(saver, "t")
    grow(saver, "t", 100)
    long = keys_work(saver, "t")
    assert short > 0, "the database reported no work: nothing was measured"
    assert long <= short * 1.2, (short, long)  # before: every key of the thread read and sorted
