"""PostgreSQL builds an index added as a store opens concurrently: appends and other opens go on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from projections import FlowQueries, FlowService
from projections.flows import FlowProjection
from tests.conftest import Target
from tests.test_index_upgrade import ADDED, build_of, drop, record, reopen

# A backend of this database, other than the one asking, that waits for a lock some
# backend other than ``holder`` holds: an append or open stalled behind the index build.
STALLED = """
SELECT count(*) FROM pg_stat_activity
 WHERE datname = current_database() AND pid <> pg_backend_pid()
   AND EXISTS (SELECT 1 FROM unnest(pg_blocking_pids(pid)) AS b WHERE b <> %s)
"""
WAITS_FOR_HOLDER = "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))"


def connect(target: Target) -> Any:
    url = target.url.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(url, options=f"-c search_path={target.options['schema']}")


def valid(target: Target, name: str) -> bool | None:
    with connect(target) as conn:
        row = conn.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", (name,)
        ).fetchone()
        return None if row is None else bool(row[0])


def until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (a state of the server, not a clock) until it holds."""
    for _ in range(6000):
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError("the server never reached the state waited for")


def in_thread(work: Callable[[], None], failures: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            work()
        except BaseException as failure:  # reported by the test, with the thread's
            failures.append(failure)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def open_flows(target: Target) -> None:
    with target.open(projections=[FlowProjection()]) as store:
        assert FlowQueries(store).flow("f").flow_id == "f"


def test_appends_and_opens_go_on_while_the_index_builds(pg_target: Target) -> None:
    record(pg_target)
    name = f"ix_flows_interrupted_{build_of(pg_target, 'flows')}"
    failures: list[BaseException] = []
    with pg_target.open(projections=[FlowProjection()]) as writer, connect(pg_target) as watch:
        drop(pg_target, name)
        watch.autocommit = True
        with connect(pg_target) as holder:  # a writer of flows: the build waits for it to end
            holder.execute("LOCK TABLE flows IN ROW EXCLUSIVE MODE")
            held_by = holder.info.backend_pid
            opener = in_thread(lambda: open_flows(pg_target), failures)
            until(lambda: watch.execute(WAITS_FOR_HOLDER, (held_by,)).fetchone()[0] > 0)
            assert valid(pg_target, name) is not True  # the build is under way, held

            def append() -> None:
                FlowService(writer).start_flow("g", controller_id="c", goal="g", owner_session_key="s")

            for work in (append, lambda: open_flows(pg_target)):
                other = in_thread(work, failures)
                until(
                    lambda t=other: not t.is_alive() or watch.execute(STALLED, (held_by,)).fetchone()[0] > 0
                )
                assert not other.is_alive(), "stalled behind the index build"
                other.join()
            assert not failures, failures
            holder.rollback()
        opener.join()
        assert FlowQueries(writer).flow("g").flow_id == "g"
    assert not failures, failures
    assert valid(pg_target, name) is True


@pytest.mark.parametrize(("projection", "table", "index"), ADDED)
def test_an_index_left_invalid_is_built_again_as_the_store_opens(
    pg_target: Target, projection: str, table: str, index: str
) -> None:
    """As a build killed or cancelled half-way leaves it: in the catalog, not valid, never used."""
    record(pg_target)
    name = f"{index}_{build_of(pg_target, projection)}"
    with connect(pg_target) as conn:
        conn.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = to_regclass(%s)", (name,))
    assert valid(pg_target, name) is False
    reopen(pg_target)
    assert valid(pg_target, name) is True


def test_an_open_that_cannot_build_the_index_in_its_lock_timeout_opens_without_it(pg_target: Target) -> None:
    """It waits for the table's writers under ``lock_timeout``; giving up leaves it to the next open."""
    record(pg_target)
    name = f"ix_flows_interrupted_{build_of(pg_target, 'flows')}"
    drop(pg_target, name)
    with connect(pg_target) as holder:  # a writer of flows that outlasts the opener's lock_timeout
        holder.execute("LOCK TABLE flows IN ROW EXCLUSIVE MODE")
        with pg_target.open(projections=[FlowProjection()], lock_timeout=0.2) as store:
            assert FlowQueries(store).flow("f").flow_id == "f"
        assert valid(pg_target, name) is not True
    open_flows(pg_target)
    assert valid(pg_target, name) is True


def test_a_build_cancelled_half_way_is_built_again_by_the_next_open(pg_target: Target) -> None:
    """Cancelled while it waits for a writer, it leaves an INVALID index; its open still opens."""
    record(pg_target)
    name = f"ix_flows_interrupted_{build_of(pg_target, 'flows')}"
    drop(pg_target, name)
    failures: list[BaseException] = []
    with connect(pg_target) as holder, connect(pg_target) as watch:
        watch.autocommit = True
        holder.execute("LOCK TABLE flows IN ROW EXCLUSIVE MODE")
        held_by = holder.info.backend_pid
        opener = in_thread(lambda: open_flows(pg_target), failures)
        until(lambda: watch.execute(WAITS_FOR_HOLDER, (held_by,)).fetchone()[0] > 0)
        watch.execute(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
            (held_by,),
        )
        opener.join()
        holder.rollback()
    assert not failures, failures
    assert valid(pg_target, name) is False
    open_flows(pg_target)
    assert valid(pg_target, name) is True
