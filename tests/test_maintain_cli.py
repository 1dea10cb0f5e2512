"""`eventstore maintain` and `eventstore backup` from the command line."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from freezegun import freeze_time

from eventstore import EventStore, NewEvent, maintenance_jobs
from eventstore.cli import main
from eventstore.job_leases import claim, job_status
from eventstore.maintenance import JobContext

from .conftest import Target
from .workers import BARRIER_TIMEOUT

ROOT = Path(__file__).resolve().parent.parent


def prefix(target: Target) -> list[str]:
    schema = target.options.get("schema")
    return ["--url", target.url, *(["--schema", schema] if schema else [])]


def run(target: Target, *args: str, code: int = 0) -> str:
    """Standard output (the logs go to standard error); all of the output if it is to fail."""
    result = CliRunner().invoke(main, [*prefix(target), *args])
    assert result.exit_code == code, result.output
    return result.stdout if code == 0 else result.output


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


def child(*args: str) -> subprocess.CompletedProcess[str]:
    """``eventstore ARGS`` in a process of its own, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "eventstore", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=BARRIER_TIMEOUT,
    )


def failing_backup(tmp_path: Path) -> list[str]:
    """``--url`` and ``--config`` for a store whose backup job fails: its directory is a file."""
    (tmp_path / "taken").write_text("not a directory")
    (tmp_path / "m.toml").write_text(f"[backup]\ndirectory = '{tmp_path / 'taken'}'\n")
    EventStore.open(f"sqlite:///{tmp_path / 'live.db'}").close()
    return ["--url", f"sqlite:///{tmp_path / 'live.db'}", "maintain", "--config", str(tmp_path / "m.toml")]


class TestMaintainErrors:
    def test_a_failing_job_is_one_line_and_status_1_never_a_traceback(self, tmp_path: Path) -> None:
        done = child(*failing_backup(tmp_path), "--once", "backup")
        assert done.returncode == 1 and "Traceback" not in done.stderr + done.stdout
        (logged,) = [line for line in done.stderr.splitlines() if " ERROR " in line]
        said = f"backup failed: StorageError: cannot create the backup directory {tmp_path / 'taken'}: "
        assert f"eventstore.maintenance: maintenance: {said}" in logged
        assert done.stdout.startswith("backup: failed StorageError: cannot create the backup directory ")

    def test_the_traceback_is_there_at_debug(self, tmp_path: Path) -> None:
        done = child(*failing_backup(tmp_path), "--once", "backup", "--log-level", "debug")
        assert done.returncode == 1 and "Traceback (most recent call last)" in done.stderr

    def test_an_unknown_log_level_is_a_usage_error(self, target: Target) -> None:
        assert "Invalid value for '--log-level'" in run(target, "maintain", "--log-level", "LOUD", code=2)

    @pytest.mark.parametrize(
        ("args", "said"),
        [
            (["--status", "--once", "integrity"], "--status and --once are two commands: give one"),
            (["--json"], "--json is for --once and --status"),
        ],
    )
    def test_options_that_would_be_ignored_are_a_usage_error(
        self, target: Target, args: list[str], said: str
    ) -> None:
        """Not the status with the job never run, nor the scheduler serving for ever with no JSON."""
        target.open().close()
        assert said in run(target, "maintain", *args, code=2)
        with target.open() as store:
            assert all(row.last_started is None for row in job_status(store))

    @pytest.mark.parametrize(
        ("args", "said"),
        [
            (
                ["--catch-up", "tests.retire_workers:InlineCount"],
                "cannot load tests.retire_workers:InlineCount: projection 'inline_count' is inline",
            ),
            (["--catch-up", "tests.test_projections:DecisionsByActor"] * 2, "given twice"),
        ],
    )
    def test_a_catch_up_projection_no_run_could_fold_is_a_usage_error(
        self, target: Target, args: list[str], said: str
    ) -> None:
        """Refused as it is loaded, not failed (or run twice) by every run of the service."""
        target.open().close()
        assert said in run(target, "maintain", *args, "--once", "catch-up", code=2)
        with target.open() as store:
            assert all(row.last_started is None for row in job_status(store))

    def test_a_run_that_lost_its_lease_exits_3(self, target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
        def taken_over(ctx: JobContext) -> None:  # another process claims the job once the lease is over
            later = ctx.now() + timedelta(hours=2)
            claim(ctx.store, ctx.name, "other", now=later, lease_seconds=60, period=later)
            ctx.renew()

        target.open().close()
        monkeypatch.setattr(maintenance_jobs, "integrity", taken_over)
        assert "integrity: lost maintenance job 'integrity'" in run(
            target, "maintain", "--once", "integrity", code=3
        )


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

    def test_the_log_has_a_line_per_run_not_the_schedulers_chatter(
        self, target: Target, tmp_path: Path
    ) -> None:
        """APScheduler's own INFO lines ("Running job", "executed successfully", even after a run
        that failed) are not the service's: they show only at DEBUG."""
        target.open().close()
        config = tmp_path / "m.toml"
        config.write_text("[jobs.integrity]\nevery = 1\n")
        process = subprocess.Popen(
            [sys.executable, "-m", "eventstore", *prefix(target), "maintain", "--config", str(config)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stderr=subprocess.PIPE,
        )
        try:
            seen = read_until(process, b"maintenance: integrity ok")
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=BARRIER_TIMEOUT) == 0
            seen += process.stderr.read()  # type: ignore[union-attr]  # piped above
        finally:
            process.kill()
        assert b"apscheduler" not in seen and b"executed successfully" not in seen, seen.decode()
        assert b"maintenance: integrity started" in seen

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

    def test_status_json_times_are_utc_with_z(self, target: Target, tmp_path: Path) -> None:
        target.open().close()
        config = tmp_path / "m.toml"
        config.write_text('timezone = "Europe/Paris"\n')
        with freeze_time("2030-01-01T00:00:00Z"):
            lines = run(target, "maintain", "--config", str(config), "--status", "--json").splitlines()
        by_job = {line["job"]: line for line in map(orjson.loads, lines)}
        assert by_job["quick-check"]["next_run"] == "2030-01-01T03:15:00.000000Z"  # 04:15 in Paris

    def test_status_text_says_which_clock_each_time_is_on(self, target: Target, tmp_path: Path) -> None:
        """A cron schedule reads on the config's zone, its next run in UTC: each says so."""
        target.open().close()
        config = tmp_path / "m.toml"
        config.write_text('timezone = "America/New_York"\n')
        with freeze_time("2030-01-01T00:00:00Z"):
            lines = run(target, "maintain", "--config", str(config), "--status").splitlines()
        (quick,) = [line for line in lines if line.startswith("quick-check ")]
        assert "cron 15 4 * * * America/New_York" in quick and "next 2030-01-01 09:15:00 UTC" in quick
        (integrity,) = [line for line in lines if line.startswith("integrity ")]
        assert "every 3600s" in integrity and "next 2030-01-01 00:00:00 UTC" in integrity

    def test_quick_check_on_postgresql_says_it_checked_nothing(self, pg_target: Target) -> None:
        pg_target.open().close()
        for job, pragma in (("quick-check", "quick_check"), ("integrity-check", "integrity_check")):
            report = orjson.loads(run(pg_target, "maintain", "--once", job, "--json"))
            assert report["status"] == "skipped" and "autovacuum" not in report["reason"]
            assert report["reason"].startswith(f"PRAGMA {pragma} is not supported on postgresql: ")
            assert "pg_amcheck" in report["reason"]  # what checks PostgreSQL's tables and indexes
        wal = orjson.loads(run(pg_target, "maintain", "--once", "wal-checkpoint", "--json"))
        assert wal["reason"].endswith("PostgreSQL's checkpointer does this itself")

    def test_status_shows_who_holds_a_running_job(self, target: Target) -> None:
        with target.open() as store:
            now = store.clock()
            assert claim(store, "snapshots", "host-b:4242:x", now=now, lease_seconds=600, period=now)
        text = run(target, "maintain", "--status")
        assert "running, held by host-b:4242:x until " in text
        assert text.count("held by") == 1

    def test_status_does_not_call_a_holder_whose_lease_expired_running(self, target: Target) -> None:
        with freeze_time("2030-01-01 12:00") as clock:
            with target.open() as store:
                now = store.clock()
                assert claim(store, "snapshots", "host-b:4242:x", now=now, lease_seconds=600, period=now)
            clock.tick(timedelta(minutes=10))
            text = run(target, "maintain", "--status")
            (line,) = [
                orjson.loads(o)
                for o in run(target, "maintain", "--status", "--json").splitlines()
                if '"snapshots"' in o
            ]
        assert "held by" not in text and "running" not in text
        assert "lease expired at 2030-01-01T12:10:00.000000Z: host-b:4242:x stopped without finishing" in text
        assert (line["last_status"], line["held_by"], line["expired_holder"]) == (
            "expired",
            None,
            "host-b:4242:x",
        )

    def test_a_bad_config_file_is_a_clean_error(self, target: Target, tmp_path: Path) -> None:
        config = tmp_path / "m.toml"
        config.write_text("[sweeper]\non_expired = 'explode'\n")
        assert "error: " in run(target, "maintain", "--config", str(config), "--status", code=1)

    def test_a_config_file_not_in_utf8_is_a_clean_error(self, target: Target, tmp_path: Path) -> None:
        config = tmp_path / "m.toml"
        config.write_bytes(b"[sweeper]\non_expired = '\xf6'\n")  # Latin-1: not UTF-8
        said = run(target, "maintain", "--config", str(config), "--status", code=1)
        assert f"error: {config}: not valid TOML: it is not UTF-8 text" in said


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
