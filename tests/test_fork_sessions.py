"""A fork belongs to the session its snapshot names, and the sessions read model counts it once there.

Inline and after a from-scratch rebuild alike, also once the fork finishes or
the origin does.
"""

from __future__ import annotations

from eventstore import EventStore, NewEvent
from eventstore.timetravel import fork
from projections import FlowProjection, FlowQueries, FlowService

from .conftest import Target
from .readmodels import assert_matches_rebuild, snapshot


def counts(store: EventStore, session_key: str) -> dict[str, int]:
    (row,) = [row for row in snapshot(store)["sessions"] if row["session_key"] == session_key]
    return {k: v for k, v in row.items() if k in ("running", "waiting", "finished", "event_count")}


def started(store: EventStore) -> FlowService:
    flows = FlowService(store)
    flows.start_flow("f", controller_id="c", goal="g", owner_session_key="s", state={})
    flows.advance("f", state_patch={"n": 1})
    return flows


def test_a_fork_counts_once_under_its_origins_session(flow_store: EventStore) -> None:
    started(flow_store)
    fork(flow_store, "f", at_revision=2, new_flow_id="g")
    assert FlowQueries(flow_store).flow("g").owner_session_key == "s"
    assert counts(flow_store, "s") == {"running": 2, "waiting": 0, "finished": 0, "event_count": 3}
    assert_matches_rebuild(flow_store)


def test_fork_then_finish_moves_one_flow_to_finished(flow_store: EventStore) -> None:
    flows = started(flow_store)
    fork(flow_store, "f", at_revision=2, new_flow_id="g")
    flows.finish("g", result={})
    assert counts(flow_store, "s") == {"running": 1, "waiting": 0, "finished": 1, "event_count": 4}
    flows.wait("f", waiting_for="human")
    assert counts(flow_store, "s") == {"running": 0, "waiting": 1, "finished": 1, "event_count": 5}
    assert_matches_rebuild(flow_store)
    assert counts(flow_store, "s") == {"running": 0, "waiting": 1, "finished": 1, "event_count": 5}


def test_a_fork_of_a_fork_and_of_a_finished_flow_count_once(flow_store: EventStore) -> None:
    flows = started(flow_store)
    fork(flow_store, "f", at_revision=2, new_flow_id="g")
    fork(flow_store, "g", at_revision=1, new_flow_id="h")
    flows.finish("f", result={})
    fork(flow_store, "f", at_revision=3, new_flow_id="k")
    assert counts(flow_store, "s") == {"running": 2, "waiting": 0, "finished": 2, "event_count": 6}
    assert_matches_rebuild(flow_store)


def test_a_fork_appended_with_other_events_in_one_batch_counts_once(flow_store: EventStore) -> None:
    started(flow_store)
    fork(flow_store, "f", at_revision=2, new_flow_id="g")
    (forked,) = flow_store.read_flow("g")
    flow_store.append(
        "h", [NewEvent("FlowForked", forked.data), NewEvent("FlowAdvanced", {"state_patch": {}})]
    )
    assert counts(flow_store, "s") == {"running": 3, "waiting": 0, "finished": 0, "event_count": 5}
    assert_matches_rebuild(flow_store)


def test_a_fork_the_read_model_missed_owns_the_flow_a_later_start_restarts_nothing(target: Target) -> None:
    with target.open(projections=[FlowProjection()]) as store, target.open() as bare:
        started(store)
        fork(bare, "f", at_revision=2, new_flow_id="g")  # a writer without the projection
        store.append(
            "g", [NewEvent("FlowStarted", {"controller_id": "c", "goal": "g", "owner_session_key": "t"})]
        )
        flow = FlowQueries(store).flow("g")
        assert (flow.owner_session_key, flow.event_count, flow.parent_flow_id) == ("s", 2, "f")
        assert [row["session_key"] for row in snapshot(store)["sessions"]] == ["s"]
        assert_matches_rebuild(store)
