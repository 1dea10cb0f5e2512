"""FlowService: accepted commands and every refused transition."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from freezegun import freeze_time

from eventstore import EventStore, FlowNotFound, InvalidInput, RevisionMismatch
from eventstore.errors import (
    FlowClosed,
    FlowExists,
    GateNotOpen,
    InvalidTransition,
    LeaseHeld,
    LeaseLost,
    ProjectionError,
    SelectionNotAllowed,
    StepClosed,
    StepNotFound,
)
from eventstore.flow_fold import merge_patch
from eventstore.timetravel import state_at
from projections import FlowQueries, FlowService

from .conftest import Target

OPTIONS = [{"value": "full", "label": "Refund in full"}, {"value": "half", "label": "Refund half"}]


# RFC 7396, appendix A: (state before, patch, result) for the cases a state can be in (an object)
RFC_7396 = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ({"a": "b"}, {"a": {"b": "c", "d": None}}, {"a": {"b": "c"}}),  # nulls under a new object go
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ({"a": [{"x": None}]}, {}, {"a": [{"x": None}]}),
]


@pytest.fixture
def service(flow_store: EventStore) -> FlowService:
    flows = FlowService(flow_store)
    flows.start_flow("f", controller_id="ctl", goal="refund", owner_session_key="sess", state={"n": 1})
    flows.schedule_step("f", step_id="s1", name="lookup", run_id="run-1", position=1)
    return flows


@pytest.fixture
def queries(flow_store: EventStore) -> FlowQueries:
    return FlowQueries(flow_store)


def log_size(service: FlowService) -> int:
    return service.store.last_position()


class TestFlowLifecycle:
    def test_start_advance_wait_resume_finish(self, service: FlowService, queries: FlowQueries) -> None:
        service.advance("f", current_step="s1", state_patch={"n": 2, "seen": ["a"]})
        service.wait("f", waiting_for="human", details={"channel": "slack"})
        assert queries.flow("f").wait == {"waiting_for": "human", "details": {"channel": "slack"}}
        service.resume("f", by="human:ann")
        service.finish("f", result={"ok": True})
        flow = queries.flow("f")
        assert (flow.status, flow.state, flow.result, flow.wait) == (
            "finished",
            {"n": 2, "seen": ["a"]},
            {"ok": True},
            None,
        )
        assert flow.revision == 6 and flow.finished_at is not None

    def test_state_patch_is_a_merge_patch(self, service: FlowService, queries: FlowQueries) -> None:
        service.advance("f", state_patch={"a": {"b": 1, "c": 2}})
        service.advance("f", state_patch={"a": {"b": None, "d": 3}, "n": None})
        assert queries.flow("f").state == {"a": {"c": 2, "d": 3}}

    @pytest.mark.parametrize(("before", "patch", "result"), RFC_7396)
    def test_state_patch_follows_rfc_7396_in_the_read_model_and_time_travel(
        self, flow_store: EventStore, before: dict[str, Any], patch: dict[str, Any], result: dict[str, Any]
    ) -> None:
        flows = FlowService(flow_store)
        flows.start_flow("m", controller_id="c", goal="g", owner_session_key="s", state=before)
        flows.advance("m", state_patch=patch)
        assert merge_patch(copy.deepcopy(before), patch) == result
        assert FlowQueries(flow_store).flow("m").state == result == state_at(flow_store, "m").flow.state

    @pytest.mark.parametrize(("before", "patch"), [({}, [1]), ({}, None), ([], {}), ("a", {"a": 1})])
    def test_merge_patch_of_what_is_not_an_object_is_invalid_input(self, before: Any, patch: Any) -> None:
        with pytest.raises(InvalidInput, match="merge_patch takes two mappings"):
            merge_patch(before, patch)

    def test_starting_twice_is_refused(self, service: FlowService) -> None:
        with pytest.raises(FlowExists, match="flow 'f': was already started"):
            service.start_flow("f", controller_id="c", goal="g", owner_session_key="s")

    def test_unknown_flow(self, service: FlowService) -> None:
        with pytest.raises(FlowNotFound, match="flow 'nope' does not exist"):
            service.advance("nope")

    @pytest.mark.parametrize("ending", ["finish", "fail", "cancel"])
    def test_closed_flows_never_change(self, service: FlowService, ending: str) -> None:
        {
            "finish": lambda: service.finish("f"),
            "fail": lambda: service.fail("f", error="boom"),
            "cancel": lambda: service.cancel("f", reason="user"),
        }[ending]()
        before = log_size(service)
        with pytest.raises(FlowClosed, match="cannot advance it"):
            service.advance("f", current_step="s2")
        with pytest.raises(FlowClosed, match="cannot schedule steps"):
            service.schedule_step("f", step_id="s2", name="n", run_id="run-2")
        with pytest.raises(FlowClosed, match="cannot start its steps"):
            service.start_step("f", "s1")
        assert log_size(service) == before

    def test_repeating_the_same_ending_is_a_no_op(self, service: FlowService) -> None:
        service.finish("f", result={"ok": 1})
        before = log_size(service)
        assert service.finish("f", result={"ok": 1}).positions == ()
        with pytest.raises(FlowClosed, match="already finished; it cannot become failed"):
            service.fail("f", error="late")
        with pytest.raises(FlowClosed):
            service.finish("f", result={"ok": 2})
        assert log_size(service) == before

    def test_resume_requires_waiting(self, service: FlowService) -> None:
        with pytest.raises(InvalidTransition, match="cannot resume: it is running, not waiting"):
            service.resume("f")

    def test_cancel_request_is_recorded_once(self, service: FlowService, queries: FlowQueries) -> None:
        service.request_cancel("f", by="human:ann", reason="wrong order")
        assert service.request_cancel("f", by="human:bob").positions == ()
        assert queries.flow("f").cancel_requested

    def test_stale_expected_revision(self, service: FlowService) -> None:
        with pytest.raises(RevisionMismatch, match="at revision 2, expected 1"):
            service.advance("f", state_patch={"x": 1}, expected_revision=1)
        assert service.advance("f", state_patch={"x": 1}, expected_revision=2).revision == 3


class TestSteps:
    def test_lifecycle_with_a_retry(self, service: FlowService, queries: FlowQueries) -> None:
        service.start_step("f", "s1")
        service.retry_step("f", "s1", error="rate limited")
        service.start_step("f", "s1")
        service.complete_step("f", "s1", result={"rows": 3}, output={"summary": "ok"})
        step = queries.step("f", "s1")
        assert (step.status, step.attempts, step.retry_count, step.result, step.output) == (
            "completed",
            2,
            1,
            {"rows": 3},
            {"summary": "ok"},
        )

    def test_same_run_id_schedules_one_step(self, service: FlowService, queries: FlowQueries) -> None:
        before = log_size(service)
        result = service.schedule_step("f", step_id="other", name="lookup", run_id="run-1")
        assert result.positions == ()
        assert log_size(service) == before
        assert [s.step_id for s in queries.steps("f")] == ["s1"]
        assert queries.step_by_run("f", "run-1").step_id == "s1"

    def test_step_id_reuse_by_another_run_is_refused(self, service: FlowService) -> None:
        with pytest.raises(InvalidTransition, match="step id is already used by another run"):
            service.schedule_step("f", step_id="s1", name="lookup", run_id="run-9")

    @pytest.mark.parametrize("terminal", ["complete", "fail", "skip", "time_out"])
    def test_terminal_steps_never_change(self, service: FlowService, terminal: str) -> None:
        service.start_step("f", "s1")
        end = {
            "complete": lambda: service.complete_step("f", "s1", result={"a": 1}),
            "fail": lambda: service.fail_step("f", "s1", error="boom"),
            "skip": lambda: service.skip_step("f", "s1", reason="not needed"),
            "time_out": lambda: service.time_out_step("f", "s1", reason="lease expired"),
        }[terminal]
        end()
        before = log_size(service)
        assert end().positions == (), "repeating the identical terminal command is a no-op"
        with pytest.raises(StepClosed, match=r"step 's1': is .*; cannot complete it"):
            service.complete_step("f", "s1", result={"different": True})
        with pytest.raises(StepClosed, match="cannot fail it"):
            service.fail_step("f", "s1", error="other")
        with pytest.raises(StepClosed, match="cannot retry it"):
            service.retry_step("f", "s1")
        assert log_size(service) == before

    def test_only_running_steps_retry(self, service: FlowService) -> None:
        with pytest.raises(
            InvalidTransition, match="only a running step can be retried, not a scheduled one"
        ):
            service.retry_step("f", "s1")

    def test_starting_a_running_step_is_refused(self, service: FlowService) -> None:
        service.start_step("f", "s1")
        with pytest.raises(InvalidTransition, match="cannot start a running step"):
            service.start_step("f", "s1")

    def test_unknown_step(self, service: FlowService) -> None:
        with pytest.raises(StepNotFound, match="flow 'f' has no step 'ghost'"):
            service.complete_step("f", "ghost")


class TestGates:
    def open(self, service: FlowService) -> None:
        service.start_step("f", "s1")
        service.open_gate("f", "s1", prompt="Refund $129?", options=OPTIONS, timeout_seconds=3600)

    def test_approval_records_who_and_what(self, service: FlowService, queries: FlowQueries) -> None:
        self.open(service)
        service.approve_gate("f", "s1", by="human:ann", feedback="fine", selections=["half"])
        step = queries.step("f", "s1")
        assert (step.gate_status, step.gate_by, step.gate_selections, step.gate_prompt) == (
            "approved",
            "human:ann",
            ["half"],
            "Refund $129?",
        )
        (event,) = [e for e in service.store.read_flow("f") if e.type == "GateApproved"]
        assert event.metadata["actor"] == "human:ann"

    def test_selection_outside_the_options(self, service: FlowService) -> None:
        self.open(service)
        with pytest.raises(
            SelectionNotAllowed, match=r"\['all'\] is not allowed; the gate's options are \['full', 'half'\]"
        ) as caught:
            service.approve_gate("f", "s1", by="human:ann", selections=["all"])
        assert caught.value.allowed == ["full", "half"]

    def test_approving_a_gate_that_is_not_open(self, service: FlowService) -> None:
        with pytest.raises(GateNotOpen, match="has no open gate \\(gate is never opened\\)"):
            service.approve_gate("f", "s1", by="human:ann")
        self.open(service)
        service.reject_gate("f", "s1", by="human:bob", feedback="no")
        with pytest.raises(GateNotOpen, match="gate is rejected"):
            service.approve_gate("f", "s1", by="human:ann")

    def test_step_cannot_complete_while_its_gate_waits(self, service: FlowService) -> None:
        self.open(service)
        with pytest.raises(GateNotOpen, match="still waiting for a decision"):
            service.complete_step("f", "s1")


class TestLeases:
    def test_same_owner_renews_new_owner_increments(self, service: FlowService) -> None:
        with freeze_time("2030-01-01 12:00:00"):
            first = service.acquire_lease("f", owner_token="w1", ttl_seconds=60)
            renewed = service.acquire_lease("f", owner_token="w1", ttl_seconds=60)
        with freeze_time("2030-01-01 12:01:01"):
            taken = service.acquire_lease("f", owner_token="w2", ttl_seconds=60)
        assert (first.generation, renewed.generation, taken.generation) == (1, 1, 2)
        assert taken.expires_at == datetime(2030, 1, 1, 12, 2, 1, tzinfo=UTC)

    def test_a_lease_ending_after_the_last_recordable_time_is_refused(self, service: FlowService) -> None:
        with freeze_time("9999-12-30 23:00:00"):
            before = log_size(service)
            with pytest.raises(InvalidInput, match=r"would end after the last time a store records"):
                service.acquire_lease("f", owner_token="w1", ttl_seconds=7200)
            assert log_size(service) == before
            lease = service.acquire_lease("f", owner_token="w1", ttl_seconds=60)
        assert lease.expires_at == datetime(9999, 12, 30, 23, 1, tzinfo=UTC)

    def test_unexpired_lease_of_another_owner_is_held(self, service: FlowService) -> None:
        with freeze_time("2030-01-01 12:00:00"):
            service.acquire_lease("f", owner_token="w1", ttl_seconds=60)
        with freeze_time("2030-01-01 12:00:59"), pytest.raises(LeaseHeld, match="leased by 'w1'"):
            service.acquire_lease("f", owner_token="w2", ttl_seconds=60)

    def test_stale_generation_is_lease_lost(self, service: FlowService) -> None:
        with freeze_time("2030-01-01 12:00:00"):
            old = service.acquire_lease("f", owner_token="w1", ttl_seconds=60)
        with freeze_time("2030-01-01 12:05:00"):
            new = service.acquire_lease("f", owner_token="w2", ttl_seconds=60)
            before = log_size(service)
            with pytest.raises(
                LeaseLost, match="caller has 'w1' generation 1, the lease is held by 'w2' at generation 2"
            ) as caught:
                service.start_step("f", "s1", lease=old)
            assert caught.value.current_generation == 2
            with pytest.raises(LeaseLost, match="caller has None"):
                service.start_step("f", "s1")
            assert log_size(service) == before
            service.start_step("f", "s1", lease=new)

    def test_expired_lease_lets_others_act(self, service: FlowService, queries: FlowQueries) -> None:
        with freeze_time("2030-01-01 12:00:00"):
            old = service.acquire_lease("f", owner_token="w1", ttl_seconds=60)
        with freeze_time("2030-01-01 12:01:00.000001"):
            service.time_out_step("f", "s1", reason="worker died")  # no lease needed once it expired
            new = service.acquire_lease("f", owner_token="w2", ttl_seconds=60)
            assert (new.owner_token, new.generation) == ("w2", 2)
            flow = queries.flow("f")
            assert (flow.lease_owner, flow.lease_generation) == ("w2", 2)
            service.schedule_step("f", step_id="s2", name="retry", run_id="run-2", position=2, lease=new)
            before = log_size(service)
            with pytest.raises(LeaseLost, match="caller has 'w1' generation 1, the lease is held by 'w2'"):
                service.start_step("f", "s2", lease=old)
            assert log_size(service) == before
            service.start_step("f", "s2", lease=new)
        assert (queries.step("f", "s1").status, queries.step("f", "s2").status) == ("timed_out", "running")

    def test_release(self, service: FlowService, queries: FlowQueries) -> None:
        lease = service.acquire_lease("f", owner_token="w1", ttl_seconds=60)
        service.release_lease("f", lease)
        assert queries.flow("f").lease_owner is None
        with pytest.raises(LeaseLost):
            service.release_lease("f", lease)


class TestDecisions:
    def test_decision_is_recorded_with_its_reasons(self, service: FlowService) -> None:
        service.record_decision(
            "f",
            actor="agent:refund-bot",
            decision="refund",
            rationale="damaged",
            inputs={"photo": "p.jpg"},
            alternatives=["replace", "deny"],
            model="gpt-x",
            tool="refunds.create",
            confidence=0.9,
            step_id="s1",
        )
        (event,) = [e for e in service.store.read_flow("f") if e.type == "DecisionRecorded"]
        assert event.data["alternatives"] == ["replace", "deny"]
        assert (event.data["confidence"], event.metadata["actor"]) == (0.9, "agent:refund-bot")


class TestReadModels:
    def test_queries_page_and_filter(self, service: FlowService, queries: FlowQueries) -> None:
        for i in range(2, 8):
            service.schedule_step(
                "f", step_id=f"s{i}", name="tool" if i % 2 else "llm", run_id=f"run-{i}", position=i
            )
        service.start_step("f", "s3")
        page = queries.step_history("f", name="tool", limit=2)
        assert [s.step_id for s in page.items] == ["s3", "s5"] and page.total == 3 and page.has_next
        assert [s.step_id for s in queries.step_history("f", from_position=4, to_position=6).items] == [
            "s4",
            "s5",
            "s6",
        ]
        assert [s.step_id for s in queries.step_history("f", status="running").items] == ["s3"]

    def test_flows_by_owner_and_status_and_sessions(self, service: FlowService, queries: FlowQueries) -> None:
        with freeze_time(datetime.now(UTC) + timedelta(seconds=5)):
            service.start_flow("g", controller_id="c", goal="g", owner_session_key="other")
        service.fail("g", error="boom")
        assert [f.flow_id for f in queries.flows(owner="sess").items] == ["f"]
        assert [f.flow_id for f in queries.flows(status="failed").items] == ["g"]
        sessions = queries.sessions().items
        assert [(s.session_key, s.running, s.failed, s.event_count) for s in sessions] == [
            ("other", 0, 1, 2),
            ("sess", 1, 0, 2),
        ]

    def test_service_needs_the_projection(self, target: Target) -> None:
        with (
            target.open() as bare,
            pytest.raises(ProjectionError, match="projections=\\[FlowProjection\\(\\)\\]"),
        ):
            FlowService(bare)


class TestReviewFindings:
    def test_gates_of_a_closed_flow_cannot_be_decided(self, service: FlowService) -> None:
        service.start_step("f", "s1")
        service.open_gate("f", "s1", prompt="ok?", options=OPTIONS)
        service.finish("f")
        with pytest.raises(FlowClosed, match="is finished; its gates cannot be decided"):
            service.approve_gate("f", "s1", by="human:ann", selections=["full"])
        with pytest.raises(FlowClosed):
            service.reject_gate("f", "s1", by="human:ann")

    def test_malformed_gate_options_are_invalid_input(self, service: FlowService) -> None:
        from eventstore import InvalidInput

        with pytest.raises(InvalidInput, match="gate options must be"):
            service.open_gate("f", "s1", prompt="ok?", options=[{"value": "a"}])

    def test_a_different_outcome_for_a_finished_flow(self, service: FlowService) -> None:
        service.finish("f", result={"ok": 1})
        with pytest.raises(FlowClosed, match="is already finished, with a different outcome"):
            service.finish("f", result={"ok": 2})

    def test_unknown_session(self, queries: FlowQueries) -> None:
        from eventstore import SessionNotFound

        with pytest.raises(SessionNotFound, match="no session 'ghost'"):
            queries.session("ghost")


class TestBadCommandInput:
    def test_invalid_field_values_are_invalid_input(self, service: FlowService) -> None:
        from eventstore import InvalidInput

        with pytest.raises(InvalidInput) as raised:
            service.start_flow("g", controller_id="c", goal=None, owner_session_key="s")  # type: ignore[arg-type]
        assert str(raised.value) == "invalid FlowStarted: goal: Input should be a valid string (got None)"
        with pytest.raises(InvalidInput, match="invalid DecisionRecorded"):
            service.record_decision("f", actor="a", decision="d", confidence=float("nan"))
        for ttl in (1e300, float("nan"), 0, -1, True):
            with pytest.raises(InvalidInput, match="ttl_seconds"):
                service.acquire_lease("f", owner_token="w", ttl_seconds=ttl)


class TestBadArguments:
    """Arguments of the wrong shape are the caller's InvalidInput, and nothing is written."""

    @pytest.mark.parametrize(
        ("command", "message"),
        [
            (lambda s: s.advance("f", state_patch="x"), "state_patch must be a mapping"),
            (lambda s: s.advance("f", metadata=[1]), "metadata must be a mapping"),
            (lambda s: s.advance("f", expected_revision="2"), "expected_revision must be None or an int"),
            (lambda s: s.advance("f", expected_revision=True), "expected_revision must be None or an int"),
            (lambda s: s.advance("f", expected_revision=-1), "expected_revision must be None or an int"),
            (lambda s: s.advance("f", state_patch={"x": float("nan")}), "JSON has no NaN"),
            (lambda s: s.wait("f", waiting_for="human", details=[1]), "details must be a mapping"),
            (lambda s: s.finish("f", result="done"), "result must be a mapping"),
            (lambda s: s.complete_step("f", "s1", output=b"x"), "output must be a mapping"),
            (
                lambda s: s.schedule_step("f", step_id="s2", name="n", run_id="r2", task=[1]),
                "task must be a mapping",
            ),
            (
                lambda s: s.schedule_step("f", step_id="s2", name="n", run_id="r2", lease="x"),
                "lease must be the Lease that acquire_lease returned",
            ),
            (lambda s: s.release_lease("f", None), "release_lease needs the Lease"),
            (lambda s: s.open_gate("f", "s1", prompt="ok?", timeout_seconds=-5), "timeout_seconds must be"),
            (lambda s: s.open_gate("f", "s1", prompt="ok?", timeout_seconds=True), "timeout_seconds must be"),
            (lambda s: s.open_gate("f", "s1", prompt="ok?", options=None), "options must be a list"),
            (
                lambda s: s.record_decision("f", actor="agent", decision="d", rationale="r", inputs=[1]),
                "inputs must be a mapping",
            ),
        ],
    )
    def test_the_wrong_shape_is_refused(self, service: FlowService, command: Any, message: str) -> None:
        before = log_size(service)
        with pytest.raises(InvalidInput, match=re.escape(message)):
            command(service)
        assert log_size(service) == before

    def test_selections_given_as_a_string_are_not_taken_for_its_letters(self, service: FlowService) -> None:
        service.open_gate("f", "s1", prompt="which?", options=[{"value": "a", "label": "A"}])
        before = log_size(service)
        with pytest.raises(InvalidInput, match="selections must be a list, not str"):
            service.approve_gate("f", "s1", by="human:ann", selections="a")
        assert log_size(service) == before
