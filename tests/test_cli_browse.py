"""The browsing and audit commands: flows, show, history, audit, tail, stats; human and --json output."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result
from freezegun import freeze_time

from eventstore import NewEvent
from eventstore.audit import caused_by, find_event
from eventstore.cli import main
from eventstore.timetravel import fork
from projections import FlowProjection, FlowService
from projections.demo import record_refund_flow

from .conftest import Target

ROOT = Path(__file__).resolve().parent.parent
D1_AT = datetime(2030, 1, 1, 23, 0, tzinfo=UTC)  # every event of d1, the evening before...
F2_AT = datetime(2030, 1, 2, 0, 30, tzinfo=UTC)  # ...every event of f2, just after midnight
NOW = F2_AT + timedelta(minutes=30)  # when the time-dependent commands run


def cli(
    target: Target, *args: str, code: int = 0, color: bool = False, env: dict[str, str] | None = None
) -> Result:
    schema = target.options.get("schema")
    prefix = ["--url", target.url, *(["--schema", schema] if schema else [])]
    result = CliRunner().invoke(main, [*prefix, *args], color=color, env=env)
    assert result.exit_code == code, result.output
    return result


def lines(result: Result) -> list[dict]:  # type: ignore[type-arg]
    return [orjson.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture
def recorded(target: Target) -> Target:
    """The demo's refund flow as d1 (finished), and f2 of session s2: a decision causing a failing step.

    Recorded at frozen times (D1_AT, F2_AT), so what the commands print does not depend on the day.
    """
    cli(target, "db", "upgrade")
    with target.open(projections=[FlowProjection()]) as store, freeze_time(D1_AT) as clock:
        record_refund_flow(store, "d1")
        clock.move_to(F2_AT)
        flows = FlowService(store)
        flows.start_flow("f2", controller_id="bot", goal="pay", owner_session_key="s2")
        decided = flows.record_decision(
            "f2", actor="agent:bot", decision="pay now", metadata={"correlation_id": "r-9"}
        )
        cause = caused_by(find_event(store, decided.event_ids[0]))
        flows.schedule_step("f2", step_id="pay", name="pay", run_id="f2/pay", metadata=cause)
        flows.start_step("f2", "pay")
        flows.fail_step("f2", "pay", error="card declined", actor="worker-9")
        flows.fail("f2", error="payment failed")
    return target


class TestFlows:
    def test_lists_flows_in_a_table(self, recorded: Target) -> None:
        out = cli(recorded, "flows").output.splitlines()
        assert out[0].split() == ["FLOW", "STATUS", "STEP", "REV", "SESSION", "UPDATED", "GOAL"]
        assert out[1].split()[:4] == ["d1", "finished", "refund", "16"] and out[2].split()[:2] == [
            "f2",
            "failed",
        ]
        assert out[-1] == "2 flows, showing 1-2"

    def test_filters_and_pages(self, recorded: Target) -> None:
        assert "f2" not in cli(recorded, "flows", "--status", "finished").output
        assert "d1" not in cli(recorded, "flows", "--session", "s2").output
        assert "next page: --offset 1" in cli(recorded, "flows", "--limit", "1").output
        page = orjson.loads(cli(recorded, "flows", "--json", "--offset", "1").stdout)
        assert (page["total"], page["offset"], [f["flow_id"] for f in page["items"]]) == (2, 1, ["f2"])
        assert page["has_next"] is False
        first = orjson.loads(cli(recorded, "flows", "--json", "--limit", "1").stdout)
        assert (first["total"], len(first["items"]), first["has_next"]) == (2, 1, True)


class TestShow:
    def test_summary_and_steps(self, recorded: Target) -> None:
        out = cli(recorded, "show", "d1").output
        assert "status      finished at revision 16 (16 events)" in out
        assert "session sess-7   origin support-chat" in out
        step = next(line for line in out.splitlines() if line.startswith("2 "))
        assert step.split()[:6] == ["2", "refund", "issue_refund", "completed", "1", "approved"]
        data = orjson.loads(cli(recorded, "show", "f2", "--json").stdout)
        assert (
            data["flow"]["error"]["error"] == "payment failed" and data["steps"]["pay"]["status"] == "failed"
        )

    def test_a_fork_of_a_finished_flow_shows_no_negative_duration(self, recorded: Target) -> None:
        with recorded.open(projections=[FlowProjection()]) as store, freeze_time(NOW):
            fork(store, "d1", at_revision=16, new_flow_id="d1-fork")
        out = cli(recorded, "show", "d1-fork").output
        assert "ended 2030-01-01 23:00:00 (before it started here: a fork keeps its origin's end)" in out
        assert "took -" not in out

    def test_unknown_flow_is_one_line(self, recorded: Target) -> None:
        assert cli(recorded, "show", "nope", code=1).output == "error: flow 'nope' does not exist\n"

    def test_events_no_flow_started_are_said_to_be_no_flow_not_missing(self, recorded: Target) -> None:
        with recorded.open() as store:
            store.append("mc", [NewEvent("Noted", {"i": i}) for i in range(3)])
        assert cli(recorded, "show", "mc", code=1).output == (
            "error: 'mc' has 3 events but is not a flow: no FlowStarted or FlowForked started it through "
            "the flow vocabulary, so it has no summary or steps; `eventstore history mc` shows its events\n"
        )
        assert len(cli(recorded, "history", "mc").output.splitlines()) == 4

    def test_a_flow_the_read_model_lacks_is_said_to_be_in_the_log(self, recorded: Target) -> None:
        """Started by a store opened without FlowProjection: a flow, which a rebuild folds in."""
        with recorded.open() as store:
            store.append("quiet", [NewEvent("FlowStarted", {"controller_id": "c", "goal": "g"})])
        assert cli(recorded, "show", "quiet", code=1).output == (
            "error: flow 'quiet' is in the log (1 event) but not in the flows read model: it was written "
            "by a store opened without FlowProjection; `eventstore rebuild flows` folds it in\n"
        )
        cli(recorded, "rebuild", "flows")
        assert "quiet" in cli(recorded, "show", "quiet").output

    def test_a_step_whose_clock_stepped_back_took_an_unknown_time(self, recorded: Target) -> None:
        with recorded.open(projections=[FlowProjection()]) as store, freeze_time(NOW) as clock:
            flows = FlowService(store)
            flows.start_flow("back", controller_id="c", goal="g", owner_session_key="s")
            flows.schedule_step("back", step_id="s", name="tool", run_id="r")
            flows.start_step("back", "s")
            clock.move_to(NOW - timedelta(days=1000))  # an NTP correction of a clock far ahead
            flows.complete_step("back", "s", result={})
        row = cli(recorded, "show", "back").output.splitlines()[-1]
        assert "unknown (clock stepped back)" in row and "-8640" not in row
        span = cli(recorded, "history", "back").output.splitlines()[-1]
        assert span.endswith("1 attempt · unknown (clock stepped back)")


class TestHistory:
    def test_a_step_reads_as_one_span(self, recorded: Target) -> None:
        out = cli(recorded, "history", "d1").output.splitlines()
        assert out[0].startswith("d1  refund order #1042  finished, revision 16")
        assert [line.split()[0] for line in out[2:]] == [
            "r1",
            "r2",
            "r3-7",
            "r8",
            "r9-13",
            "r14",
            "r15",
            "r16",
        ]
        assert "step lookup (lookup_order)" in out[4] and "completed · 2 attempts · 1 retry" in out[4]
        assert "gate approved by human:ann" in out[6]

    def test_events_are_listed_under_their_span(self, recorded: Target) -> None:
        out = cli(recorded, "history", "d1", "--events").output.splitlines()
        assert out[5].split()[:3] == ["r3", "23:00:00.000", "StepScheduled"] and out[5].startswith("  r3")
        assert len(out) == 2 + 8 + 10

    def test_json_is_one_event_per_line(self, recorded: Target) -> None:
        events = lines(cli(recorded, "history", "d1", "--json"))
        assert [e["revision"] for e in events] == list(range(1, 17))
        assert events[4]["step_id"] == "lookup" and events[4]["type"] == "StepRetried"

    def test_unknown_flow(self, recorded: Target) -> None:
        assert cli(recorded, "history", "nope", code=1).output == "error: flow 'nope' does not exist\n"


class TestAudit:
    def test_decisions_gates_and_failures(self, recorded: Target) -> None:
        out = cli(recorded, "audit").output
        labels = [line.split()[3] for line in out.splitlines() if line[:2] == "20"]
        assert labels == ["DECISION", "GATE", "APPROVED", "DECISION", "FAILED", "FLOW"]
        assert 'saw "Refund $129.00 to the customer\'s card?" [approve|deny], opened at d1@10' in out
        assert "step pay: card declined" in out and out.endswith(
            "6 entries: 2 decisions, 2 gates, 2 failures\n"
        )

    def test_scopes_and_types(self, recorded: Target) -> None:
        entries = lines(cli(recorded, "audit", "--session", "s2", "--type", "failure", "--json"))
        assert [(e["type"], e["error"]) for e in entries] == [
            ("StepFailed", "card declined"),
            ("FlowFailed", "payment failed"),
        ]
        entries = lines(cli(recorded, "audit", "--actor", "human:ann", "--json"))
        assert [(e["type"], e["selections"], e["prompt"]) for e in entries] == [
            ("GateApproved", ["approve"], "Refund $129.00 to the customer's card?")
        ]
        assert lines(cli(recorded, "audit", "--correlation", "r-9", "--json"))[0]["decision"] == "pay now"

    def test_ages_count_back_from_now(self, recorded: Target) -> None:
        with freeze_time(NOW):  # an hour back is midnight: f2 is within it, d1 before it
            recent = lines(cli(recorded, "audit", "--since", "1h", "--json"))
            older = lines(cli(recorded, "audit", "--until", "1h", "--json"))
        assert [(e["flow_id"], e["type"]) for e in recent] == [
            ("f2", "DecisionRecorded"),
            ("f2", "StepFailed"),
            ("f2", "FlowFailed"),
        ]
        assert [(e["flow_id"], e["type"]) for e in older] == [
            ("d1", "DecisionRecorded"),
            ("d1", "GateOpened"),
            ("d1", "GateApproved"),
        ]

    def test_why_walks_causes_and_effects(self, recorded: Target) -> None:
        out = cli(recorded, "audit", "--why", "f2@3").output
        assert (
            "f2@3 StepScheduled" in out and "what led to it, nearest first:\n  f2@2  DecisionRecorded" in out
        )
        explained = orjson.loads(cli(recorded, "audit", "--why", "f2@2", "--json").stdout)
        assert [(e["type"], e["depth"]) for e in explained["effects"]] == [("StepScheduled", 1)]
        assert explained["event"]["metadata"] == {"actor": "agent:bot", "correlation_id": "r-9"}

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--flow", "nope"], "error: flow 'nope' does not exist"),
            (["--since", "yesterday"], "error: 'yesterday' is not a time"),
            (["--type", "FlowStarted"], "error: --type 'FlowStarted' is not one of decision"),
            (["--why", "nope@1"], "error: no event nope@1"),
            (["--why", "d1@0"], "error: no event d1@0: revisions start at 1"),
            (["--why", "xyz"], "error: not an event id"),
        ],
    )
    def test_bad_input_is_one_line(self, recorded: Target, args: list[str], message: str) -> None:
        out = cli(recorded, "audit", *args, code=1).output
        assert out.startswith(message) and out.count("\n") == 1


class TestTail:
    def test_from_a_position_until_idle(self, recorded: Target) -> None:
        out = cli(recorded, "tail", "--from", "15", "--until-idle").output.splitlines()
        assert [line.split()[0] for line in out] == ["#16", "#17", "#18", "#19", "#20", "#21", "#22"]
        assert "d1@16" in out[0] and "LeaseReleased" in out[0]

    def test_a_flow_and_types_as_json(self, recorded: Target) -> None:
        events = lines(
            cli(
                recorded,
                "tail",
                "--from",
                "0",
                "--flow",
                "f2",
                "--type",
                "StepFailed",
                "--json",
                "--until-idle",
            )
        )
        assert [(e["flow_id"], e["revision"], e["data"]["error"]) for e in events] == [
            ("f2", 5, "card declined")
        ]
        assert len(lines(cli(recorded, "tail", "--from", "0", "--limit", "3", "--json"))) == 3

    @pytest.mark.parametrize(
        ("stop", "code", "said"),
        [
            (signal.SIGINT, 130, "interrupted\n"),  # as every command after Ctrl-C (docs/cli.md)
            (signal.SIGTERM, 0, ""),  # a supervisor's stop ends the job, no failure
        ],
    )
    def test_follows_live_and_stops_on_a_signal_saying_where(
        self, recorded: Target, stop: signal.Signals, code: int, said: str
    ) -> None:
        command = [sys.executable, "-m", "eventstore", "--url", recorded.url]
        if "schema" in recorded.options:
            command += ["--schema", recorded.options["schema"]]
        follower = subprocess.Popen(
            [*command, "tail", "--from", "22", "--interval", "0.05"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            with recorded.open(projections=[FlowProjection()]) as store:
                FlowService(store).start_flow("live", controller_id="c", goal="g", owner_session_key="s")
            assert follower.stdout is not None
            ready, _, _ = select.select([follower.stdout], [], [], 60)
            assert ready, "tail printed nothing within a minute"
            first = follower.stdout.readline()
            assert "live@1" in first and "FlowStarted" in first
        finally:
            follower.send_signal(stop)
            try:
                _, err = follower.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                follower.kill()
                raise
        assert (follower.returncode, err) == (code, "stopped after 1 event, at position 23\n" + said)


class TestStats:
    def test_counts_sizes_and_days(self, recorded: Target) -> None:
        with freeze_time(NOW):
            out = cli(recorded, "stats").output
            figures = orjson.loads(cli(recorded, "stats", "--json", "--days", "3").stdout)
        assert "events     22 (last position 22)" in out
        assert "flows      2: 1 finished, 1 failed" in out and "sessions   2" in out
        assert figures["flows"] == {
            "total": 2,
            "running": 0,
            "waiting": 0,
            "finished": 1,
            "failed": 1,
            "cancelled": 0,
        }
        assert figures["db_bytes"] > 0
        assert figures["events_per_day"] == [
            {"day": "2029-12-31", "events": 0},
            {"day": "2030-01-01", "events": 16},
            {"day": "2030-01-02", "events": 6},
        ]

    def test_json_times_are_spelt_as_the_events_are(self, recorded: Target) -> None:
        with freeze_time(NOW):
            figures = orjson.loads(cli(recorded, "stats", "--json").stdout)
        first = lines(cli(recorded, "history", "d1", "--json"))[0]["recorded_at"]
        last = lines(cli(recorded, "history", "f2", "--json"))[-1]["recorded_at"]
        assert (figures["first_event_at"], figures["last_event_at"]) == (first, last)
        assert (first, last) == ("2030-01-01T23:00:00.000000Z", "2030-01-02T00:30:00.000000Z")


class TestPresentation:
    def test_colour_only_when_wanted(self, recorded: Target) -> None:
        assert "\x1b[" in cli(recorded, "flows", color=True).output
        assert "\x1b[" not in cli(recorded, "flows").output
        assert "\x1b[" not in cli(recorded, "flows", color=True, env={"NO_COLOR": "1"}).output

    def test_bad_url_is_one_line(self) -> None:
        result = CliRunner().invoke(main, ["--url", "nonsense://", "flows"])
        assert (result.exit_code, result.output) == (
            1,
            "error: unsupported database 'nonsense': use sqlite:/// or postgresql://\n",
        )

    def test_verify_shows_a_progress_bar_on_a_terminal(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'p.db'}"
        CliRunner().invoke(main, ["--url", url, "demo"])
        leader, follower = pty.openpty()
        done = subprocess.run(
            [sys.executable, "-m", "eventstore", "--url", url, "verify"],
            stdout=subprocess.PIPE,
            stderr=follower,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=False,
        )
        os.close(follower)
        drawn = read_to_the_end(leader).decode()
        os.close(leader)
        assert done.returncode == 0 and b"OK: 24 events" in done.stdout
        assert "verifying" in drawn and "24/24" in drawn


def read_to_the_end(terminal: int) -> bytes:
    """All a pty holds once its child is gone: Linux says EIO when it is drained, others an empty read."""
    chunks = []
    while select.select([terminal], [], [], 60)[0]:
        try:
            chunk = os.read(terminal, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)
