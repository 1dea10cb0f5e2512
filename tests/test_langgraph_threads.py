"""Listing threads: every page equals a plain computation over the read model's rows, and costs a page.

The listing chooses a page from the threads' sort keys, then computes what
it shows (namespaces, checkpoints, last actor...) for the page's threads
alone; before, it computed all that for every thread of the store, twice
(0.3 s a page at 20,000 threads on SQLite; benchmarks/langgraph_threads.py).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import timedelta
from itertools import groupby
from typing import Any

import pytest
import sqlalchemy as sa
from freezegun import freeze_time

from eventstore import EventStore
from eventstore.integrations.langgraph import EventStoreSaver, flow_id_for
from projections.langgraph import LangGraphProjection
from projections.langgraph_queries import ThreadInfo
from tests.conftest import Target
from tests.test_langgraph_saver import put
from tests.test_query_plans import statements

THREADS = ["a", "b", "c", "d", "e", "f", "g"]
NAMESPACES = ["", "sub:1", "sub:2"]
RUNS = ["r1", "r2", "r3"]
ACTORS = ["ops:eve", "agent:x", "agent:y"]


@pytest.fixture
def saver(target: Target) -> Iterator[EventStoreSaver]:
    with EventStoreSaver.from_url(target.url, **target.options) as made:
        yield made


def expected(store: EventStore, *, include_deleted: bool) -> list[ThreadInfo]:
    """The listing, computed in Python from the rows of ``langgraph_threads``."""
    table = LangGraphProjection().table("langgraph_threads")
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(table).order_by(table.c.thread_id, table.c.checkpoint_ns)).all()
    found = []
    for thread_id, grouped in groupby(rows, key=lambda row: row.thread_id):
        group = list(grouped)
        gone = all(row.deleted_at is not None for row in group)
        if gone and not include_deleted:
            continue
        last = sorted(group, key=lambda row: row.updated_at, reverse=True)[0]  # stable: the first namespace
        latest = [row.latest_checkpoint_id for row in group if row.checkpoint_ns == ""]
        found.append(
            ThreadInfo(
                thread_id=thread_id,
                flow_id=flow_id_for(thread_id),
                namespaces=len(group) if gone else sum(row.deleted_at is None for row in group),
                checkpoints=sum(row.checkpoints for row in group),
                latest_checkpoint_id=max((found for found in latest if found is not None), default=None),
                created_at=min(row.created_at for row in group),
                updated_at=max(row.updated_at for row in group),
                last_actor=last.last_actor,
                deleted_at=max(row.deleted_at for row in group) if gone else None,
                deleted_by=max((row.deleted_by for row in group if row.deleted_by is not None), default=None)
                if gone
                else None,
            )
        )
    found.sort(key=lambda info: info.updated_at, reverse=True)  # stable: ties stay in thread id order
    return found


def change_at_random(saver: EventStoreSaver, rng: random.Random, step: int) -> None:
    """Save, delete a thread, or delete a run's checkpoints (which can empty a namespace)."""
    thread, ns, run, actor = (
        rng.choice(THREADS),
        rng.choice(NAMESPACES),
        rng.choice(RUNS),
        rng.choice(ACTORS),
    )
    choice = rng.random()
    if choice < 0.7:
        values = {"x": step}
        put(
            saver,
            thread,
            values,
            values,
            configurable={"checkpoint_ns": ns},
            metadata={"run_id": run, "actor": actor},
        )
    elif choice < 0.85:
        saver.delete_thread(thread, actor=actor)
    else:
        saver.delete_for_runs([run], actor=actor)


@pytest.mark.parametrize("seed", range(3))
def test_every_page_equals_a_plain_computation(saver: EventStoreSaver, seed: int) -> None:
    rng = random.Random(seed)
    with freeze_time("2026-01-02T03:04:05Z") as clock:
        for step in range(40):
            change_at_random(saver, rng, step)
            clock.tick(timedelta(seconds=rng.choice([0, 0, 1])))  # ties: then by thread id
    for include_deleted in (False, True):
        threads = expected(saver.store, include_deleted=include_deleted)
        for limit in (1, 2, 3, 50):
            for offset in range(0, len(threads) + 2):
                page = saver.threads(offset=offset, limit=limit, include_deleted=include_deleted)
                assert (page.items, page.total) == (threads[offset : offset + limit], len(threads))


def runs_for_every_thread(store: EventStore, statement: str, params: Any, page: int) -> bool:
    """Whether the statement's correlated subquery runs for more threads than the page holds."""
    with store.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            (plan,) = conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params).one()
            nodes, loops = [plan[0]["Plan"]], []
            while nodes:
                node = nodes.pop()
                nodes.extend(node.get("Plans", []))
                if node.get("Parent Relationship") == "SubPlan":
                    loops.append(node["Actual Loops"])
            return any(count > page for count in loops)
        steps = list(conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params))
        loops = {parent for _, parent, _, detail in steps if detail.startswith("CORRELATED SCALAR SUBQUERY")}
        return any(
            parent in loops and detail.startswith("SCAN langgraph_threads") for _, parent, _, detail in steps
        )


def test_a_page_computes_what_it_shows_for_its_threads_alone(saver: EventStoreSaver) -> None:
    for number in range(6):
        put(saver, f"t{number}", {"x": 1}, {"x": 1}, metadata={"actor": f"a{number}"})
    for include_deleted in (False, True):
        with statements(saver.store) as seen:
            assert len(saver.threads(limit=2, include_deleted=include_deleted).items) == 2
        assert seen
        assert [s for s, p in seen if runs_for_every_thread(saver.store, s, p, page=2)] == []
