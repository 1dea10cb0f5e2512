"""Maintenance schedules and settings: crontab's days, run times the scheduler moves past, strict values."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]  # no hints
from freezegun import freeze_time
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore import InvalidInput
from eventstore.maintenance_config import DEFAULT_JOBS, MaintenanceConfig, ZonedCron
from eventstore.signing import generate_key, save_key_pair

TUESDAY = datetime(2030, 1, 1, tzinfo=UTC)
"""2030-01-01 was a Tuesday; 2030-01-06 a Sunday."""


def runs(cron: str, start: datetime, count: int) -> list[date]:
    """The days of the first ``count`` runs at or after ``start``, asked as APScheduler asks."""
    trigger, found, previous = ZonedCron(cron, UTC), [], None
    for _ in range(count):
        previous = trigger.get_next_fire_time(previous, start)
        found.append(previous.date())
    return found


def days(*numbers: int, month: int = 1) -> list[date]:
    return [date(2030, month, number) for number in numbers]


class TestCrontabDays:
    @pytest.mark.parametrize(
        ("cron", "start", "expected"),
        [
            ("45 4 * * 0", TUESDAY, days(6, 13)),  # 0 is Sunday
            ("0 0 * * 7", TUESDAY, days(6, 13)),  # and so is 7
            ("0 9 * * 1-5", datetime(2030, 1, 5, tzinfo=UTC), days(7, 8, 9, 10, 11, 14)),  # Monday to Friday
            ("0 0 * * */2", TUESDAY, days(1, 3, 5, 6, 8)),  # 0, 2, 4, 6: Sunday, Tuesday, Thursday, Saturday
            ("0 0 * * 5-7", TUESDAY, days(4, 5, 6, 11)),
            ("0 0 * * fri-sun", TUESDAY, days(4, 5, 6, 11)),
            ("0 0 * * SUN,3", TUESDAY, days(2, 6, 9)),
            ("0 0 1 * 1", datetime(2030, 1, 28, tzinfo=UTC), [*days(28), *days(1, 4, month=2)]),  # either
            ("0 0 */2 * 1", TUESDAY, days(7, 21)),  # a day field starting with `*`: both must match
        ],
    )
    def test_the_day_of_week_is_read_as_crontab_reads_it(
        self, cron: str, start: datetime, expected: list[date]
    ) -> None:
        assert runs(cron, start, len(expected)) == expected

    @given(
        st.lists(st.integers(0, 7), min_size=1, max_size=4),
        st.dates(date(2001, 1, 1), date(2040, 12, 31)),
    )
    @settings(max_examples=30, deadline=None)
    def test_a_week_of_runs_is_the_days_listed(self, numbers: list[int], start: date) -> None:
        moment = datetime(start.year, start.month, start.day, tzinfo=UTC)
        cron = "0 0 * * " + ",".join(map(str, numbers))
        week = [
            d
            for d in (start + timedelta(days=n) for n in range(7))
            if d.isoweekday() % 7 in {n % 7 for n in numbers}
        ]
        assert runs(cron, moment, len(week)) == week

    def test_the_default_weekly_integrity_check_runs_on_sunday(self) -> None:
        trigger = DEFAULT_JOBS["integrity-check"].trigger(UTC)
        assert trigger.next_run(TUESDAY) == datetime(2030, 1, 6, 4, 45, tzinfo=UTC)
        assert DEFAULT_JOBS["integrity-check"].period_of(datetime(2030, 1, 9, tzinfo=UTC), UTC) == datetime(
            2030, 1, 6, 4, 45, tzinfo=UTC
        )

    @pytest.mark.parametrize("weekday", ["8", "funday", "5-1", "*/0", "1-"])
    def test_a_day_of_week_crontab_does_not_know_is_refused(self, weekday: str) -> None:
        with pytest.raises(InvalidInput, match="not a crontab expression"):
            MaintenanceConfig.parse({"jobs": {"integrity": {"cron": f"0 0 * * {weekday}"}}})


class TestFireTimes:
    FIRE = datetime(2030, 1, 2, 4, 15, tzinfo=UTC)

    def test_the_next_run_after_a_run_is_later_even_when_now_is_that_run(self) -> None:
        trigger = ZonedCron("15 4 * * *", UTC)
        assert trigger.get_next_fire_time(self.FIRE, self.FIRE) == self.FIRE + timedelta(days=1)

    def test_the_scheduler_waking_exactly_at_a_run_moves_past_it(self) -> None:
        class Counted(ZonedCron):  # type: ignore[misc]  # APScheduler 3 has no hints
            asked = 0

            def get_next_fire_time(self, previous: datetime | None, now: datetime) -> datetime | None:
                self.asked += 1
                assert self.asked < 100, "the scheduler keeps asking: the same run time comes back"
                return super().get_next_fire_time(previous, now)

        with freeze_time(self.FIRE):
            job = BackgroundScheduler(timezone=UTC).add_job(
                list, Counted("15 4 * * *", UTC), next_run_time=self.FIRE
            )
            assert job._get_run_times(datetime.now(UTC)) == [self.FIRE]  # what _process_jobs calls


class TestStrictSettings:
    @pytest.mark.parametrize(
        "data",
        [
            {"jobs": {"integrity": {"every": True}}},
            {"jobs": {"integrity": {"every": "60"}}},
            {"jobs": {"integrity": {"enabled": "no"}}},
            {"jobs": {"integrity": {"enabled": 0}}},
            {"jobs": {"integrity": {"lease_seconds": True}}},
            {"retention": {"max_flows": True}},
            {"snapshots": {"every": True}},
            {"integrity": {"batch_size": True}},
            {"sweeper": {"batch_size": True}},
            {"backup": {"keep": 2.0}},
        ],
    )
    def test_a_value_of_the_wrong_type_is_refused_not_coerced(self, data: dict[str, Any]) -> None:
        with pytest.raises(InvalidInput, match="valid"):
            MaintenanceConfig.parse(data)

    @pytest.mark.parametrize(
        "data",
        [
            {"snapshots": {"every": 2**31}},  # revisions are 32-bit: PostgreSQL refused every run
            {"integrity": {"batch_size": 2**63}},
            {"retention": {"max_flows": 2**63}},
        ],
    )
    def test_a_number_every_run_would_choke_on_is_refused_at_load(self, data: dict[str, Any]) -> None:
        with pytest.raises(InvalidInput, match="less than or equal to"):
            MaintenanceConfig.parse(data)

    @pytest.mark.parametrize(
        "data", [{"backup": {"directory": ""}}, {"retention": {"archive_dir": ""}}], ids=["backup", "archive"]
    )
    def test_an_empty_directory_is_refused_not_read_as_the_working_one(self, data: dict[str, Any]) -> None:
        with pytest.raises(InvalidInput, match="an empty path; name a directory"):
            MaintenanceConfig.parse(data)

    def test_a_whole_number_of_seconds_is_still_a_number(self) -> None:
        assert MaintenanceConfig.parse({"jobs": {"integrity": {"every": 60}}}).job("integrity").every == 60.0

    def test_a_tzdata_directory_is_an_unknown_zone(self) -> None:
        with pytest.raises(InvalidInput, match="unknown time zone 'America'"):
            MaintenanceConfig.parse({"timezone": "America"})


class TestSigningKeyFile:
    def load(self, tmp_path: Path, key: Path) -> MaintenanceConfig:
        config = tmp_path / "maintenance.toml"
        config.write_text(f'[integrity]\nsigning_key_file = "{key}"\n')
        return MaintenanceConfig.load(config)

    def test_a_missing_key_file_is_refused_at_load(self, tmp_path: Path) -> None:
        with pytest.raises(InvalidInput, match="cannot read key file"):
            self.load(tmp_path, tmp_path / "absent.pem")

    def test_a_file_that_is_not_a_pem_key_is_refused_at_load(self, tmp_path: Path) -> None:
        (tmp_path / "bad.pem").write_text("not a key\n")
        with pytest.raises(InvalidInput, match="not an unencrypted PEM private key"):
            self.load(tmp_path, tmp_path / "bad.pem")

    def test_a_device_or_a_fifo_is_refused_without_reading_it(self, tmp_path: Path) -> None:
        os.mkfifo(tmp_path / "fifo")  # reading it waited for a writer for ever; /dev/zero filled memory
        for path in (Path("/dev/zero"), tmp_path / "fifo"):
            with pytest.raises(InvalidInput, match=f"cannot read key file {path}: not a regular file"):
                self.load(tmp_path, path)

    def test_a_file_far_larger_than_a_key_is_refused(self, tmp_path: Path) -> None:
        (tmp_path / "big.pem").write_bytes(b"-" * 100_000)
        with pytest.raises(InvalidInput, match=r"big\.pem: 100,000 bytes is no key file"):
            self.load(tmp_path, tmp_path / "big.pem")

    def test_an_ed25519_key_is_accepted(self, tmp_path: Path) -> None:
        private, _ = save_key_pair(generate_key(), tmp_path / "key.pem")
        assert self.load(tmp_path, private).integrity.signing_key_file == private
