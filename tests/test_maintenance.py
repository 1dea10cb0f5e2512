"""Maintenance: schedules, job leases shared through the database, run-once, the scheduler's lifecycle."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time

from eventstore import EventStore, InvalidInput, JobLeaseLost, NewEvent, StorageError, StoreClosed
from eventstore.job_leases import claim, renew
from eventstore.maintenance import Job, JobContext, Maintenance
from eventstore.maintenance_config import JobConfig, MaintenanceConfig

from . import maintenance_workers
from .conftest import Target
from .maintenance_workers import RECORDER, assert_once_each_never_overlapping, run_in_lockstep, runs
from .workers import BARRIER_TIMEOUT, SPAWN, Children

NOON = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def config(**jobs: JobConfig) -> MaintenanceConfig:
    return MaintenanceConfig(jobs={name.replace("_", "-"): job for name, job in jobs.items()})


class TestSchedules:
    def test_intervals_count_from_a_fixed_epoch(self, store: EventStore) -> None:
        service = Maintenance(store)
        with freeze_time(NOON + timedelta(seconds=10)):
            assert service.next_run_time("sweep-leases") == NOON + timedelta(seconds=30)
        with freeze_time(NOON + timedelta(seconds=40)):
            assert service.period_of("sweep-leases") == NOON + timedelta(seconds=30)

    def test_cron_runs_in_the_configured_zone(self, store: EventStore) -> None:
        paris = MaintenanceConfig(timezone="Europe/Paris", jobs={"quick-check": JobConfig(cron="15 4 * * *")})
        service = Maintenance(store, paris)
        assert service.next_run_time("quick-check", after=NOON) == datetime(2030, 1, 2, 3, 15, tzinfo=UTC)
        assert service.period_of("quick-check", NOON) == datetime(2030, 1, 1, 3, 15, tzinfo=UTC)

    def test_an_override_keeps_what_it_does_not_set(self, store: EventStore) -> None:
        service = Maintenance(store, config(integrity=JobConfig(lease_seconds=5)))
        assert (service.settings("integrity").every, service.settings("integrity").lease_seconds) == (3600, 5)
        service = Maintenance(store, config(integrity=JobConfig(cron="0 3 * * *")))
        assert (service.settings("integrity").every, service.settings("integrity").cron) == (
            None,
            "0 3 * * *",
        )

    def test_a_disabled_job_has_no_next_run(self, store: EventStore) -> None:
        service = Maintenance(store, config(snapshots=JobConfig(enabled=False)))
        assert service.next_run_time("snapshots") is None
        assert "snapshots" not in service.enabled() and "integrity-check" not in service.enabled()

    def test_unknown_jobs_and_bad_settings_are_refused(self, store: EventStore, tmp_path: Path) -> None:
        with pytest.raises(InvalidInput, match="unknown maintenance job"):
            Maintenance(store, config(sweep_lease=JobConfig(every=5)))
        with pytest.raises(InvalidInput, match="unknown maintenance job 'nope'"):
            Maintenance(store).run_once("nope")
        bad = tmp_path / "m.toml"
        bad.write_text('[jobs.integrity]\nevery = 5\ncron = "* * * * *"\n')
        with pytest.raises(InvalidInput, match="not both"):
            MaintenanceConfig.load(bad)
        with pytest.raises(InvalidInput, match="needs \\[backup\\] directory"):
            MaintenanceConfig.parse({"jobs": {"backup": {"enabled": True}}})

    @pytest.mark.parametrize("owner", ["o" * 101, "a\x00b", ""])
    def test_an_owner_no_backend_stores_alike_is_refused(self, store: EventStore, owner: str) -> None:
        with pytest.raises(InvalidInput, match="owner must be"):
            Maintenance(store, owner=owner)
        assert Maintenance(store, owner="o" * 100).run_once("integrity").status == "ok"

    @pytest.mark.parametrize("name", ["j" * 101, "a\x00b", ""])
    def test_a_job_name_no_backend_stores_alike_is_refused(self, name: str) -> None:
        with pytest.raises(InvalidInput, match="a maintenance job's name must be"):
            Job(name, lambda ctx: None, JobConfig(every=60))


class TestJobLeases:
    def test_each_period_runs_once_across_services(self, target: Target) -> None:
        def clock() -> datetime:  # both periods below have started
            return NOON + timedelta(minutes=1)

        with target.open() as first, target.open() as second:
            a, b = (
                Maintenance(first, jobs=[RECORDER], clock=clock),
                Maintenance(second, jobs=[RECORDER], clock=clock),
            )
            assert a.run_once("record", period=NOON).status == "ok"
            assert b.run_once("record", period=NOON).status == "skipped"
            assert b.run_once("record", period=NOON + timedelta(minutes=1)).status == "ok"
            assert a.run_once("record", period=NOON).status == "skipped"

    def test_a_dead_runs_lease_blocks_until_it_expires(self, store: EventStore) -> None:
        service = Maintenance(store, jobs=[RECORDER])
        with freeze_time(NOON) as clock:
            assert claim(store, "record", "dead", now=NOON, lease_seconds=600, period=NOON) is not None
            clock.move_to(NOON + timedelta(minutes=9, seconds=59))
            skipped = service.run_once("record")
            assert skipped.status == "skipped" and "running in dead" in skipped.details["reason"]
            clock.move_to(NOON + timedelta(minutes=10))
            assert service.run_once("record").status == "ok"

    def test_a_period_whose_run_died_is_not_said_to_have_run(self, store: EventStore) -> None:
        service = Maintenance(store, jobs=[RECORDER], clock=lambda: NOON + timedelta(minutes=10))
        assert claim(store, "record", "dead", now=NOON, lease_seconds=600, period=NOON) is not None
        skipped = service.run_once("record", period=NOON)
        assert skipped.status == "skipped" and "already ran" not in skipped.details["reason"]
        assert skipped.details["reason"].startswith(
            "the run for this period (2030-01-01T12:00:00.000000Z) in dead"
        )

    def test_renewing_a_lease_taken_over_is_lease_lost(self, store: EventStore) -> None:
        held = claim(store, "record", "slow", now=NOON, lease_seconds=60, period=NOON)
        later = NOON + timedelta(minutes=2)
        assert held is not None and claim(store, "record", "new", now=later, lease_seconds=60, period=later)
        with pytest.raises(JobLeaseLost, match="now held by 'new'") as lost:
            renew(store, held, now=later, lease_seconds=60)
        assert (lost.value.job, lost.value.owner) == ("record", "slow")

    def test_a_run_taken_over_without_renewing_is_lost(self, target: Target) -> None:
        now = [NOON]
        with target.open(clock=lambda: now[0]) as first, target.open(clock=lambda: now[0]) as second:
            other = Maintenance(second, jobs=[Job("slow", lambda ctx: {"by": "B"}, JobConfig(every=3600))])

            def outlive_the_lease(ctx: JobContext) -> dict[str, str]:
                now[0] += timedelta(seconds=120)
                assert other.run_once("slow").status == "ok"  # B takes the expired lease over
                return {"by": "A"}

            slow = Job("slow", outlive_the_lease, JobConfig(every=3600, lease_seconds=60))
            result = Maintenance(first, jobs=[slow], owner="A").run_once("slow")
            assert (result.status, result.details) == ("lost", {"by": "A"})
            assert "the lease of 'A' expired before the run ended" in (result.error or "")
            (row,) = [row for row in other.status() if row.name == "slow"]
            assert row.last_result == {"by": "B"}

    def test_a_summary_with_non_string_keys_is_recorded(self, store: EventStore) -> None:
        def tally(ctx: JobContext) -> dict[object, object]:
            return {200: 3, 404: 1, "when": NOON}

        service = Maintenance(store, jobs=[Job("tally", tally, JobConfig(every=60))], clock=lambda: NOON)
        assert service.run_once("tally", period=NOON).status == "ok"
        rows = {row.name: row for row in service.status()}
        assert rows["tally"].last_result == {"200": 3, "404": 1, "when": "2030-01-01T12:00:00+00:00"}

    def test_the_job_row_records_each_run(self, store: EventStore, caplog: pytest.LogCaptureFixture) -> None:
        def boom(ctx: JobContext) -> None:
            raise RuntimeError("boom")

        service = Maintenance(
            store, jobs=[RECORDER, Job("boom", boom, JobConfig(every=60))], clock=lambda: NOON
        )
        service.run_once("record", period=NOON)
        with caplog.at_level(logging.ERROR, logger="eventstore.maintenance"):
            assert service.run_once("boom").error == "RuntimeError: boom"
        assert "boom failed" in caplog.text
        rows = {row.name: row for row in service.status()}
        assert (rows["record"].last_status, rows["record"].owner) == ("ok", None)
        assert rows["record"].last_result == {"period": "2030-01-01T12:00:00.000000Z"}
        assert (rows["boom"].last_status, rows["boom"].last_error) == ("failed", "RuntimeError: boom")

    def test_a_failure_is_one_log_line_with_its_traceback_only_at_debug(
        self, store: EventStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        def broken(ctx: JobContext) -> None:
            raise KeyError("a bug")

        service = Maintenance(
            store,
            jobs=[Job("broken", broken, JobConfig(every=60))],
            clock=lambda: NOON + timedelta(minutes=1),
        )
        with caplog.at_level(logging.INFO, logger="eventstore.maintenance"):
            assert service.run_once("broken", period=NOON).error == "KeyError: 'a bug'"
        (failure,) = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert (
            failure.getMessage() == "maintenance: broken failed: KeyError: 'a bug'" and not failure.exc_info
        )
        with caplog.at_level(logging.DEBUG, logger="eventstore.maintenance"):
            service.run_once("broken", period=NOON + timedelta(minutes=1))
        assert caplog.records[-1].exc_info is not None

    def test_the_job_table_reads_through_the_store(self, target: Target) -> None:
        with target.open() as store:
            with store.engine.begin() as conn:
                conn.exec_driver_sql("DROP TABLE maintenance_jobs")
            with pytest.raises(StorageError, match="maintenance_jobs"):
                Maintenance(store).status()
        with pytest.raises(StoreClosed):
            Maintenance(store).status()


class TestConcurrentServices:
    def test_threads_on_two_stores_run_each_period_once(self, target: Target) -> None:
        with target.open() as first, target.open() as second:
            services = [Maintenance(s, jobs=[RECORDER]) for s in (first, second, first, second)]
            sync = threading.Barrier(len(services))
            with ThreadPoolExecutor(len(services)) as pool:
                results = pool.map(lambda service: run_in_lockstep(service, 6, sync), services)
                statuses = [s for result in results for s in result]
            assert statuses.count("ok") == 6
            assert_once_each_never_overlapping(first, 6)

    def test_processes_run_each_period_once(self, target: Target) -> None:
        with target.open() as store, Children() as children:
            sync = SPAWN.Barrier(2)
            for _ in range(2):
                children.start(maintenance_workers.run_periods, target.url, target.options, 8, sync)
            statuses = [s for result in children.results() for s in result]
            assert statuses.count("ok") == 8
            assert_once_each_never_overlapping(store, 8)


class TestScheduler:
    def test_start_schedules_the_enabled_jobs(self, store: EventStore) -> None:
        with Maintenance(store, config(backup=JobConfig(enabled=False))) as service:
            service.start()
            assert {job.id for job in service.scheduler.get_jobs()} == set(service.enabled())
            with pytest.raises(InvalidInput, match="already started"):
                service.start()
        with pytest.raises(InvalidInput, match="not started"):
            service.scheduler  # noqa: B018  # the property raises after shutdown

    def test_with_run_missed_off_a_period_missed_before_start_is_not_run_at_start(
        self, store: EventStore
    ) -> None:
        """docs/operations.md, missed periods: with ``run_missed = false``, a process started after a
        nightly run's time (say, down at 02:00) waits for the next one; ``--once`` runs it now."""
        with freeze_time("2030-01-01 12:00") as clock:
            store.append("f", [NewEvent("Noted", {})])  # a store in use: with run_missed on, it would run
            clock.move_to("2030-01-02 09:00:02")
            with Maintenance(store, MaintenanceConfig(run_missed=False)) as service:
                now = service.clock()
                assert service.period_of("retention") <= now  # a period that started, never run
                service.start()
                job = service.scheduler.get_job("retention")
                assert job.next_run_time > now and job.next_run_time == service.next_run_time("retention")
                assert service.missed_runs(timeout=BARRIER_TIMEOUT) == []
        assert [row for row in service.status() if row.name == "retention"] == []

    def test_a_job_fired_by_the_scheduler_runs_and_is_recorded(self, store: EventStore) -> None:
        ran = threading.Event()
        probe = Job("probe", lambda ctx: ran.set(), JobConfig(every=3600))
        with Maintenance(store, jobs=[probe]) as service:
            service.start()
            service.scheduler.modify_job("probe", next_run_time=datetime.now(UTC))
            assert ran.wait(BARRIER_TIMEOUT)
        (row,) = [row for row in service.status() if row.name == "probe"]
        assert row.last_status == "ok" and row.period is not None and row.period.endswith(":00:00.000000Z")

    def test_a_run_whose_end_cannot_be_recorded_says_so_once_not_that_it_could_not_run(
        self, store: EventStore, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def refused(*_args: object, **_kwargs: object) -> bool:  # the database went away meanwhile
            raise StorageError("PostgreSQL error: connection failed")

        monkeypatch.setattr("eventstore.job_leases.finish", refused)
        with caplog.at_level(logging.ERROR, logger="eventstore.maintenance"):
            Maintenance(store, jobs=[RECORDER])._fire("record")  # what the scheduler calls
        (logged,) = caplog.records
        assert logged.getMessage() == (
            "maintenance: record ok, but recording its end failed (the next run takes its claim over): "
            "StorageError: PostgreSQL error: connection failed"
        )
        assert [kind for kind, _period in runs(store)] == ["RunStarted", "RunEnded"]  # it did run
        with pytest.raises(StorageError, match="connection failed"):  # by hand, the caller gets the error
            Maintenance(store, jobs=[RECORDER]).run_once("record")

    def test_a_run_that_cannot_start_is_logged_not_raised_on_the_scheduler_thread(
        self, store: EventStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        with store.engine.begin() as conn:  # the claim's table is gone: the claim itself fails
            conn.exec_driver_sql("DROP TABLE maintenance_jobs")
        with caplog.at_level(logging.ERROR, logger="eventstore.maintenance"):
            Maintenance(store, jobs=[RECORDER])._fire("record")  # what the scheduler calls
        (logged,) = caplog.records
        assert logged.getMessage().startswith("maintenance: record could not run: StorageError: ")
        assert "maintenance_jobs" in logged.getMessage() and "\n" not in logged.getMessage()
        assert runs(store) == []  # the job itself never ran
