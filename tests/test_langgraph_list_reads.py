"""Listing LangGraph checkpoints: a page reads each stored value once, and sorts no checkpoint rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
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


def thread(saver: EventStoreSaver, name: str, checkpoints: int, *, shared: bool) -> None:
    """Channel ``b`` changes every step; ``a`` too, unless ``shared`` (then one stored value for all)."""
    config = None
    for n in range(checkpoints):
        versions = {"a": "1.0" if shared else f"{n + 1:016}.0", "b": f"{n + 1:016}.0"}
        new = ["b"] if shared and n else None
        config = put(saver, name, {"a": 0 if shared else n, "b": n}, versions, new=new, parent=config)


def page(conn: Any, name: str, limit: int, *, namespace: str | None = "") -> None:
    """A page of ``list``: the rows, then their values and writes (``SyncSaver._pages``)."""
    queries = LangGraphQueries()
    rows = queries.checkpoints(
        conn,
        thread_id=name,
        checkpoint_ns=namespace,
        checkpoint_id=None,
        before=None,
        metadata=None,
        after=None,
        limit=limit,
    )
    assert len(queries.load(conn, rows)) == limit


def page_work(saver: EventStoreSaver, name: str, limit: int) -> int:
    """What a page of ``limit`` cost the database: SQLite's VM steps, or PostgreSQL's value rows read."""
    return database_work(saver, ("langgraph_blobs",), lambda conn: page(conn, name, limit))


def test_a_page_reads_a_value_its_checkpoints_share_once(saver: EventStoreSaver) -> None:
    thread(saver, "distinct", 40, shared=False)  # a page of 40 needs 80 stored values
    thread(saver, "shared", 40, shared=True)  # and here 41: one "a" for all
    distinct, shared = page_work(saver, "distinct", 40), page_work(saver, "shared", 40)
    # PostgreSQL read a value once per checkpoint that had it (80 rows read for both)
    assert shared <= distinct * 0.8, (distinct, shared)


def test_a_page_of_a_whole_thread_sorts_its_keys_not_its_rows(tmp_path: Path) -> None:
    """Across namespaces the key does not order the ids: only the page's rows are read whole.

    SQLite only: PostgreSQL sorts the keys alone too, but only a sort's row width in its plan shows it.
    """
    with EventStoreSaver.from_url(f"sqlite:///{tmp_path / 'list.db'}") as saver:
        sorts_keys_only(saver)


def sorts_keys_only(saver: EventStoreSaver) -> None:
    thread(saver, "t", 30, shared=False)
    with saver.store.reading() as conn:
        statements: list[str] = []
        raw: Any = conn.connection.dbapi_connection
        raw.set_trace_callback(statements.append)
        try:
            page(conn, "t", 5, namespace=None)
        finally:
            raw.set_trace_callback(None)
        plans = [
            str(row[3])
            for text in statements
            if "langgraph_checkpoints" in text
            for row in raw.execute(f"EXPLAIN QUERY PLAN {text}").fetchall()
        ]
        # before: SEARCH c USING INDEX ... (thread_id=?), then a sort of those whole rows
        scans = [plan for plan in plans if plan.startswith("SEARCH") and "(thread_id=?)" in plan]
        assert scans and all("COVERING INDEX" in plan for plan in scans), plans
