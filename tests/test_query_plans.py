"""Listings page through an index: no query sorts the whole read model to answer one page.

With a million flows, ``flows()`` sorting the table took 0.6 s a page on SQLite
and a deep page 6.6 s (docs/benchmarks.md, session 13); these tests read the
database's own plan, so they hold at any size without timing anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from eventstore import EventStore
from projections import FlowQueries, FlowService

START = {"controller_id": "c", "goal": "g"}


@contextmanager
def statements(store: EventStore) -> Iterator[list[tuple[str, Any]]]:
    """The SELECTs the store sends meanwhile, with their parameters."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, params))

    sa.event.listen(store.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", record)


def sorts(store: EventStore, statement: str, params: Any) -> list[str]:
    """The steps of the statement's plan that sort rows instead of reading them in index order."""
    with store.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            plan = [row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)]
            return [step for step in plan if "TEMP B-TREE" in step]
        # forbid what an index can replace, so a tiny table's plan is the one a big table gets
        conn.exec_driver_sql("SET LOCAL enable_sort = off")
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        plan = [row[0] for row in conn.exec_driver_sql("EXPLAIN " + statement, params)]
        return [step for step in plan if "Sort" in step]


PAGES: dict[str, Callable[[FlowQueries], object]] = {
    "all": lambda q: q.flows(),
    "all-deep": lambda q: q.flows(offset=3, limit=2),
    "owner": lambda q: q.flows(owner="s1"),
    "status": lambda q: q.flows(status="running"),
}


@pytest.mark.parametrize("page", list(PAGES))
def test_a_page_of_flows_is_read_in_index_order(flow_store: EventStore, page: str) -> None:
    service = FlowService(flow_store)
    for i in range(6):
        service.start_flow(f"f{i}", owner_session_key=f"s{i % 2}", **START)
    with statements(flow_store) as seen:
        listed = PAGES[page](FlowQueries(flow_store))
    (query,) = [(s, p) for s, p in seen if "count(" not in s]
    assert listed  # the page was answered, from the statement whose plan is read
    assert sorts(flow_store, *query) == []
