"""What `state` and `diff` say to people: true about the flow's start, whole steps, no Python None."""

from __future__ import annotations

from click.testing import CliRunner

from eventstore.cli import main
from eventstore.integrity import format_time
from projections import FlowProjection
from projections.demo import record_refund_flow

from .conftest import Target


def run(target: Target, *args: str) -> str:
    schema = target.options.get("schema")
    prefix = ["--url", target.url, *(["--schema", schema] if schema else [])]
    result = CliRunner().invoke(main, [*prefix, *args])
    assert result.exit_code == 0, result.output
    return result.output


def recorded(target: Target) -> str:
    """The demo's refund flow as d1; the time its first event was recorded."""
    with target.open(projections=[FlowProjection()]) as store:
        record_refund_flow(store, "d1")
        (first,) = store.read_flow("d1", limit=1)
    return format_time(first.recorded_at)[:19].replace("T", " ")


class TestState:
    def test_a_time_before_the_flow_began_says_when_it_began(self, target: Target) -> None:
        began = recorded(target)
        out = run(target, "state", "d1", "--at", "2020-01-01T00:00Z")
        assert out == (
            f"d1: no state at 2020-01-01T00:00Z, before the flow began at {began} UTC (revision 1)\n"
        )
        assert "before the flow began" in run(target, "state", "d1", "--at", "0")

    def test_no_current_step_is_said_in_words_and_gates_show_who_decided(self, target: Target) -> None:
        recorded(target)
        out = run(target, "state", "d1", "--at", "5")
        assert "None" not in out and "d1 at revision 5: running, no current step" in out
        assert "step lookup: scheduled (1 attempt, 1 retry, last error: orders API timed out)" in out
        assert "step refund: completed (1 attempt, gate approved by human:ann)" in run(target, "state", "d1")


class TestDiff:
    def test_a_header_names_the_flow_and_revisions(self, target: Target) -> None:
        recorded(target)
        out = run(target, "diff", "d1", "8", "12").splitlines()
        assert out[0] == "d1: from revision 8 to 12 (4 events)"
        events = ["  r9 StepScheduled", "  r10 GateOpened", "  r11 GateApproved", "  r12 StepStarted"]
        assert out[1:5] == events

    def test_the_same_revision_twice_says_no_changes(self, target: Target) -> None:
        recorded(target)
        assert run(target, "diff", "d1", "5", "5") == "d1: from revision 5 to 5\n  no changes\n"

    def test_a_reversed_diff_lists_the_events_as_undone(self, target: Target) -> None:
        recorded(target)
        out = run(target, "diff", "d1", "12", "8").splitlines()
        assert out[0] == "d1: from revision 12 to 8 (4 events undone)"
        assert out[1:3] == ["  undone r12 StepStarted", "  undone r11 GateApproved"]
        assert not any(line.startswith("  r") for line in out)
        step = "step refund (issue_refund): running (1 attempt, gate approved by human:ann)"
        assert f"- /steps/refund: {step}" in out
