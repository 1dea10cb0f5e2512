"""`eventstore maintain` and `eventstore backup` from the command line."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
from click.testing import CliRunner

from eventstore import EventStore, NewEvent
from eventstore.cli import main
from eventstore.job_leases import job_status

from .conftest import Target
from .workers import BARRIER_TIMEOUT

ROOT = Path(__file__).resolve().parent.parent


def prefix(target: Target) -> list[str]:
    schema = target.options.get("schema")
    return ["--url", target.url, *(["--schema", schema] if schema else [])]


def run(target: Target, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, [*prefix(target), *args])
    assert result.exit_code == code, result.output
    return result.output


def read_until(process: subprocess.Popen[bytes], text: bytes) -> bytes:
    """Standard error up to a line containing ``text`` (bounded by a deadline, not a sleep)."""
    seen = b""
    deadline = time.monotonic() + BARRIER_TIMEOUT
    assert process.stderr is not None
    while text not in seen:
        assert time.monotonic() < deadline, seen.decode()
        ready, _, _ = select.select([process.stderr], [], [], 1.0)
        if ready:
            chunk = os.read(process.stderr.fileno(), 4096)
            assert chunk, f"exited early: {seen.decode()}"
            seen += chunk
    return seen


class TestMaintain:
    def test_sigterm_stops_it_cleanly(self, target: Target) -> None:
        target.open().close()  # the schema
        process = subprocess.Popen(
            [sys.executable, "-m", "eventstore", *prefix(target), "maintain"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stderr=subprocess.PIPE,
        )
        try:
            read_until(process, b"maintenance started")
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=BARRIER_TIMEOUT) == 0
            assert b"maintenance stopped" in process.stderr.read()  # type: ignore[union-attr]  # piped above
        finally:
            process.kill()
        with target.open() as store:
            assert all(row.owner is None for row in job_status(store))  # no lease left behind

    def test_once_runs_one_job_and_reports_it(self, target: Target) -> None:
        with target.open() as store:
            store.append("f", [NewEvent("Noted", {})])
        report = orjson.loads(run(target, "maintain", "--once", "integrity", "--json"))
        assert (report["job"], report["status"], report["events_checked"]) == ("integrity", "ok", 1)
        assert "unknown maintenance job 'nope'" in run(target, "maintain", "--once", "nope", code=1)

    def test_status_lists_every_job(self, target: Target) -> None:
        target.open().close()
        run(target, "maintain", "--once", "snapshots")
        lines = [orjson.loads(line) for line in run(target, "maintain", "--status", "--json").splitlines()]
        by_job = {line["job"]: line for line in lines}
        assert by_job["snapshots"]["last_status"] == "ok" and by_job["catch-up"]["last_status"] is None
        assert (
            by_job["integrity-check"]["enabled"] is False
            and by_job["sweep-leases"]["schedule"] == "every 30s"
        )

    def test_a_bad_config_file_is_a_clean_error(self, target: Target, tmp_path: Path) -> None:
        config = tmp_path / "m.toml"
        config.write_text("[sweeper]\non_expired = 'explode'\n")
        assert "error: " in run(target, "maintain", "--config", str(config), "--status", code=1)


class TestBackupCommand:
    def test_backup_writes_a_copy(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'live.db'}"
        with EventStore.open(url) as store:
            store.append("f", [NewEvent("Noted", {})])
        result = CliRunner().invoke(main, ["--url", url, "backup", str(tmp_path / "copy.db"), "--json"])
        assert result.exit_code == 0, result.output
        assert orjson.loads(result.output)["path"] == str(tmp_path / "copy.db")

    def test_backup_on_postgresql_says_pg_dump(self, pg_target: Target, tmp_path: Path) -> None:
        pg_target.open().close()
        assert "pg_dump" in run(pg_target, "backup", str(tmp_path / "copy.db"), code=1)
