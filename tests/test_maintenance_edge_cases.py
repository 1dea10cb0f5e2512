"""Maintenance at the edges: daylight saving time, bad settings, clocks ahead, the backup job's files."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from freezegun import freeze_time

from eventstore import EventStore, InvalidInput, NewEvent, job_leases, utc_now
from eventstore.cli import main
from eventstore.integrity import format_time
from eventstore.maintenance import Maintenance
from eventstore.maintenance_config import JobConfig, MaintenanceConfig

from .conftest import Target

NOON = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def within(seconds: float, call: Callable[..., Any], *args: Any) -> Any:
    """``call(*args)`` on a thread of its own: a call still running after ``seconds`` fails the test."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(("value", call(*args)))
        except BaseException as exc:  # handed back to the test's thread
            outcome.append(("error", exc))

    thread = threading.Thread(target=target, daemon=True)  # a hung call must not keep pytest alive
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    kind, value = outcome[0]
    if kind == "error":
        raise value
    return value


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


CHANGES = [  # a cron in a zone, and its runs on the day before, the day of and the day after a change
    ("Europe/Paris", "0 2 * * *", ["2026-10-24T00:00", "2026-10-25T00:00", "2026-10-26T01:00"]),
    ("Europe/Paris", "30 2 * * *", ["2026-03-28T01:30", "2026-03-29T01:00", "2026-03-30T00:30"]),
    ("America/New_York", "30 1 * * *", ["2026-10-31T05:30", "2026-11-01T05:30", "2026-11-02T06:30"]),
    ("America/New_York", "30 2 * * *", ["2026-03-07T07:30", "2026-03-08T07:00", "2026-03-09T06:30"]),
]


class TestDaylightSavingTime:
    @pytest.mark.parametrize(("zone", "cron", "runs"), CHANGES)
    def test_the_scheduler_gets_each_run_once(self, zone: str, cron: str, runs: list[str]) -> None:
        trigger = JobConfig(cron=cron).trigger(ZoneInfo(zone))

        def fired() -> list[datetime]:
            found, now, seen = None, utc(runs[0]) - timedelta(minutes=1), []
            for _ in runs:
                found = trigger.get_next_fire_time(found, now)
                seen.append(found)
                now = found + timedelta(seconds=1)  # as the scheduler asks, just after each run
            return seen

        assert within(10, fired) == [utc(run) for run in runs]

    @pytest.mark.parametrize(("zone", "cron", "runs"), CHANGES)
    def test_every_moment_belongs_to_the_latest_run_before_it(
        self, zone: str, cron: str, runs: list[str]
    ) -> None:
        job, fires = JobConfig(cron=cron), [utc(run) for run in runs]
        moments = [fires[0] + timedelta(minutes=10 * n) for n in range(6 * 50)]  # 50 hours
        periods = within(10, lambda: [job.period_of(moment, ZoneInfo(zone)) for moment in moments])
        assert periods == [max(fire for fire in fires if fire <= moment) for moment in moments]

    def test_runs_within_the_hour_never_go_back_across_the_autumn_change(self) -> None:
        trigger = JobConfig(cron="*/20 * * * *").trigger(ZoneInfo("Europe/Paris"))

        def fired() -> list[datetime]:
            found, now, seen = None, utc("2026-10-24T23:30"), []
            for _ in range(12):
                found = trigger.get_next_fire_time(found, now)
                seen.append(found)
                now = found + timedelta(seconds=1)
            return seen

        runs = within(10, fired)
        assert runs == sorted(set(runs)) and utc("2026-10-25T01:20") not in runs  # the hour seen twice: once
        assert runs[3:6] == [utc("2026-10-25T00:40"), utc("2026-10-25T02:00"), utc("2026-10-25T02:20")]

    def test_a_run_fired_in_the_repeated_hour_is_claimed_and_recorded(self, store: EventStore) -> None:
        paris = MaintenanceConfig.parse(
            {"timezone": "Europe/Paris", "jobs": {"integrity": {"cron": "0 2 * * *"}}}
        )
        service = Maintenance(store, paris, clock=lambda: utc("2026-10-25T01:00:01"))  # 02:00:01, again
        within(10, service._fire, "integrity")  # what the scheduler calls
        (row,) = [row for row in service.status() if row.name == "integrity"]
        assert (row.last_status, row.period) == ("ok", "2026-10-25T00:00:00.000000Z")


BAD_SETTINGS = [
    ({"jobs": {"integrity": {"every": math.inf}}}, "every"),
    ({"jobs": {"integrity": {"every": 1e15}}}, "every"),
    ({"jobs": {"integrity": {"every": 1e-7}}}, "every"),
    ({"jobs": {"integrity": {"lease_seconds": math.inf}}}, "lease_seconds"),
    ({"jobs": {"integrity": {"lease_seconds": 1e15}}}, "lease_seconds"),
    ({"jobs": {"integrity": {"cron": "0 0 30 2 *"}}}, "never runs"),
    ({"retention": {"keep_days": {"finished": -1}}}, "keep_days"),
    ({"retention": {"keep_days": {"finished": math.inf}}}, "keep_days"),
    ({"retention": {"keep_days": {"finished": math.nan}}}, "keep_days"),
    ({"retention": {"keep_days": {"finished": 1e12}}}, "keep_days"),
]


def test_a_url_where_the_store_belongs_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"store must be an EventStore, not 'sqlite:///x\.db'"):
        Maintenance("sqlite:///x.db")  # type: ignore[arg-type]  # what is refused


class TestSettings:
    @pytest.mark.parametrize(("data", "named"), BAD_SETTINGS)
    def test_a_bad_schedule_lease_or_age_is_refused_when_loaded(
        self, data: dict[str, Any], named: str
    ) -> None:
        with pytest.raises(InvalidInput, match=named):
            MaintenanceConfig.parse(data)

    @pytest.mark.parametrize(
        ("setting", "flag"),
        [
            ("lease_seconds = inf", "--once"),
            ("every = 1e15", "--status"),
            ('cron = "0 0 30 2 *"', "--status"),
        ],
    )
    def test_the_command_line_says_so_without_a_traceback(
        self, tmp_path: Path, setting: str, flag: str
    ) -> None:
        (tmp_path / "m.toml").write_text(f"[jobs.integrity]\n{setting}\n")
        url = f"sqlite:///{tmp_path / 'live.db'}"
        args = ["--url", url, "maintain", "--config", str(tmp_path / "m.toml"), flag]
        result = CliRunner().invoke(main, [*args, *(["integrity"] if flag == "--once" else [])])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        assert "error: " in result.output and "jobs.integrity" in result.output

    def test_the_bounds_themselves_are_accepted(self) -> None:
        config = MaintenanceConfig.parse(
            {
                "jobs": {
                    "integrity": {"every": 1, "lease_seconds": 7 * 86400},
                    "snapshots": {"every": 366 * 86400},
                },
                "retention": {"keep_days": {"finished": 0, "failed": 36525}},
            }
        )
        assert config.job("snapshots").every == 366 * 86400 and config.retention.keep_days["failed"] == 36525


class TestClocks:
    def test_a_run_on_a_clock_ahead_does_not_hold_up_the_other_hosts(self, store: EventStore) -> None:
        ahead = Maintenance(store, clock=lambda: NOON + timedelta(days=2))
        here = Maintenance(store, clock=lambda: NOON)
        store.append("f", [NewEvent("Noted", {})])
        assert ahead.run_once("integrity").status == "ok"
        store.append("f", [NewEvent("Noted", {})])
        assert here.run_once("integrity", period=here.period_of("integrity")).status == "ok"
        assert here.run_once("integrity").status == "ok"  # by hand: runs unless held right now
        (row,) = [row for row in here.status() if row.name == "integrity"]
        assert (row.last_started, row.period, row.last_position) == (format_time(NOON), format_time(NOON), 2)

    def test_a_run_by_hand_counts_for_the_scheduled_period_it_falls_in(self, store: EventStore) -> None:
        now = [NOON + timedelta(minutes=30)]
        service = Maintenance(store, clock=lambda: now[0])
        assert service.run_once("integrity").status == "ok"
        assert [row.period for row in service.status()] == [format_time(NOON)]
        assert service.run_once("integrity", period=NOON).status == "skipped"
        now[0] = NOON + timedelta(hours=1)
        assert service.run_once("integrity", period=service.period_of("integrity")).status == "ok"

    @pytest.mark.parametrize("zone", ["UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago"])
    @pytest.mark.parametrize("schedule", [{"every": 3600}, {"cron": "15 4 * * *"}])
    def test_a_clock_at_the_end_of_the_year_9999_runs_and_holds_the_job_to_the_end_of_time(
        self, store: EventStore, zone: str, schedule: dict[str, Any]
    ) -> None:
        now, job = datetime(9999, 12, 31, 23, 59, tzinfo=UTC), "integrity"
        config = MaintenanceConfig.parse({"timezone": zone, "jobs": {job: schedule}})
        service = Maintenance(store, config, clock=lambda: now)
        assert service.run_once(job).status == "ok"
        assert service.run_once(job, period=service.period_of(job)).status == "skipped"
        held = job_leases.claim(store, job, "other", now=now, lease_seconds=600, period=now, manual=True)
        assert held is not None
        job_leases.renew(store, held, now=now, lease_seconds=600)
        (row,) = [row for row in service.status() if row.name == job]
        assert row.lease_until == "9999-12-31T23:59:59.999999Z"

    def test_status_points_out_a_run_stamped_by_a_clock_ahead(self, target: Target) -> None:
        with target.open() as store:
            Maintenance(store, clock=lambda: utc_now() + timedelta(days=2)).run_once("integrity")
        schema = target.options.get("schema")
        args = ["--url", target.url, *(["--schema", schema] if schema else []), "maintain", "--status"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        assert "later than this host's clock" in result.stdout and result.stdout.count("clock ahead?") == 1


def backup_config(directory: Path, keep: int) -> MaintenanceConfig:
    return MaintenanceConfig.parse(
        {"jobs": {"backup": {"enabled": True}}, "backup": {"directory": str(directory), "keep": keep}}
    )


class TestBackupJob:
    def test_it_prunes_only_its_own_copies_never_the_live_database(self, tmp_path: Path) -> None:
        (tmp_path / "eventstore-notes.db").write_text("someone else's file")
        with EventStore.open(f"sqlite:///{tmp_path / 'eventstore-1.db'}") as store:
            store.append("f", [NewEvent("Noted", {})])
            service = Maintenance(store, backup_config(tmp_path, keep=1))
            for day in (1, 2):
                with freeze_time(datetime(2030, 1, day, 1, 0, tzinfo=UTC)):
                    assert service.run_once("backup").status == "ok"
            assert store.last_position() == 1
        assert {"eventstore-1.db", "eventstore-notes.db", "eventstore-20300102T010000000000Z.db"} == {
            path.name for path in tmp_path.glob("eventstore-*.db")
        }

    def test_copies_are_named_in_utc_and_the_newest_is_kept(self, tmp_path: Path) -> None:
        now = [utc("2026-11-01T05:45").astimezone(ZoneInfo("America/New_York"))]  # 01:45 EDT
        with EventStore.open(f"sqlite:///{tmp_path / 'live.db'}", clock=lambda: now[0]) as store:
            service = Maintenance(store, backup_config(tmp_path / "b", keep=1))
            store.append("f", [NewEvent("Noted", {})])
            assert service.run_once("backup").status == "ok"
            store.append("f", [NewEvent("Noted", {})])
            now[0] = utc("2026-11-01T06:15").astimezone(ZoneInfo("America/New_York"))  # 01:15 EST, later
            assert service.run_once("backup").details["removed"] == ["eventstore-20261101T054500000000Z.db"]
        (kept,) = (tmp_path / "b").iterdir()
        assert kept.name == "eventstore-20261101T061500000000Z.db"
        with EventStore.open(f"sqlite:///{kept}", create=False) as copy:
            assert copy.last_position() == 2

    def test_the_copy_just_made_is_kept_beside_one_stamped_by_a_clock_ahead(self, tmp_path: Path) -> None:
        now = [utc("2030-01-02T00:00")]  # a run on a clock a day ahead
        with EventStore.open(f"sqlite:///{tmp_path / 'live.db'}", clock=lambda: now[0]) as store:
            service = Maintenance(store, backup_config(tmp_path / "b", keep=1))
            store.append("f", [NewEvent("Noted", {})])
            assert service.run_once("backup").status == "ok"
            now[0] = utc("2030-01-01T01:00")  # the clock put right: tonight's backup
            store.append("f", [NewEvent("Noted", {})])
            result = service.run_once("backup")
        assert result.details["removed"] == ["eventstore-20300102T000000000000Z.db"]
        (kept,) = (tmp_path / "b").iterdir()
        assert str(kept) == result.details["path"]
