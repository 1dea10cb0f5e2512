"""Flow read models over logs FlowService would not have written: they still agree with a rebuild."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pydantic
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from eventstore import FlowExists, InvalidEvent, InvalidInput, NewEvent
from eventstore.audit import session_flows
from eventstore.cli import main
from eventstore.exchange import export_events, import_events
from eventstore.flow_fold import FLOW_STATUSES, FOLD_VERSION, FlowView
from eventstore.flows import FlowAdvanced, FlowStarted, LeaseAcquired, StepScheduled
from projections import CatchUpRunner, FlowProjection, FlowQueries, FlowService, rebuild

from .conftest import Target
from .readmodels import assert_matches_rebuild
from .test_projections import DecisionsByActor

START = {"controller_id": "c", "goal": "g", "owner_session_key": "s"}
FORK = {"origin_flow_id": "o", "origin_revision": 1, "origin_hash": "00"}
ORIGIN = {**START, "flow_id": "o", "requester_origin": None, "state": {}, "status": "running"}
STEP = {"step_id": "s1", "name": "n", "run_id": "r", "task": {}, "status": "scheduled", "position": 0}
MALFORMED_FORKS = {
    "fields missing": {"flow": {"goal": "g"}},
    "unknown status, time not a time": {"flow": {**ORIGIN, "status": "bogus", "finished_at": "garbage"}},
    "step fields missing": {"flow": ORIGIN, "steps": {"s1": {"step_id": "s1"}}},
    "step position not a number": {"flow": ORIGIN, "steps": {"s1": {**STEP, "position": "x"}}},
    "step position beyond 32 bits": {"flow": ORIGIN, "steps": {"s1": {**STEP, "position": 2**40}}},
    "step status and times odd": {
        "flow": ORIGIN,
        "steps": {"s1": {**STEP, "status": "bogus", "gate_status": "maybe", "scheduled_at": 5}},
    },
    "steps not a mapping": {"flow": ORIGIN, "steps": ["s1"]},
    "names not text": {"flow": {**ORIGIN, "controller_id": 5, "owner_session_key": None}},
    "numbers where documents belong": {
        "flow": {**ORIGIN, "status": "waiting", "result": 5, "wait": 1.5, "error": 2**40},
        "steps": {"s1": {**STEP, "status": "failed", "result": 7, "output": 0.5, "error": 3}},
    },
    "texts and lists where documents belong": {
        "flow": {**ORIGIN, "error": "boom", "wait": ["a"], "result": [1]},
        "steps": {"s1": {**STEP, "status": "failed", "error": {"code": 5}, "result": "ok"}},
    },
    "times past year 1 or 9999 in UTC": {
        "flow": {**ORIGIN, "finished_at": "0001-01-01T00:00:00+14:00"},
        "steps": {"s1": {**STEP, "started_at": "9999-12-31T23:00:00-05:00"}},
    },
}
BAD_TIMES = {  # what the vocabulary refuses, and the fold reads as no time
    "before year 1 in UTC": "0001-01-01T00:00:00+14:00",
    "after year 9999 in UTC": "9999-12-31T23:00:00-05:00",
    "not a time in every zone": "0001-01-01T12:00:00+00:00",
    "without a timezone": "2030-01-01T12:00:00",
    "a number": 1893456000,
}


def lease(expires_at: Any) -> NewEvent:
    return NewEvent("LeaseAcquired", {"owner_token": "w", "generation": 1, "expires_at": expires_at})


def test_a_flow_started_by_a_writer_without_the_projection_is_folded_on_its_next_event(
    target: Target,
) -> None:
    with target.open(projections=[FlowProjection()]):
        pass  # the read models exist
    with target.open() as bare:
        bare.append("x", [FlowStarted(**START)])
    with target.open(projections=[FlowProjection()]) as store:
        store.append("x", [FlowAdvanced(state_patch={"n": 1})])
        assert FlowQueries(store).flow("x").state == {"n": 1}
        assert FlowService(store).advance("x", state_patch={"m": 2}).revision == 3
        with pytest.raises(FlowExists):
            FlowService(store).start_flow("x", **START)
        assert_matches_rebuild(store)


@pytest.mark.parametrize("before", [[], [NewEvent("RequestReceived", {})]], ids=["at 1", "after another"])
def test_a_flow_started_by_a_writer_without_the_projection_is_folded_on_an_event_of_the_application(
    target: Target, before: list[NewEvent]
) -> None:
    with target.open(projections=[FlowProjection()]) as store, target.open() as bare:
        bare.append("x", [*before, FlowStarted(**START)])
        store.append("x", [NewEvent("Note", {"text": "outside the vocabulary"})])
        flow = FlowQueries(store).flow("x")
        assert (flow.revision, flow.event_count, flow.owner_session_key) == (len(before) + 2, 2, "s")
        assert_matches_rebuild(store)


def test_a_start_after_a_rolled_back_event_of_the_application_is_still_found(target: Target) -> None:
    with target.open(projections=[FlowProjection()]) as store, target.open() as bare:
        store.append("x", [NewEvent("Note", {})])
        with pytest.raises(RuntimeError), store.transaction() as tx:
            tx.append("x", [NewEvent("Note", {})])  # remembered as a stream with no start, then undone
            raise RuntimeError
        bare.append("x", [FlowStarted(**START)])
        store.append("x", [NewEvent("Note", {})])
        assert FlowQueries(store).flow("x").event_count == 2
        assert_matches_rebuild(store)


def test_a_start_another_writer_appended_after_the_remembered_event_is_found(target: Target) -> None:
    """Two processes with the projection take turns on a stream; a third, without it, starts the flow."""
    with (
        target.open(projections=[FlowProjection()]) as first,
        target.open(projections=[FlowProjection()]) as second,
        target.open() as bare,
    ):
        first.append("x", [NewEvent("Note", {})])
        second.append("x", [NewEvent("Note", {})])
        first.append("x", [NewEvent("Note", {})])  # reads only what came after its own last note
        bare.append("x", [FlowStarted(**START)])
        second.append("x", [NewEvent("Note", {})])  # reads only what came after its own last note
        flow = FlowQueries(first).flow("x")
        assert (flow.revision, flow.event_count) == (5, 2)
        assert_matches_rebuild(first)


def test_a_flow_starts_after_events_of_the_application(target: Target) -> None:
    with target.open(projections=[FlowProjection()]) as store:
        store.append("f", [NewEvent("RequestReceived", {"text": "refund please"})])
        assert FlowService(store).start_flow("f", **START).revision == 2
        assert FlowQueries(store).flow("f").revision == 2
        assert_matches_rebuild(store)


def test_a_second_start_with_another_owner_changes_nothing_but_the_count(target: Target) -> None:
    with target.open(projections=[FlowProjection()]) as store:
        FlowService(store).start_flow("f", **{**START, "owner_session_key": "alice"})
        FlowService(store).fail("f", error="boom")
        store.append("f", [FlowStarted(**{**START, "owner_session_key": "bob", "goal": "again"})])
        flow = FlowQueries(store).flow("f")
        assert (flow.owner_session_key, flow.status, flow.goal, flow.event_count) == (
            "alice",
            "failed",
            "g",
            3,
        )
        sessions = [(s.session_key, s.failed, s.event_count) for s in FlowQueries(store).sessions().items]
        assert sessions == [("alice", 1, 3)]
        assert_matches_rebuild(store)


def test_a_run_id_scheduled_twice_in_the_log_still_rebuilds(target: Target) -> None:
    with target.open(projections=[FlowProjection()]) as store:
        flows = FlowService(store)
        flows.start_flow("f", **START)
        flows.schedule_step("f", step_id="s1", name="n", run_id="r")
        store.append("f", [StepScheduled(step_id="s2", name="n", run_id="r")])
        assert FlowQueries(store).step_by_run("f", "r").step_id == "s1"
        assert flows.schedule_step("f", step_id="s3", name="n", run_id="r").positions == ()
        flows.advance("f", state_patch={"ok": True})
        assert_matches_rebuild(store)


def test_long_names_fit_on_both_backends_and_too_long_ones_are_refused(target: Target) -> None:
    with target.open(projections=[FlowProjection()]) as store:
        flows = FlowService(store)
        flows.start_flow("f", **{**START, "owner_session_key": "s" * 500})
        flows.schedule_step("f", step_id="x" * 500, name="n" * 500, run_id="r" * 500)
        with pytest.raises(
            InvalidInput, match="step_id is 501 characters long; names and keys take at most 500"
        ):
            flows.schedule_step("f", step_id="x" * 501, name="n", run_id="r2")
        store.append("g", [FlowStarted(**{**START, "owner_session_key": "k" * 900})])  # a writer of its own
        assert_matches_rebuild(store)


@pytest.mark.parametrize(
    "repeat",
    [
        lambda flows: flows.complete_step(
            "f", "s1", result={"items": (1, 2), "at": datetime(2026, 1, 1, tzinfo=UTC)}
        ),
        lambda flows: flows.finish("f", result={"items": (1, 2)}),
    ],
    ids=["complete_step", "finish"],
)
def test_an_identical_ending_with_a_tuple_or_a_time_is_a_no_op(target: Target, repeat: Any) -> None:
    with target.open(projections=[FlowProjection()]) as store:
        flows = FlowService(store)
        flows.start_flow("f", **START)
        flows.schedule_step("f", step_id="s1", name="n", run_id="r")
        flows.start_step("f", "s1")
        repeat(flows)
        before = store.last_position()
        assert repeat(flows).positions == ()
        assert store.last_position() == before


def test_ids_no_driver_can_encode_are_invalid_input(target: Target) -> None:
    bad = "flow-\ud800"
    with target.open(projections=[FlowProjection()]) as store:
        flows, queries = FlowService(store), FlowQueries(store)
        for call in (
            lambda: flows.start_flow(bad, **START),
            lambda: flows.advance(bad),
            lambda: queries.flow(bad),
            lambda: queries.steps(bad),
            lambda: queries.flows(owner=bad),
        ):
            with pytest.raises(InvalidInput):
                call()
        assert store.last_position() == 0


@pytest.mark.parametrize("size", [0, -1, 1.5, True])
def test_a_batch_size_below_one_is_refused(target: Target, size: Any) -> None:
    with target.open() as store:
        with pytest.raises(InvalidInput, match="batch_size must be an int >= 1"):
            CatchUpRunner(store, DecisionsByActor(), batch_size=size)
        with pytest.raises(InvalidInput, match="batch_size must be an int >= 1"):
            rebuild(store, DecisionsByActor(), batch_size=size)


def test_a_page_and_its_total_come_from_one_snapshot(target: Target) -> None:
    """A flow started between the count and the rows it counts is in neither."""
    with target.open(projections=[FlowProjection()]) as store:
        flows = FlowService(store)
        for n in range(3):
            flows.start_flow(f"f{n}", **START)

        def start_another(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if "count(" in statement.lower() and not started:
                started.append(True)
                writer = threading.Thread(target=flows.start_flow, args=("late",), kwargs=START)
                writer.start()
                writer.join()

        started: list[bool] = []
        sa.event.listen(store.engine, "after_cursor_execute", start_another)
        page = FlowQueries(store).flows(limit=10)
        sa.event.remove(store.engine, "after_cursor_execute", start_another)
        assert started and (len(page.items), page.total) == (3, 3)
        assert FlowQueries(store).flows(limit=10).total == 4


@pytest.mark.parametrize("snapshot", MALFORMED_FORKS.values(), ids=MALFORMED_FORKS.keys())
def test_a_malformed_fork_from_a_writer_without_the_projection_still_folds(
    target: Target, snapshot: Any
) -> None:
    with target.open() as bare:
        bare.append("g", [NewEvent("FlowForked", {**FORK, "snapshot": snapshot})])
    with target.open(projections=[FlowProjection()]) as store:  # builds the read models from the log
        flow = FlowQueries(store).flow("g")
        assert flow.status in FLOW_STATUSES and flow.revision == 1
        view = FlowView()
        for event in store.read_flow("g"):
            view.apply(event)
        assert view.flow == flow
        assert sorted(view.steps.items()) == [(s.step_id, s) for s in FlowQueries(store).steps("g")]
        FlowService(store).schedule_step("g", step_id="s2", name="n", run_id="r2")
        assert_matches_rebuild(store)


@pytest.mark.parametrize("snapshot", [*MALFORMED_FORKS.values(), [1]], ids=[*MALFORMED_FORKS, "a list"])
def test_a_malformed_fork_appended_through_the_vocabulary_is_refused(target: Target, snapshot: Any) -> None:
    with target.open(projections=[FlowProjection()]) as store:
        with pytest.raises(InvalidEvent, match="FlowForked data fails validation"):
            store.append("g", [NewEvent("FlowForked", {**FORK, "snapshot": snapshot})])
        assert store.last_position() == 0


@pytest.mark.parametrize("name", ["numbers where documents belong", "texts and lists where documents belong"])
def test_the_cli_shows_a_fork_with_bare_values_where_documents_belong(tmp_path: Any, name: str) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    with Target(url).open() as bare:
        bare.append("g", [NewEvent("FlowForked", {**FORK, "snapshot": MALFORMED_FORKS[name]})])
    for command in (["show", "g"], ["show", "g", "--json"], ["flows"], ["flows", "--json"]):
        result = CliRunner().invoke(main, ["--url", url, *command])
        assert (result.exit_code, result.exception) == (0, None), command
    shown = CliRunner().invoke(main, ["--url", url, "show", "g"]).output
    expected = "error       1099511627776" if name.startswith("numbers") else "error       boom"
    assert expected in shown


def test_the_cli_rebuilds_a_log_holding_a_malformed_fork(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    with Target(url).open() as bare:
        bare.append("g", [NewEvent("FlowForked", {**FORK, "snapshot": MALFORMED_FORKS["fields missing"]})])
    result = CliRunner().invoke(main, ["--url", url, "rebuild", "--json"])
    assert (result.exit_code, result.exception) == (0, None)


@pytest.mark.parametrize("expires_at", BAD_TIMES.values(), ids=BAD_TIMES.keys())
def test_a_lease_time_the_read_models_cannot_keep_is_refused(target: Target, expires_at: Any) -> None:
    with target.open(projections=[FlowProjection()]) as store:
        with pytest.raises(
            InvalidEvent, match="LeaseAcquired data fails validation: expires_at: Value error, not an ISO"
        ):
            store.append("f", [NewEvent("FlowStarted", START), lease(expires_at)])
        assert store.last_position() == 0


def test_a_typed_lease_takes_the_same_times() -> None:
    year_1_in_kiribati = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))
    with pytest.raises(pydantic.ValidationError, match="from 0001-01-02 to before 9999-12-31 in UTC"):
        LeaseAcquired(owner_token="w", generation=1, expires_at=year_1_in_kiribati)
    moment = datetime(9999, 12, 30, 23, tzinfo=UTC)
    assert LeaseAcquired(owner_token="w", generation=1, expires_at=moment).expires_at == moment


@pytest.mark.parametrize("expires_at", BAD_TIMES.values(), ids=BAD_TIMES.keys())
def test_a_lease_time_in_the_log_that_no_read_model_keeps_is_no_time(
    target: Target, tmp_path: Path, expires_at: Any
) -> None:
    with Target(f"sqlite:///{tmp_path / 'bare.db'}").open() as bare:  # validates nothing
        bare.append("f", [NewEvent("FlowStarted", START), lease(expires_at)])
        bare.append("g", [NewEvent("FlowStarted", START)])
        export_events(bare, tmp_path / "log.jsonl")
    with target.open(projections=[FlowProjection()]) as store:
        assert import_events(store, tmp_path / "log.jsonl", batch_size=1).events_imported == 3
        flow = FlowQueries(store).flow("f")
        assert (flow.lease_owner, flow.lease_generation, flow.lease_expires_at) == ("w", 1, None)
        FlowService(store).advance("f", state_patch={"n": 1})
        assert_matches_rebuild(store)


class TestOwnerAsTheSessionFiltersReadIt:
    """The fold reads a flow's owner as the store does: a session filter finds what the read model lists."""

    @pytest.mark.parametrize(
        "first",
        [
            NewEvent("FlowStarted", {"controller_id": None, "goal": "g", "owner_session_key": None}),
            NewEvent("FlowStarted", {"controller_id": "c", "goal": "g", "owner_session_key": 5}),
            NewEvent("FlowForked", {**FORK, "snapshot": {}}),  # no flow in the snapshot: still the start
        ],
        ids=["null owner", "owner not text", "fork without a flow"],
    )
    def test_a_start_naming_no_owner_files_the_flow_under_session_nothing(
        self, target: Target, first: NewEvent
    ) -> None:
        with target.open() as bare:  # a writer without the projection
            bare.append("x", [first, FlowStarted(**START)])
        with target.open(projections=[FlowProjection()]) as store:
            flow = FlowQueries(store).flow("x")
            assert (flow.owner_session_key, flow.controller_id == "None") == ("", False)
            assert [s.session_key for s in FlowQueries(store).sessions().items] == [""]
            assert (session_flows(store, ""), session_flows(store, "s"), session_flows(store, "None")) == (
                ["x"],
                [],
                [],
            )
            assert_matches_rebuild(store)

    def test_the_fold_and_the_read_models_move_to_version_5_together(self) -> None:
        # the read models' versions 6 and 7 changed only their column types (SQLite JSON, PostgreSQL
        # collation), not the fold
        assert (FOLD_VERSION, FlowProjection.version) == (6, 8)
