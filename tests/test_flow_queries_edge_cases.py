"""FlowQueries at its edges: arguments no backend could hold, runs scheduled twice, a rebuild's swap."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from eventstore import EventStore, InvalidInput
from eventstore.flows import StepScheduled
from projections import FlowProjection, FlowQueries, FlowService, Progress, rebuild

from .conftest import Target
from .readmodels import assert_matches_rebuild, flow_projection

START = {"controller_id": "c", "goal": "g", "owner_session_key": "s"}
NOT_TEXT = [5, b"s", ["s"], "a\x00b", "\ud800"]
"""Neither a str nor text every backend stores alike."""


@pytest.mark.parametrize("bad", [*NOT_TEXT, None, "", "x" * 201])
def test_a_flow_id_no_flow_can_have_is_invalid_input(flow_store: EventStore, bad: Any) -> None:
    queries = FlowQueries(flow_store)
    asks: list[Callable[[], object]] = [
        lambda: queries.flow(bad),
        lambda: queries.steps(bad),
        lambda: queries.step(bad, "s1"),
        lambda: queries.step_by_run(bad, "r1"),
        lambda: queries.step_history(bad),
    ]
    for ask in asks:
        with pytest.raises(InvalidInput, match="flow id"):
            ask()


@pytest.mark.parametrize("bad", NOT_TEXT)
def test_a_name_or_key_that_is_not_text_is_invalid_input(flow_store: EventStore, bad: Any) -> None:
    queries = FlowQueries(flow_store)
    asks: list[Callable[[], object]] = [
        lambda: queries.flows(owner=bad),
        lambda: queries.step("f", bad),
        lambda: queries.step_by_run("f", bad),
        lambda: queries.step_history("f", name=bad),
        lambda: queries.session(bad),
        lambda: queries.expired_steps(after=(bad, "s1") if isinstance(bad, str) else ("f", "s1")),
        lambda: queries.expired_steps(after=("f", bad) if isinstance(bad, str) else ("f", "s1")),
    ]
    for ask in asks[:5] if not isinstance(bad, str) else asks:
        with pytest.raises(InvalidInput):
            ask()


def test_a_missing_step_or_session_key_is_invalid_input(flow_store: EventStore) -> None:
    queries = FlowQueries(flow_store)
    for ask in (
        lambda: queries.step("f", None),
        lambda: queries.step_by_run("f", None),
        lambda: queries.session(None),
    ):
        with pytest.raises(InvalidInput):
            ask()


@pytest.mark.parametrize("bad", ["bogus", 5, "finished"])
def test_step_history_refuses_a_status_no_step_has(flow_store: EventStore, bad: Any) -> None:
    with pytest.raises(InvalidInput, match="unknown step status"):
        FlowQueries(flow_store).step_history("f", status=bad)


def test_an_empty_step_id_is_a_step_like_any_other(flow_store: EventStore) -> None:
    FlowService(flow_store).start_flow("f", **START)
    FlowService(flow_store).schedule_step("f", step_id="", name="", run_id="")
    assert FlowQueries(flow_store).step("f", "").step_id == ""
    assert FlowQueries(flow_store).step_history("f", name="").total == 1


def test_a_run_scheduled_twice_in_one_append_is_found_at_its_first_step(flow_store: EventStore) -> None:
    FlowService(flow_store).start_flow("f", **START)
    flow_store.append(
        "f",
        [
            StepScheduled(step_id="z-first", name="n", run_id="r1"),
            StepScheduled(step_id="a-second", name="n", run_id="r1"),
        ],
    )
    assert FlowQueries(flow_store).step_by_run("f", "r1").step_id == "z-first"
    with flow_store.transaction() as tx:  # what FlowService's idempotent schedule_step looks up
        found = flow_projection(flow_store).find_run(tx, "f", "r1")
    assert found is not None and found.step_id == "z-first"
    assert_matches_rebuild(flow_store)
    assert FlowQueries(flow_store).step_by_run("f", "r1").step_id == "z-first"


def test_a_page_read_queued_behind_a_rebuilds_swap_sees_the_new_tables_whole(pg_target: Target) -> None:
    """The swap waits for a reader of the live flows table; a page read arriving meanwhile queues
    behind the swap. It must then read the new tables as the swap committed them, with the flow
    the swap folded in last, not the fresh tables as they were before the swap."""
    import psycopg

    url, schema = pg_target.url.replace("+psycopg", ""), pg_target.options["schema"]
    with (
        pg_target.open(projections=[FlowProjection()]) as store,
        psycopg.connect(url, autocommit=True) as watch,
        psycopg.connect(url, options=f"-c search_path={schema}") as holder,
    ):
        flows = FlowService(store)
        for i in range(3):
            flows.start_flow(f"f{i}", **START)

        def during(progress: Progress) -> None:
            if progress.done == 3 and store.revision("late") == 0:  # after the fill: the swap folds it
                flows.start_flow("late", **START)

        holder.execute("SELECT 1 FROM flows LIMIT 0")  # holds the live table until it commits
        done: list[Any] = []
        rebuilding = threading.Thread(
            target=lambda: done.append(rebuild(store, FlowProjection(), progress=during))
        )
        rebuilding.start()
        waiting_swap = (
            "SELECT pid FROM pg_locks WHERE NOT granted AND mode = 'AccessExclusiveLock'"
            " AND relation = to_regclass(%s)"
        )
        swap = _until(lambda: watch.execute(waiting_swap, [f"{schema}.flows"]).fetchone())[0]
        pages: list[Any] = []
        reading = threading.Thread(target=lambda: pages.append(FlowQueries(store).flows()))
        reading.start()
        queued = "SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))"
        _until(lambda: watch.execute(queued, [swap]).fetchone())  # the reader waits behind the swap
        holder.commit()
        rebuilding.join()
        reading.join()
        assert len(done) == 1
        (page,) = pages
        assert (page.total, sorted(f.flow_id for f in page.items)) == (4, ["f0", "f1", "f2", "late"])


def _until(found: Callable[[], Any]) -> Any:
    """``found()`` once it is truthy; asked for at most 10 seconds (PostgreSQL has no lock event)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if value := found():
            return value
    pytest.fail("the condition never held")
