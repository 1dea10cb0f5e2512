"""Bad input to FlowService commands: a clear error, and nothing written, on every backend alike."""

from __future__ import annotations

import re
from typing import Any

import pytest

from eventstore import EventStore, InvalidEvent, InvalidInput
from eventstore.audit import audit_trail, find_event
from eventstore.errors import InvalidTransition
from eventstore.timetravel import diff, diff_flows, fork, replay, state_at, what_if
from projections import FlowQueries, FlowService

COMMANDS = {
    "start_step": lambda s, step_id: s.start_step("f", step_id),
    "complete_step": lambda s, step_id: s.complete_step("f", step_id),
    "fail_step": lambda s, step_id: s.fail_step("f", step_id, error="e"),
    "skip_step": lambda s, step_id: s.skip_step("f", step_id),
    "time_out_step": lambda s, step_id: s.time_out_step("f", step_id),
    "retry_step": lambda s, step_id: s.retry_step("f", step_id),
    "open_gate": lambda s, step_id: s.open_gate("f", step_id, prompt="ok?"),
    "approve_gate": lambda s, step_id: s.approve_gate("f", step_id, by="ann"),
    "reject_gate": lambda s, step_id: s.reject_gate("f", step_id, by="ann"),
    "schedule_step": lambda s, step_id: s.schedule_step("f", step_id=step_id, name="n", run_id="r9"),
}
BAD_IDS = [
    (b"s1", "step_id must be a string"),
    (["s1"], "step_id must be a string"),
    (2**63, "step_id must be a string"),
    (5, "step_id must be a string"),
    (1.5, "step_id must be a string"),
    (None, "step_id must be a string"),
    ("s\x00", "step_id must be valid UTF-8 text without NUL"),
    ("s\ud800", "step_id must be valid UTF-8 text without NUL"),
    ("s" * 501, "step_id is 501 characters long; names and keys take at most 500"),
]


@pytest.fixture
def service(flow_store: EventStore) -> FlowService:
    flows = FlowService(flow_store)
    flows.start_flow("f", controller_id="ctl", goal="g", owner_session_key="sess")
    flows.schedule_step("f", step_id="s1", name="lookup", run_id="r1")
    return flows


@pytest.mark.parametrize("command", COMMANDS)
def test_a_bad_step_id_is_invalid_input(service: FlowService, command: str) -> None:
    before = service.store.last_position()
    for step_id, message in BAD_IDS:
        with pytest.raises(InvalidInput, match=re.escape(message)):
            COMMANDS[command](service, step_id)
    assert service.store.last_position() == before


@pytest.mark.parametrize(("run_id", "message"), [(b"r1", "run_id must be a string"), ("r\x00", "NUL")])
def test_a_bad_run_id_is_invalid_input(service: FlowService, run_id: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        service.schedule_step("f", step_id="s2", name="n", run_id=run_id)


def test_a_bytes_step_id_does_not_reschedule_a_completed_step(
    service: FlowService, flow_store: EventStore
) -> None:
    service.start_step("f", "s1")
    service.complete_step("f", "s1", result={"ok": True})
    with pytest.raises(InvalidTransition, match="step id is already used"):
        service.schedule_step("f", step_id="s1", name="n", run_id="r2")
    with pytest.raises(InvalidInput):
        service.schedule_step("f", step_id=b"s1", name="n", run_id="r2")  # type: ignore[arg-type]
    step = FlowQueries(flow_store).step("f", "s1")
    assert (step.status, step.run_id, step.result) == ("completed", "r1", {"ok": True})


def test_a_bytes_run_id_does_not_schedule_a_second_step_for_the_run(
    service: FlowService, flow_store: EventStore
) -> None:
    before = flow_store.last_position()
    with pytest.raises(InvalidInput):
        service.schedule_step("f", step_id="s2", name="n", run_id=b"r1")  # type: ignore[arg-type]
    assert flow_store.last_position() == before
    assert [s.step_id for s in FlowQueries(flow_store).steps("f")] == ["s1"]


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def circular() -> dict[str, Any]:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    return loop


@pytest.mark.parametrize("payload", [circular(), {"x": nested(300)}], ids=["circular", "deep"])
def test_a_payload_pydantic_cannot_serialise_is_invalid_event(service: FlowService, payload: Any) -> None:
    service.complete_step("f", "s1", result={"ok": True})
    service.finish("f", result={"ok": True})
    service.start_flow("open", controller_id="c", goal="g", owner_session_key="s")
    before = service.store.last_position()
    for command in (
        lambda: service.advance("open", state_patch=payload),
        lambda: service.record_decision("open", actor="a", decision="d", inputs=payload),
        lambda: service.start_flow("g", controller_id="c", goal="g", owner_session_key="s", state=payload),
        lambda: service.complete_step("f", "s1", result=payload),
        lambda: service.finish("f", result=payload),
    ):
        with pytest.raises(InvalidEvent, match="cannot be serialised"):
            command()
    assert service.store.last_position() == before


def test_a_very_deep_expected_revision_is_invalid_input_not_recursion_error(service: FlowService) -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(10_000):
        node["a"] = {}
        node = node["a"]
    before = service.store.last_position()
    with pytest.raises(InvalidInput, match="expected_revision must be None or an int >= 0") as raised:
        service.advance("f", current_step="x", expected_revision=deep)  # type: ignore[arg-type]
    assert len(str(raised.value)) < 300
    assert service.store.last_position() == before


WHO = {
    "approve_gate": lambda s, who: s.approve_gate("f", "s1", by=who),
    "reject_gate": lambda s, who: s.reject_gate("f", "s1", by=who),
    "request_cancel": lambda s, who: s.request_cancel("f", by=who),
    "resume": lambda s, who: s.resume("f", by=who),
    "record_decision": lambda s, who: s.record_decision("f", actor=who, decision="d"),
    "acquire_lease": lambda s, who: s.acquire_lease("f", owner_token=who, ttl_seconds=60),
}


@pytest.mark.parametrize("command", WHO)
def test_who_decided_must_be_named_before_anything_is_read(service: FlowService, command: str) -> None:
    """An approval by '' named nobody (and `audit --actor` cannot ask for ''); by=5 was a GateNotOpen."""
    service.finish("f")  # whatever the flow's state would say, the argument is refused first
    before = service.store.last_position()
    for who, message in [("", "a non-empty string"), (5, "must be a string, not 5"), (b"ann", "a string")]:
        with pytest.raises(InvalidInput, match=re.escape(message)):
            WHO[command](service, who)
    assert service.store.last_position() == before


NEEDS_A_STORE = {
    "FlowService": lambda s: FlowService(s),
    "FlowQueries": lambda s: FlowQueries(s),
    "state_at": lambda s: state_at(s, "f"),
    "replay": lambda s: replay(s, "f"),
    "diff": lambda s: diff(s, "f", 0, 1),
    "diff_flows": lambda s: diff_flows(s, "f", "g"),
    "fork": lambda s: fork(s, "f", at_revision=1, new_flow_id="g"),
    "what_if": lambda s: what_if(s, "f"),
    "audit_trail": lambda s: audit_trail(s, flow_id="f"),
    "find_event": lambda s: find_event(s, "01a2016a-1229-7a96-a0c1-7cfef8fa0c1b"),
}


@pytest.mark.parametrize("call", NEEDS_A_STORE)
def test_a_url_where_a_store_belongs_is_invalid_input(call: str) -> None:
    """A URL (or None) passed for the store was an AttributeError from deep inside."""
    for value in ["sqlite:///audit.db", None]:
        with pytest.raises(InvalidInput, match=r"store must be an EventStore, not .*EventStore\.open\(url"):
            NEEDS_A_STORE[call](value)
