"""Questions across flows say what retention pruned out of their reach, instead of answering falsely."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from eventstore import EventStore, SessionNotFound
from eventstore.audit import audit_trail
from eventstore.cli import main
from eventstore.exporting import export_events
from eventstore.retention import run_retention
from eventstore.stats import log_stats
from projections import FlowProjection, FlowService

from .conftest import Target

T0 = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def pruned(target: Target, tmp_path: Path) -> Iterator[EventStore]:
    """Flow z1 of session sess-Z (a gate approved by human:kim) pruned; flow live of sess-L kept."""
    now = [T0]
    with target.open(projections=[FlowProjection()], clock=lambda: now[0]) as store:
        flows = FlowService(store)
        flows.start_flow("z1", controller_id="bot", goal="pay", owner_session_key="sess-Z")
        flows.schedule_step("z1", step_id="pay", name="pay", run_id="z1/1")
        flows.open_gate("z1", "pay", prompt="Pay?", actor="agent:bot")
        flows.approve_gate("z1", "pay", by="human:kim")
        flows.finish("z1")
        flows.start_flow("live", controller_id="bot", goal="other", owner_session_key="sess-L")
        flows.record_decision("live", actor="human:kim", decision="wait")
        now[0] = T0 + timedelta(days=2)
        report = run_retention(store, {"finished": 1}, tmp_path / "archives")
        assert report.pruned == ("z1",)
        yield store


def cli(target: Target, *args: str, code: int = 0) -> Result:
    schema = target.options.get("schema")
    prefix = ["--url", target.url, *(["--schema", schema] if schema else [])]
    result = CliRunner().invoke(main, [*prefix, *args])
    assert result.exit_code == code, result.output
    return result


class TestLibrary:
    def test_a_session_whose_flows_were_all_pruned_is_not_called_unknown(self, pruned: EventStore) -> None:
        trail = audit_trail(pruned, session="sess-Z")
        assert list(trail) == []
        assert trail.pruned is not None and (trail.pruned.flows, trail.pruned.events) == (1, 5)
        assert trail.pruned.session == "sess-Z" and trail.pruned.unknown_owner == 0

    def test_an_actor_trail_says_the_pruned_flows_were_not_searched(self, pruned: EventStore) -> None:
        trail = audit_trail(pruned, actor="human:kim")
        assert [entry.flow_id for entry in trail] == ["live"]
        assert trail.pruned is not None and trail.pruned.archives == 1
        assert "1 flow (5 events) pruned by retention into 1 archive was not searched" in trail.pruned.note()

    def test_a_flow_trail_has_nothing_left_out(self, pruned: EventStore) -> None:
        assert audit_trail(pruned, flow_id="live").pruned is None

    def test_a_store_that_pruned_nothing_still_knows_unknown_sessions(self, target: Target) -> None:
        with target.open() as store, pytest.raises(SessionNotFound, match="no session 'nope'") as caught:
            audit_trail(store, session="nope")
        assert caught.value.pruned is None

    def test_exporting_a_session_of_only_pruned_flows_says_why_it_is_empty(
        self, pruned: EventStore, tmp_path: Path
    ) -> None:
        with pytest.raises(SessionNotFound, match=r"session 'sess-Z' owns 1 flow .* not searched") as caught:
            export_events(pruned, tmp_path / "out.jsonl", session="sess-Z")
        assert caught.value.pruned is not None and caught.value.pruned.flows == 1
        assert not (tmp_path / "out.jsonl").exists()

    def test_stats_count_the_pruned_flows_and_events(self, pruned: EventStore) -> None:
        figures = log_stats(pruned, days=0)
        assert figures.pruned is not None and (figures.pruned.flows, figures.pruned.events) == (1, 5)


class TestCommands:
    def test_audit_of_a_session_says_its_flows_were_pruned(self, pruned: EventStore, target: Target) -> None:
        result = cli(target, "audit", "--session", "sess-Z")
        assert "error" not in result.output
        assert "0 entries" in result.stderr
        assert "note: session 'sess-Z' owns 1 flow (5 events) pruned by retention" in result.stderr
        assert "eventstore archive restore ARCHIVE" in result.stderr

    def test_audit_of_an_actor_says_what_it_did_not_search(self, pruned: EventStore, target: Target) -> None:
        result = cli(target, "audit", "--actor", "human:kim")
        assert "1 entry" in result.stderr and "note: 1 flow" in result.stderr

    def test_audit_json_ends_with_what_was_pruned(self, pruned: EventStore, target: Target) -> None:
        lines = [
            orjson.loads(line)
            for line in cli(target, "audit", "--actor", "human:kim", "--json").stdout.splitlines()
        ]
        assert [line["kind"] for line in lines] == ["decision", "pruned"]
        assert (lines[-1]["flows"], lines[-1]["events"], lines[-1]["archives"]) == (1, 5, 1)

    def test_flows_of_a_session_says_its_flows_were_pruned(self, pruned: EventStore, target: Target) -> None:
        result = cli(target, "flows", "--session", "sess-Z")
        assert "0 flows" in result.stdout and "note: session 'sess-Z' owns 1 flow" in result.stderr
        listed = orjson.loads(cli(target, "flows", "--session", "sess-Z", "--json").stdout)
        own = {"flows": 1, "events": 5, "archives": 1, "session": "sess-Z", "unknown_owner": 0}
        assert listed["total"] == 0 and listed["pruned"] == own

    def test_export_of_a_session_of_pruned_flows_fails_saying_why(
        self, pruned: EventStore, target: Target, tmp_path: Path
    ) -> None:
        result = cli(target, "export", str(tmp_path / "out.jsonl"), "--session", "sess-Z", code=1)
        assert (
            "no flow of session 'sess-Z' is in the store, but session 'sess-Z' owns 1 flow" in result.stderr
        )
        assert "Traceback" not in result.output

    def test_stats_show_the_pruned_flows(self, pruned: EventStore, target: Target) -> None:
        assert "pruned     1 flow (5 events) in 1 archive" in cli(target, "stats", "--days", "0").stdout
        figures = orjson.loads(cli(target, "stats", "--days", "0", "--json").stdout)
        assert figures["pruned"] == {"flows": 1, "events": 5, "archives": 1}
