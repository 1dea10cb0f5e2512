"""A FlowService remembers the state it last committed; what others wrote since always wins.

Each test drives one flow from two stores on the same database (as two
processes would): ``mine`` runs a command first, so it holds a remembered
state; ``theirs`` then changes the flow; ``mine``'s next command must act on
the log as it is, never on what it remembered.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from eventstore import EventStore, FlowClosed, InvalidInput, RevisionMismatch
from eventstore.flows import FlowFinished
from projections import FlowProjection, FlowQueries, FlowService, rebuild
from tests.conftest import Target
from tests.readmodels import assert_matches_rebuild


@pytest.fixture
def two(target: Target) -> Iterator[tuple[FlowService, FlowService]]:
    with target.open(projections=[FlowProjection()]) as a, target.open(projections=[FlowProjection()]) as b:
        yield FlowService(a), FlowService(b)


def started(mine: FlowService, theirs: FlowService) -> None:
    mine.start_flow("f", controller_id="c", goal="g", owner_session_key="s")
    mine.schedule_step("f", step_id="s1", name="n", run_id="r1", task={})
    assert mine.projection.warm_flows() == ["f"]


def test_a_flow_finished_elsewhere_refuses_the_next_step(two: tuple[FlowService, FlowService]) -> None:
    mine, theirs = two
    started(mine, theirs)
    theirs.finish("f", result={"by": "them"})
    with pytest.raises(FlowClosed, match="is finished"):
        mine.advance("f", current_step="s1")
    assert mine.store.revision("f") == 3


def test_a_lease_released_elsewhere_is_free(two: tuple[FlowService, FlowService]) -> None:
    mine, theirs = two
    started(mine, theirs)
    held = theirs.acquire_lease("f", owner_token="w1", ttl_seconds=60)
    mine.advance("f", current_step="s1")  # remembers the flow leased by w1
    theirs.release_lease("f", held)
    lease = mine.acquire_lease("f", owner_token="w2", ttl_seconds=60)
    assert lease.generation == held.generation + 1


def test_an_expected_revision_is_checked_against_the_log(two: tuple[FlowService, FlowService]) -> None:
    mine, theirs = two
    started(mine, theirs)
    theirs.advance("f", current_step="s1")
    result = mine.advance("f", state_patch={"k": 1}, expected_revision=3)
    assert result.revision == 4
    with pytest.raises(RevisionMismatch):
        mine.advance("f", state_patch={"k": 2}, expected_revision=3)


def test_a_repeated_ending_reports_the_logs_revision(two: tuple[FlowService, FlowService]) -> None:
    mine, theirs = two
    started(mine, theirs)
    mine.start_step("f", "s1")
    mine.complete_step("f", "s1", result={"ok": True})
    theirs.advance("f", current_step="next")
    repeat = mine.complete_step("f", "s1", result={"ok": True})
    assert repeat.revision == 5 and repeat.positions == ()


def test_steps_changed_elsewhere_are_folded_once(
    two: tuple[FlowService, FlowService], target: Target
) -> None:
    mine, theirs = two
    started(mine, theirs)
    theirs.start_step("f", "s1")
    mine.complete_step("f", "s1", result={"n": 1})
    step = FlowQueries(mine.store).step("f", "s1")
    assert (step.status, step.attempts, step.result) == ("completed", 1, {"n": 1})
    with target.open(projections=[FlowProjection()]) as fresh:
        assert_matches_rebuild(fresh)


def test_plain_appends_to_the_flow_are_seen(two: tuple[FlowService, FlowService]) -> None:
    mine, _ = two
    started(mine, _)
    store: EventStore = mine.store
    store.append("f", [FlowFinished(result={})])
    with pytest.raises(FlowClosed):
        mine.start_step("f", "s1")


def test_a_single_try_still_decides_a_refusal_from_the_rows(target: Target) -> None:
    with target.open(projections=[FlowProjection()]) as store:
        once = FlowService(store, retries=1)
        once.start_flow("f", controller_id="c", goal="g", owner_session_key="s")
        once.finish("f")
        assert once.finish("f").revision == 2  # the identical repeat is a no-op, not an error
        with pytest.raises(FlowClosed):
            once.advance("f", current_step="x")
        with pytest.raises(InvalidInput, match="retries"):
            FlowService(store, retries=0)


def test_a_rebuild_forgets_remembered_states(two: tuple[FlowService, FlowService]) -> None:
    mine, theirs = two
    started(mine, theirs)
    rebuild(mine.store, mine.projection)
    assert mine.projection.warm_flows() == []
