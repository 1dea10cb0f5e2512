"""The command line: one library call per command, clean errors, --json for scripts."""

from __future__ import annotations

import subprocess
import sys

import orjson
from click.testing import CliRunner

from eventstore import NewEvent
from eventstore.cli import main
from projections import FlowProjection, FlowService

from .conftest import Target


def run(target: Target, *args: str, code: int = 0) -> str:
    schema = target.options.get("schema")
    prefix = ["--url", target.url, *(["--schema", schema] if schema else [])]
    result = CliRunner().invoke(main, [*prefix, *args])
    assert result.exit_code == code, result.output
    return result.output


class TestCommands:
    def test_demo_records_and_verifies(self, target: Target) -> None:
        out = run(target, "db", "upgrade")
        out = run(target, "demo", "--flow", "refund-1")
        assert "recorded flow refund-1" in out
        assert "GateApproved" in out and "human:ann" in out
        assert "StepRetried" in out and "DecisionRecorded" in out
        assert "step refund: completed after 1 attempt(s), gate approved by human:ann" in out
        assert "verify: OK (16 events" in out

    def test_verify_reports_and_exits_2_when_broken(self, target: Target) -> None:
        with target.open() as store:
            store.append("f", [NewEvent("A", {"x": 1})])
            assert "OK: 1 events in 1 flows checked" in run(target, "verify")
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

    def test_rebuild_shows_progress(self, target: Target) -> None:
        with target.open(projections=[FlowProjection()]) as store:
            FlowService(store).start_flow("f", controller_id="c", goal="g", owner_session_key="s")
        out = run(target, "rebuild", "flows")
        assert "flows: 1/1 events" in out and "rebuilt flows from 1 events" in out
        assert orjson.loads(run(target, "rebuild", "--json").splitlines()[-1])["events"] == 1


class TestErrors:
    def test_library_errors_are_one_line_without_traceback(self) -> None:
        result = CliRunner().invoke(main, ["--url", "mysql://nowhere/x", "verify"])
        assert result.exit_code == 1
        assert result.output == "error: unsupported database 'mysql': use sqlite:/// or postgresql://\n"

    def test_unknown_projection(self, target: Target) -> None:
        out = run(target, "rebuild", "no.such.module:Thing", code=2)
        assert "cannot load no.such.module:Thing" in out

    def test_python_dash_m_works(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "eventstore",
                "--url",
                f"sqlite:///{tmp_path}/x.db",
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
