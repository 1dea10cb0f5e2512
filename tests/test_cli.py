"""The command line: one library call per command, clean errors, --json for scripts."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from freezegun import freeze_time

from eventstore import EventStore, NewEvent
from eventstore.checkpoints import generate_key, take_checkpoint
from eventstore.cli import main
from eventstore.cli.output import cut, live_line, printable
from eventstore.retention import hold
from projections import FlowProjection, FlowService

from .conftest import Target


def run(target: Target, *args: str, code: int = 0) -> str:
    schema = target.options.get("schema")
    prefix = ["--url", target.url, *(["--schema", schema] if schema else [])]
    result = CliRunner().invoke(main, [*prefix, *args])
    assert result.exit_code == code, result.output
    return result.output


HUGE = str(2**80)
TOO_LARGE = f"{HUGE} is too large: at most 2**63 - 1"
BAD_INPUT: list[tuple[list[str], int, str]] = [
    (
        ["rebuild", "os:path"],
        2,
        "cannot load os:path: path is a module, not a projections.Projection subclass",
    ),
    (["rebuild", "json:JSONDecoder"], 2, "JSONDecoder is a class, not a projections.Projection subclass"),
    (["rebuild", "eventstore:EventStore"], 2, "EventStore is a class, not a projections.Projection subclass"),
    (
        ["rebuild", "projections:Projection"],
        2,
        "Projection() failed: ProjectionError: Projection must set a name",
    ),
    (
        ["maintain", "--catch-up", "os:path", "--status"],
        2,
        "Invalid value for --catch-up: cannot load os:path",
    ),
    (["tail", "--from", HUGE, "--until-idle"], 2, f"Invalid value for '--from': {TOO_LARGE}"),
    (["prove", "--checkpoint", HUGE, "1"], 2, f"Invalid value for '--checkpoint': {TOO_LARGE}"),
    (["prove", "--consistency", HUGE, "1"], 2, f"Invalid value for '--consistency': {TOO_LARGE}"),
    (["checkpoint", "--export", "-", "--size", HUGE], 2, f"Invalid value for '--size': {TOO_LARGE}"),
    (["flows", "--offset", HUGE], 2, f"Invalid value for '--offset': {TOO_LARGE}"),
    (["audit", "--after", HUGE], 2, f"Invalid value for '--after': {TOO_LARGE}"),
    (["fork", "f", "--at", HUGE, "--new", "g"], 2, f"Invalid value for '--at': {TOO_LARGE}"),
    (["state", "f", "--at", HUGE], 1, f"error: revision {TOO_LARGE}"),
    (["audit", "--why", f"f@{HUGE}"], 1, f"error: revision {TOO_LARGE}"),
    (["prove", HUGE], 1, f"error: position {TOO_LARGE}"),
    (["verify", "nope"], 1, "error: flow 'nope' does not exist"),
]


def prefix(target: Target) -> list[str]:
    schema = target.options.get("schema")
    return ["--url", target.url, *(["--schema", schema] if schema else [])]


def row_counts(target: Target) -> dict[str, int]:
    """Every table of the store and how many rows it holds."""
    with target.open() as store, store.engine.connect() as conn:
        names = sa.inspect(conn).get_table_names()
        return {
            name: conn.execute(sa.select(sa.func.count()).select_from(sa.table(name))).scalar_one()
            for name in names
        }


class TestCommands:
    def test_demo_records_and_verifies(self, target: Target) -> None:
        out = run(target, "db", "upgrade")
        out = run(target, "demo", "--flow", "refund-1")
        assert "recorded flow refund-1" in out
        assert "GateApproved" in out and "human:ann" in out
        assert "StepRetried" in out and "DecisionRecorded" in out
        assert "step refund: completed after 1 attempt, gate approved by human:ann" in out
        assert "verify: OK (24 events in 3 flows" in out
        assert "state at revision 6: step lookup running, attempt 2" in out
        assert "diff 6 -> 12: 6 step changes" in out and "fork: refund-1-retry starts from revision 8" in out
        assert "flow 1 r8   agent:refund-bot decided 'refund in full' (confidence 0.92)" in out
        assert "flow 1 r11  human:ann approved (selected: approve) after seeing" in out
        assert "flow 2 r5   human:bob rejected after seeing" in out
        assert "flow 2 r7   FlowFailed: needs a carrier claim" in out
        assert "checkpoint: 24 events" in out and "the approval is proven in it" in out

    def test_verify_reports_and_exits_2_when_broken(self, target: Target) -> None:
        with target.open() as store:
            store.append("f", [NewEvent("A", {"x": 1})])
            assert "OK: 1 event in 1 flow checked" in run(target, "verify")
            report = orjson.loads(run(target, "verify", "--json"))
            assert report == {"ok": True, "events_checked": 1, "flows_checked": 1, "problems": []}
            with store.engine.connect() as conn:
                if store.dialect == "postgresql":
                    conn.exec_driver_sql("ALTER TABLE flow_events DISABLE TRIGGER USER")
                else:
                    conn.exec_driver_sql("DROP TRIGGER flow_events_no_update")
                conn.exec_driver_sql("UPDATE flow_events SET type = 'B'")
                conn.commit()
        out = run(target, "verify", code=2)
        assert "BROKEN f@1 (position 1): hash-mismatch" in out

    def test_verify_export_reports_problems_as_verify_does(self, target: Target, tmp_path: Path) -> None:
        with target.open() as store:
            store.append("f", [NewEvent("A", {"x": 1})])
        path = tmp_path / "f.jsonl"
        run(target, "export", str(path))
        path.write_text(path.read_text().replace('"type":"A"', '"type":"B"'))  # the file's SHA-256 too
        problems = orjson.loads(run(target, "verify-export", str(path), "--json", code=2))["problems"]
        assert [{**problem, "detail": "..."} for problem in problems] == [
            {"flow_id": "f", "position": 1, "revision": 1, "kind": "hash-mismatch", "detail": "..."},
            {"flow_id": "", "position": 0, "revision": 0, "kind": "sha256-mismatch", "detail": "..."},
        ]  # the objects `verify --json` writes
        out = run(target, "verify-export", str(path), code=2)
        broken = [line for line in out.splitlines() if line.startswith("BROKEN")]
        assert broken[0].startswith("BROKEN f@1 (position 1): hash-mismatch: the envelope ")
        assert broken[1].startswith("BROKEN sha256-mismatch: the events file's SHA-256 is ")

    def test_rebuild_reports_without_progress_into_a_pipe(self, target: Target) -> None:
        with target.open(projections=[FlowProjection()]) as store:
            FlowService(store).start_flow("f", controller_id="c", goal="g", owner_session_key="s")
        out = run(target, "rebuild", "flows")
        assert out == "rebuilt flows from 1 event" + out.split("1 event", 1)[1]
        assert "\r" not in out and out.count("\n") == 1
        assert orjson.loads(run(target, "rebuild", "--json").splitlines()[-1])["events"] == 1


class TestErrors:
    @pytest.mark.parametrize("args", [["flows"], ["db", "current"], ["db", "upgrade"], ["verify"]])
    def test_schema_with_a_sqlite_url_is_a_usage_error(self, tmp_path: Path, args: list[str]) -> None:
        url = f"sqlite:///{tmp_path / 'events.db'}"
        with EventStore.open(url) as store:
            store.append("f", [NewEvent("A", {})])
        for given in (["--schema", "audit"], []):
            env = {} if given else {"EVENTSTORE_SCHEMA": "audit"}
            result = CliRunner().invoke(main, ["--url", url, *given, *args], env=env)
            assert result.exit_code == 2 and "Traceback" not in result.output, result.output
            assert result.output.splitlines()[-1] == (
                f"Error: --schema 'audit' (or EVENTSTORE_SCHEMA) is for PostgreSQL, and {url} is a "
                "SQLite store, which has no schemas: drop it, or give a postgresql:// --url"
            )

    def test_library_errors_are_one_line_without_traceback(self) -> None:
        result = CliRunner().invoke(main, ["--url", "mysql://nowhere/x", "verify"])
        assert result.exit_code == 1
        assert result.output == "error: unsupported database 'mysql': use sqlite:/// or postgresql://\n"

    def test_unknown_projection(self, target: Target) -> None:
        out = run(target, "rebuild", "no.such.module:Thing", code=2)
        assert "cannot load no.such.module:Thing" in out
        assert "(looked in the current directory (" in out

    def test_a_projection_of_the_current_directory_is_found(
        self, target: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """As docs/projections.md runs it, `eventstore rebuild myapp.readmodels:...` in the
        application's directory: the installed script has no '' on sys.path, as `python -m` has."""
        target.open().close()
        package = tmp_path / "app_of_cwd"
        package.mkdir()
        (package / "__init__.py").write_text("")
        (package / "readmodels.py").write_text(
            "import sqlalchemy as sa\n"
            "from projections import Projection\n\n\n"
            "class Seen(Projection):\n"
            "    name = 'seen_of_cwd'\n\n"
            "    def define_tables(self, metadata):\n"
            "        sa.Table('seen_of_cwd', metadata, sa.Column('p', sa.BigInteger, primary_key=True))\n"
        )
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
        assert "rebuilt seen_of_cwd from 0 events" in run(target, "rebuild", "app_of_cwd.readmodels:Seen")
        out = run(target, "rebuild", "app_of_cwd.readmodels:Missing", code=2)
        assert "has no attribute 'Missing'" in out

    @pytest.mark.parametrize(
        ("args", "code", "message"), BAD_INPUT, ids=[" ".join(a[:2]) for a, _, _ in BAD_INPUT]
    )
    def test_bad_input_is_one_clear_line_and_writes_nothing(
        self, target: Target, args: list[str], code: int, message: str
    ) -> None:
        with target.open(projections=[FlowProjection()]) as store:
            FlowService(store).start_flow("f", controller_id="c", goal="g", owner_session_key="s")
        before = row_counts(target)
        result = CliRunner().invoke(main, [*prefix(target), *args])
        assert result.exc_info is not None and result.exc_info[0] is SystemExit  # nothing escaped
        assert result.exit_code == code and "Traceback" not in result.output, result.output
        assert message in result.output.splitlines()[-1]
        assert row_counts(target) == before

    def test_python_dash_m_works(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        empty = tmp_path / "x.db"
        empty.touch()  # an empty SQLite database: no schema yet
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "eventstore",
                "--url",
                f"sqlite:///{empty}",
                "db",
                "current",
                "--json",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert orjson.loads(done.stdout)["current"] is None


class TestTimeTravelCommands:
    def recorded(self, target: Target) -> None:
        run(target, "db", "upgrade")
        run(target, "demo", "--flow", "d1")

    def test_history_groups_step_events_under_their_step(self, target: Target) -> None:
        self.recorded(target)
        out = run(target, "history", "d1", "--events").splitlines()
        assert out[2].startswith("r1 ") and "FlowStarted" in out[2] and "agent:refund-bot" in out[2]
        assert out[4].startswith("r3-7 ") and "step lookup (lookup_order)" in out[4]
        assert out[7].startswith("  r5 ") and "StepRetried" in out[7]
        lines = [orjson.loads(line) for line in run(target, "history", "d1", "--json").splitlines()]
        assert [line["revision"] for line in lines] == list(range(1, 17))

    def test_state_at_a_revision(self, target: Target) -> None:
        self.recorded(target)
        out = run(target, "state", "d1", "--at", "7")
        assert "d1 at revision 7: running" in out
        assert "step lookup: completed (2 attempts, 1 retry, last error: orders API timed out)" in out
        state = orjson.loads(run(target, "state", "d1", "--json"))
        assert state["flow"]["status"] == "finished" and sorted(state["steps"]) == ["lookup", "refund"]

    def test_diff_and_fork(self, target: Target) -> None:
        self.recorded(target)
        changes = orjson.loads(run(target, "diff", "d1", "7", "11", "--json"))
        assert [e["revision"] for e in changes["events"]] == [8, 9, 10, 11]
        assert any(c["op"] == "add" and c["path"] == "/steps/refund" for c in changes["changes"])
        assert "forked d1@7 as d1-branch" in run(target, "fork", "d1", "--at", "7", "--new", "d1-branch")
        assert "d1-branch at revision 1: running" in run(target, "state", "d1-branch")

    def test_diff_shows_an_added_step_by_its_key_fields_not_cut_json(self, target: Target) -> None:
        self.recorded(target)
        added = [
            line for line in run(target, "diff", "d1", "7", "11").splitlines() if "/steps/refund:" in line
        ]
        assert added == [
            "+ /steps/refund: step refund (issue_refund): scheduled (0 attempts, gate approved by human:ann)"
        ]

    @pytest.mark.parametrize(
        ("point", "message"),
        [
            ("2030", "error: flow 'd1' has revisions 0 to 16, not 2030"),
            ("2030-01-01T00:00", "error: '2030-01-01T00:00' has no time zone; add Z or +00:00"),
            ("soon", "error: 'soon' is neither a revision number nor an ISO 8601 time"),
        ],
        ids=["past-the-end", "no-zone", "not-a-point"],
    )
    def test_bad_points_are_one_line_errors(self, target: Target, point: str, message: str) -> None:
        self.recorded(target)
        result = CliRunner().invoke(
            main, ["--url", target.url, *self.schema(target), "state", "d1", "--at", point]
        )
        assert result.exc_info is not None and result.exc_info[0] is SystemExit  # nothing escaped
        assert (result.exit_code, result.output.splitlines()) == (1, [message])

    def schema(self, target: Target) -> list[str]:
        schema = target.options.get("schema")
        return ["--schema", schema] if schema else []


class TestJsonTimes:
    """Every time in JSON output is spelt as the store and export files spell it: UTC, microseconds, Z."""

    def test_holds_and_archives(self, target: Target, tmp_path: Path) -> None:
        at = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
        with freeze_time(at) as clock:
            with target.open(projections=[FlowProjection()]) as store:
                for flow_id in ("kept", "gone"):
                    FlowService(store).start_flow(flow_id, controller_id="c", goal="g", owner_session_key="s")
                    FlowService(store).finish(flow_id)
            placed = orjson.loads(run(target, "hold", "kept", "--reason", "r", "--by", "ann", "--json"))
            (listed,) = orjson.loads(run(target, "holds", "--json"))
            clock.tick(timedelta(days=2))
            run(target, "prune", "--policy", "finished=1", "--archive-dir", str(tmp_path / "a"))
            (archive,) = orjson.loads(run(target, "archive", "list", "--json"))
        assert placed["held_at"] == listed["held_at"] == "2030-01-01T09:00:00.000000Z"
        assert archive["created_at"] == archive["finished_at"] == "2030-01-03T09:00:00.000000Z"


BAD = "\x1b]0;pwned\x07\x1b[1A\x1b[2K\r\b\t\x7f\x85\x9b\u202e\u2067"  # title, cursor, erase, C1, bidi
SHOWN = r"\x1b]0;pwned\x07\x1b[1A\x1b[2K\r\x08\t\x7f\x85\x9b\u202e\u2067"
ODD = "a\nb"  # a flow id with a newline in it
OUR_STYLES = re.compile(r"\x1b\[[0-9;]*m")  # what click.style writes; nothing else may reach a terminal
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def on_terminal(target: Target, *args: str) -> str:
    """What a command writes to a terminal (colour on), with its own styles taken out."""
    result = CliRunner().invoke(main, [*prefix(target), *args], color=True)
    assert result.exit_code == 0, result.output
    return OUR_STYLES.sub("", result.output)


@pytest.fixture
def hostile(target: Target) -> Target:
    """Flow f, where an agent's rationale tries to erase a rejection; flow ODD, agent text everywhere."""
    run(target, "db", "upgrade")
    with target.open(projections=[FlowProjection()]) as store:
        flows = FlowService(store)
        flows.start_flow("f", controller_id="bot", goal="g", owner_session_key="s")
        flows.schedule_step("f", step_id="pay", name="pay", run_id="r")
        flows.open_gate("f", "pay", prompt="Pay $10,000?", actor="bot")
        flows.reject_gate("f", "pay", by="human:ann", feedback="NO - suspicious")
        erase = "\x1b[1A\x1b[2K" * 4  # cursor up, erase the line: four times
        flows.record_decision("f", actor="agent:bot", decision="pay anyway", rationale="ok" + erase)
        flows.start_flow(ODD, controller_id=BAD, goal=BAD, owner_session_key=BAD, actor=BAD)
        flows.advance(ODD, current_step=BAD, state_patch={BAD: BAD}, actor=BAD)
        flows.schedule_step(ODD, step_id=BAD, name=BAD, run_id="r", actor=BAD)
        flows.open_gate(ODD, BAD, prompt=BAD, options=[{"value": BAD, "label": BAD}], actor=BAD)
        flows.approve_gate(ODD, BAD, by=BAD, feedback=BAD, selections=[BAD])
        said = {"decision": BAD, "rationale": BAD, "inputs": {BAD: BAD}, "alternatives": [BAD]}
        flows.record_decision(ODD, actor=BAD, model=BAD, tool=BAD, **said)
        flows.start_step(ODD, BAD, actor=BAD)
        flows.fail_step(ODD, BAD, error=BAD, actor=BAD)
        flows.fail(ODD, error=BAD, details={BAD: BAD}, actor=BAD)
        hold(store, ODD, reason=BAD, by=BAD)
        take_checkpoint(store, generate_key())
    return target


class TestStoredTextIsShownNotObeyed:
    """What agents wrote reaches a terminal on one line, its control and bidi characters escaped."""

    def test_a_rationale_cannot_erase_the_rejection_above_it(self, hostile: Target) -> None:
        out = on_terminal(hostile, "audit", "--flow", "f")
        assert "\x1b" not in out and "REJECTED" in out and "NO - suspicious" in out
        assert "why: ok" + r"\x1b[1A\x1b[2K" * 4 in out

    @pytest.mark.parametrize(
        "args",
        [
            ["flows"],
            ["show", ODD],
            ["history", ODD, "--events"],
            ["audit"],
            ["audit", "--why", f"{ODD}@5"],
            ["tail", "--from", "0", "--until-idle"],
            ["state", ODD],
            ["diff", ODD, "1", "9"],
            ["holds"],
            ["release", ODD, "--by", BAD],
            ["fork", ODD, "--at", "2", "--new", BAD],
            ["prune", "--policy", "failed=0", "--dry-run"],
            ["prove", "7"],
        ],
        ids=lambda args: " ".join(args[:2]).replace(ODD, "ODD"),
    )
    def test_every_command_escapes_it(self, hostile: Target, args: list[str]) -> None:
        out = on_terminal(hostile, *args)
        assert not UNSAFE.search(out), repr(out)
        assert "a\\nb" in out or SHOWN in out  # there, and visible

    def test_an_id_with_a_newline_stays_on_its_row(self, hostile: Target) -> None:
        rows = on_terminal(hostile, "flows").splitlines()
        assert len(rows) == 4 and rows[2].startswith("a\\nb ") and rows[2].endswith(SHOWN)
        assert on_terminal(hostile, "show", ODD).startswith(f"a\\nb  {SHOWN}\n")

    def test_thread_ids_are_escaped(self, target: Target) -> None:
        from langgraph.checkpoint.conformance.test_utils import generate_checkpoint

        from eventstore.integrations.langgraph import EventStoreSaver

        with EventStoreSaver.from_url(target.url, **target.options) as saver:
            for thread in (ODD, "x\u202ey"):
                config = {"configurable": {"thread_id": thread, "checkpoint_ns": "", "actor": BAD}}
                saver.put(config, generate_checkpoint(), {"source": "loop"}, {})
        out = on_terminal(target, "threads")
        assert not UNSAFE.search(out) and len(out.splitlines()) == 3
        assert "a\\nb " in out and "x\\u202ey " in out and r"\x1b]0;pwned" in out

    def test_json_stays_exact_and_inert(self, hostile: Target) -> None:
        history = on_terminal(hostile, "history", ODD, "--json")
        decision = on_terminal(hostile, "audit", "--flow", ODD, "--type", "decision", "--json")
        state = on_terminal(hostile, "state", ODD, "--json")
        assert not UNSAFE.search(history + decision + state)  # DEL, C1 and bidi as \u escapes too
        first = orjson.loads(history.splitlines()[0])
        assert (first["flow_id"], first["data"]["goal"]) == (ODD, BAD)
        assert orjson.loads(decision)["rationale"] == BAD and orjson.loads(state)["flow"]["goal"] == BAD

    def test_a_live_line_leaves_nothing_of_a_longer_one_behind(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """rebuild's progress: the rate falling from 10,234 to 987 events/s read '987 events/ss/s'."""
        line = live_line()
        for text in ["p: 1/3 events, 10,234 events/s", "p: 2/3 events, 987 events/s", "p: 3/3"]:
            line(text)
        shown = capsys.readouterr().err.split("\r")[1:]
        assert [s.rstrip() for s in shown] == [
            "p: 1/3 events, 10,234 events/s",
            "p: 2/3 events, 987 events/s",
            "p: 3/3",
        ]
        assert {len(s) for s in shown} == {len("p: 1/3 events, 10,234 events/s")}

    def test_ordinary_text_is_left_alone(self) -> None:
        text = "café ☕ 😀 👨‍👩‍👧 naïve Ωmega 日本 \\n"
        assert printable(text) == text
        assert printable(BAD) == SHOWN and printable(ODD) == "a\\nb"
        assert cut("ab\x1bcd", 6) == "ab…"  # an escape is shown whole or not at all
