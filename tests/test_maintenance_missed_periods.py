"""Missed periods: a period that passed while no maintenance process ran is run once when one starts."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from apscheduler.events import EVENT_JOB_MISSED  # type: ignore[import-untyped]  # APScheduler 3 has no hints
from click.testing import CliRunner
from freezegun import freeze_time

from eventstore import EventStore, InvalidInput, NewEvent
from eventstore.cli import main
from eventstore.maintenance import Job, JobContext, Maintenance
from eventstore.maintenance_config import JobConfig, MaintenanceConfig

from . import maintenance_workers
from .conftest import Target
from .maintenance_workers import ONLY_THE_RECORDER, RECORDER, START, record, runs
from .workers import BARRIER_TIMEOUT, SPAWN, Children

NIGHTLY = Job("nightly", record, JobConfig(cron="0 2 * * *"))
ONLY_NIGHTLY = MaintenanceConfig(run_missed=False, jobs={"nightly": JobConfig(run_missed=True)})
"""Missed periods run for the nightly job alone: the built-in jobs stay out of the way."""


def stamp(text: str) -> str:
    return datetime.fromisoformat(text).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def started(store: EventStore) -> list[str]:
    """The period of each run of the recorder, in order."""
    return [period for kind, period in runs(store) if kind == "RunStarted"]


def ran_first_night(store: EventStore, config: MaintenanceConfig = ONLY_NIGHTLY) -> Maintenance:
    """The nightly job's run for 2030-01-01 02:00, as the scheduler runs it; the clock stays frozen there."""
    service = Maintenance(store, config, jobs=[NIGHTLY])
    assert service.run_once("nightly", period=service.period_of("nightly")).status == "ok"
    return service


def start_then_stop(service: Maintenance) -> list[tuple[str, str]]:
    """Start the service, wait for the runs of missed periods it begins, stop it: (job, status) of each."""
    service.start()
    try:
        results = service.missed_runs(timeout=BARRIER_TIMEOUT)
    finally:
        service.shutdown()
    assert results is not None, "the missed periods' runs did not end"
    return [(result.name, result.status) for result in results]


class TestAtStart:
    def test_a_period_missed_while_no_process_ran_runs_once_at_start(self, store: EventStore) -> None:
        with freeze_time("2030-01-01 02:00:30") as clock:
            service = ran_first_night(store)
            clock.move_to("2030-01-02 09:00")  # down across 02:00
            assert service.missed() == {"nightly": datetime(2030, 1, 2, 2, 0, tzinfo=UTC)}
            assert start_then_stop(service) == [("nightly", "ok")]
            assert started(store) == [stamp("2030-01-01 02:00"), stamp("2030-01-02 02:00")]
            (row,) = [row for row in service.status() if row.name == "nightly"]
            assert (row.period, row.last_status) == (stamp("2030-01-02 02:00"), "ok")
            assert service.missed() == {} and service.run_missed() == []

    def test_a_period_that_ran_is_not_run_again_before_the_next(self, store: EventStore) -> None:
        with freeze_time("2030-01-01 02:00:30") as clock:
            service = ran_first_night(store)
            clock.move_to("2030-01-02 01:59:59")
            assert service.missed() == {}
            assert start_then_stop(service) == []
        assert started(store) == [stamp("2030-01-01 02:00")]

    def test_several_missed_periods_are_one_run_for_the_latest(self, store: EventStore) -> None:
        with freeze_time("2030-01-01 02:00:30") as clock:
            service = ran_first_night(store)
            clock.move_to("2030-01-05 12:00")  # four nights missed
            assert start_then_stop(service) == [("nightly", "ok")]
            assert service.run_missed() == []
        assert started(store) == [stamp("2030-01-01 02:00"), stamp("2030-01-05 02:00")]

    @pytest.mark.parametrize(
        "config",
        [
            MaintenanceConfig(run_missed=False),
            MaintenanceConfig(jobs={"nightly": JobConfig(run_missed=False)}),
        ],
        ids=["off", "off-for-the-job"],
    )
    def test_turned_off_the_period_waits_for_the_schedule(
        self, store: EventStore, config: MaintenanceConfig
    ) -> None:
        with freeze_time("2030-01-01 02:00:30") as clock:
            service = ran_first_night(store, config)
            clock.move_to("2030-01-02 09:00")
            assert "nightly" not in service.missed()
            service.start()
            job = service.scheduler.get_job("nightly")
            assert (job.next_run_time, job.misfire_grace_time) == (datetime(2030, 1, 3, 2, tzinfo=UTC), 60)
            results = service.missed_runs(timeout=BARRIER_TIMEOUT)
            service.shutdown()
            assert results is not None and "nightly" not in [result.name for result in results]
        assert started(store) == [stamp("2030-01-01 02:00")]

    def test_on_for_the_job_while_off_for_the_rest(self, store: EventStore) -> None:
        with freeze_time("2030-01-01 12:00") as clock:
            store.append("f", [NewEvent("Noted", {})])
            clock.move_to("2030-01-02 09:00")
            assert list(Maintenance(store, ONLY_NIGHTLY, jobs=[NIGHTLY]).missed()) == ["nightly"]

    def test_a_start_while_the_last_ones_runs_still_stop_is_refused(self, store: EventStore) -> None:
        """``shutdown(wait=False)`` leaves a missed period's run going: a new ``start`` would clear
        its stop and report its results as the new start's, so it is refused until that run ends."""
        entered, release = threading.Event(), threading.Event()

        def slow(ctx: JobContext) -> dict[str, Any]:
            entered.set()
            assert release.wait(BARRIER_TIMEOUT)
            return record(ctx)

        config = MaintenanceConfig(
            run_missed=False,
            jobs={"slow": JobConfig(run_missed=True), "nightly": JobConfig(run_missed=True)},
        )
        jobs = [Job("slow", slow, JobConfig(cron="0 1 * * *")), NIGHTLY]
        with freeze_time("2030-01-01 00:00") as clock:
            store.append("f", [NewEvent("Noted", {})])
            clock.move_to("2030-01-02 09:00")
            service = Maintenance(store, config, jobs=jobs)
            service.start()
            try:
                assert entered.wait(BARRIER_TIMEOUT)
                service.shutdown(wait=False)
                with pytest.raises(InvalidInput, match="still stopping"):
                    service.start()
            finally:
                release.set()
            results = service.missed_runs(timeout=BARRIER_TIMEOUT)
            assert results is not None and [(r.name, r.status) for r in results] == [("slow", "ok")]
            assert started(store) == [stamp("2030-01-02 01:00")]  # stopped: nightly left for the next start
            assert start_then_stop(service) == [("nightly", "ok")]


class TestNeverRun:
    """A job with no period recorded missed its latest one only if the store held an event by then."""

    def test_a_new_empty_store_runs_nothing_at_start(self, store: EventStore) -> None:
        with freeze_time("2030-01-02 09:00:02"):  # not when the scheduler runs the frequent jobs
            service = Maintenance(store, jobs=[NIGHTLY])
            assert service.missed() == {}
            assert start_then_stop(service) == []
        assert service.status() == []

    def test_a_store_in_use_before_the_period_runs_each_job_at_start(self, store: EventStore) -> None:
        with freeze_time("2030-01-01 12:00") as clock:
            store.append("f", [NewEvent("Noted", {})])
            clock.move_to("2030-01-02 09:00")
            missed = Maintenance(store, jobs=[NIGHTLY]).missed()  # the default: on for every job
            assert missed["nightly"] == missed["retention"] == datetime(2030, 1, 2, 2, tzinfo=UTC)
            assert missed["integrity"] == datetime(2030, 1, 2, 9, tzinfo=UTC)
            assert "backup" not in missed and "integrity-check" not in missed  # disabled by default
            assert start_then_stop(Maintenance(store, ONLY_NIGHTLY, jobs=[NIGHTLY])) == [("nightly", "ok")]
        assert started(store) == [stamp("2030-01-02 02:00")]

    def test_a_store_first_written_after_the_period_waits_for_the_next(self, store: EventStore) -> None:
        with freeze_time("2030-01-02 02:00:01") as clock:
            store.append("f", [NewEvent("Noted", {})])
            clock.move_to("2030-01-02 09:00")
            assert "nightly" not in Maintenance(store, jobs=[NIGHTLY]).missed()


class TestSchedulerAsleep:
    """A scheduler that wakes long after a run time (the host slept) runs the job once, when it wakes."""

    def woken_after_a_night(self, store: EventStore, config: MaintenanceConfig) -> tuple[Maintenance, Any]:
        done = threading.Event()

        def nightly(ctx: JobContext) -> Any:
            try:
                return record(ctx)
            finally:
                done.set()

        missed = threading.Event()
        with freeze_time("2030-01-01 01:59:59") as clock:
            service = Maintenance(store, config, jobs=[Job("nightly", nightly, NIGHTLY.default)])
            service.start()
            service.scheduler.add_listener(
                lambda event: missed.set() if event.job_id == "nightly" else None, EVENT_JOB_MISSED
            )
            clock.move_to("2030-01-02 09:00")
            service.scheduler.wakeup()
            assert (done if config.job("nightly").run_missed else missed).wait(BARRIER_TIMEOUT)
            service.shutdown()
        return service, clock

    def test_on_it_runs_the_period_then_current(self, store: EventStore) -> None:
        self.woken_after_a_night(store, ONLY_NIGHTLY)
        assert started(store) == [stamp("2030-01-02 02:00")]

    def test_off_the_fire_is_missed_as_before(self, store: EventStore) -> None:
        self.woken_after_a_night(store, MaintenanceConfig(run_missed=False))
        assert started(store) == []


class TestSeveralProcesses:
    def test_threads_on_three_stores_run_the_missed_period_once(self, target: Target) -> None:
        with target.open() as store:
            Maintenance(store, jobs=[RECORDER], clock=lambda: START).run_once("record", period=START)
        later = START + timedelta(minutes=10)
        stores = [target.open() for _ in range(3)]
        try:
            services = [
                Maintenance(s, ONLY_THE_RECORDER, jobs=[RECORDER], clock=lambda: later) for s in stores
            ]
            sync = threading.Barrier(len(services))

            def at_once(service: Maintenance) -> list[str]:
                sync.wait(BARRIER_TIMEOUT)
                return [result.status for result in service.run_missed()]

            with ThreadPoolExecutor(len(services)) as pool:
                statuses = [s for result in pool.map(at_once, services) for s in result]
            assert statuses.count("ok") == 1 and set(statuses) <= {"ok", "skipped"}
            assert started(stores[0]) == [stamp(str(START)), stamp(str(later))]
        finally:
            for opened in stores:
                opened.close()

    def test_processes_starting_at_once_run_the_missed_period_once(self, target: Target) -> None:
        later = START + timedelta(minutes=10)
        with target.open() as store, Children() as children:
            Maintenance(store, jobs=[RECORDER], clock=lambda: START).run_once("record", period=START)
            sync = SPAWN.Barrier(3)
            args = (target.url, target.options, later, sync)
            for _ in range(3):
                children.start(maintenance_workers.start_after_missed, *args)
            statuses = [status for result in children.results() for status in result]
            assert statuses.count("ok") == 1 and set(statuses) <= {"ok", "skipped"}
            assert started(store) == [stamp(str(START)), stamp(str(later))]
            (row,) = [row for row in Maintenance(store, jobs=[RECORDER]).status() if row.name == "record"]
            assert (row.period, row.last_status, row.owner) == (stamp(str(later)), "ok", None)


class TestConfigAndStatus:
    def test_run_missed_is_a_boolean(self) -> None:
        with pytest.raises(InvalidInput, match="run_missed"):
            MaintenanceConfig.parse({"run_missed": "no"})
        with pytest.raises(InvalidInput, match="run_missed"):
            MaintenanceConfig.parse({"jobs": {"retention": {"run_missed": 0}}})

    def test_status_shows_the_missed_period_and_the_switch(self, target: Target, tmp_path: Path) -> None:
        store_args = ["--url", target.url, *(["--schema", s] if (s := target.options.get("schema")) else [])]
        config = tmp_path / "m.toml"
        config.write_text("[jobs.quick-check]\nrun_missed = false\n")
        with freeze_time("2030-01-01 12:00") as clock:
            with target.open() as store:
                store.append("f", [NewEvent("Noted", {})])
            clock.move_to("2030-01-02 09:00")
            status = [*store_args, "maintain", "--config", str(config), "--status"]
            text = CliRunner().invoke(main, status).stdout
            lines = CliRunner().invoke(main, [*status, "--json"]).stdout.splitlines()
        by_job = {line["job"]: line for line in map(orjson.loads, lines)}
        assert (by_job["retention"]["run_missed"], by_job["retention"]["missed_period"]) == (
            True,
            stamp("2030-01-02 02:00"),
        )
        assert (by_job["quick-check"]["run_missed"], by_job["quick-check"]["missed_period"]) == (False, None)
        said = "not run; maintain runs it once, at once, when it starts"
        assert f"missed period {stamp('2030-01-02 02:00')}: {said}" in text
        (quick,) = [line for line in text.splitlines() if line.startswith("quick-check ")]
        assert "cron 15 4 * * *, missed periods not run" in quick
