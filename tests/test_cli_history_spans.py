"""`history`'s step spans keep every gate decision and name who scheduled the step."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from eventstore import EventStore
from eventstore.cli import main
from eventstore.timeline import StepSpan, timeline
from projections import FlowProjection, FlowService


def recorded(tmp_path: Path) -> str:
    """Flow p: step pay's gate rejected by human:bob, reopened, approved by human:eve, the step
    completed; step s2's gate rejected and reopened, still open."""
    url = f"sqlite:///{tmp_path / 'events.db'}"
    with EventStore.open(url, projections=[FlowProjection()]) as store:
        flows = FlowService(store)
        flows.start_flow("p", controller_id="c", goal="pay", owner_session_key="s", actor="agent:bot")
        flows.schedule_step(
            "p", step_id="pay", name="pay", run_id="p/1", task={}, position=1, actor="agent:bot"
        )
        flows.open_gate("p", "pay", prompt="pay $900?")
        flows.reject_gate("p", "pay", by="human:bob", feedback="too much")
        flows.open_gate("p", "pay", prompt="pay $500?")
        flows.approve_gate("p", "pay", by="human:eve")
        flows.start_step("p", "pay")
        flows.complete_step("p", "pay", result={})
        flows.schedule_step("p", step_id="s2", name="s2", run_id="p/2", task={}, position=2)
        flows.open_gate("p", "s2", prompt="ok?", actor="agent:gatekeeper")
        flows.reject_gate("p", "s2", by="human:bob")
        flows.open_gate("p", "s2", prompt="ok now?")
    return url


def test_a_span_lists_a_rejection_before_the_approval_and_who_scheduled_it(tmp_path: Path) -> None:
    url = recorded(tmp_path)
    result = CliRunner().invoke(main, ["--url", url, "history", "p"])
    assert result.exit_code == 0, result.output
    pay = next(line for line in result.output.splitlines() if "step pay" in line)
    assert "gate rejected by human:bob, then approved by human:eve" in pay
    assert pay.split()[5] == "agent:bot"  # REV, TIME, "step", "pay", "(pay)", then the actor
    s2 = next(line for line in result.output.splitlines() if "step s2" in line)
    assert "gate rejected by human:bob, then open" in s2 and "agent:gatekeeper" in s2


def test_the_span_records_each_decision_and_the_actor(tmp_path: Path) -> None:
    with EventStore.open(recorded(tmp_path), create=False) as store:
        spans = [item for item in timeline(store.read_flow("p")).items if isinstance(item, StepSpan)]
    assert [(span.gate_decisions, span.actor) for span in spans] == [
        ((("rejected", "human:bob"), ("approved", "human:eve")), "agent:bot"),
        ((("rejected", "human:bob"),), "agent:gatekeeper"),
    ]
