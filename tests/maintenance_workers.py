"""A maintenance job that records its runs, and a child process that runs it for many periods.

The job appends ``RunStarted``, works a little, then appends ``RunEnded`` to
the flow ``runs``: two runs at once would show as two starts in a row, and a
period run twice as two starts for one period. ``integrity_paused`` is a
child that runs the real integrity job and stops after its first batch,
for a parent to kill there.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from typing import Any

from eventstore import EventStore, NewEvent
from eventstore.maintenance import Job, JobContext, Maintenance
from eventstore.maintenance_config import DEFAULT_JOBS, IntegrityPolicy, JobConfig, MaintenanceConfig
from eventstore.maintenance_jobs import integrity

from .workers import BARRIER_TIMEOUT

CHILD_TIMEOUT = 60.0  # a bound on a child left paused, never a clock

START = datetime(2020, 1, 1, 12, 0, tzinfo=UTC)
"""The first period run: in the past, as any period given to ``run_once`` must be."""


def periods(count: int) -> list[datetime]:
    return [START + timedelta(minutes=n) for n in range(count)]


def record(ctx: JobContext) -> dict[str, Any]:
    period = ctx.period
    ctx.store.append("runs", [NewEvent("RunStarted", {"period": period, "by": ctx.service.owner})])
    time.sleep(0.01)  # work: any run overlapping this one would start in this window
    ctx.store.append("runs", [NewEvent("RunEnded", {"period": period})])
    return {"period": period}


RECORDER = Job("record", record, JobConfig(every=60))
ONLY_THE_RECORDER = MaintenanceConfig(run_missed=False, jobs={"record": JobConfig(run_missed=True)})
"""Missed periods run for the recorder alone: the built-in jobs stay out of the way."""


def runs(store: EventStore) -> list[tuple[str, str]]:
    """(type, period) of every recorded event, in order."""
    return [(e.type, e.data["period"]) for e in store.read_flow("runs")]


def assert_once_each_never_overlapping(store: EventStore, count: int) -> None:
    recorded = runs(store)
    assert [kind for kind, _ in recorded] == ["RunStarted", "RunEnded"] * count
    started = [period for kind, period in recorded if kind == "RunStarted"]
    assert sorted(started) == sorted(set(started)) and len(started) == count


def run_in_lockstep(service: Maintenance, count: int, sync: Any) -> list[str]:
    """Run the recorder for each period, all services at once (the barrier), as schedulers would fire it.

    A period's runs start only when the last period's run is over, so each
    period must run exactly once, however the claims race.
    """
    statuses = []
    for period in periods(count):
        sync.wait(BARRIER_TIMEOUT)
        statuses.append(service.run_once("record", period=period).status)
    return statuses


def run_periods(url: str, options: dict[str, Any], count: int, sync: Any) -> list[str]:
    """Child process: run the recorder for each period in lockstep with the other processes."""
    with EventStore.open(url, **options) as store:
        return run_in_lockstep(Maintenance(store, jobs=[RECORDER]), count, sync)


def start_after_missed(url: str, options: dict[str, Any], now: datetime, sync: Any) -> list[str]:
    """Child process: start maintenance at ``now`` (the recorder's period missed), all at once, and stop
    once the runs of missed periods that ``start`` began are over: their statuses."""
    with EventStore.open(url, **options) as store:
        service = Maintenance(store, ONLY_THE_RECORDER, jobs=[RECORDER], clock=lambda: now)
        sync.wait(BARRIER_TIMEOUT)
        service.start()
        try:
            results = service.missed_runs(timeout=CHILD_TIMEOUT)
        finally:
            service.shutdown(wait=True)
        assert results is not None, "the missed periods' runs did not end"
        return [result.status for result in results]


def integrity_paused(
    url: str, options: dict[str, Any], now: datetime, period: datetime, signal: Connection
) -> None:
    """Child process: run ``integrity`` as ``doomed`` at ``now`` in batches of 10; after the first
    batch's position is recorded, send "step" and pause (for the parent to SIGKILL it there)."""

    def pausing(ctx: JobContext) -> Any:
        renew = ctx.renew

        def renew_then_pause(*, position: int | None = None) -> None:
            renew(position=position)
            signal.send("step")
            threading.Event().wait(CHILD_TIMEOUT)

        ctx.renew = renew_then_pause  # type: ignore[method-assign]  # this one run pauses at its first batch
        return integrity(ctx)

    config = MaintenanceConfig(integrity=IntegrityPolicy(batch_size=10))
    with EventStore.open(url, **options) as store:
        service = Maintenance(
            store,
            config,
            jobs=[Job("integrity", pausing, DEFAULT_JOBS["integrity"])],
            clock=lambda: now,
            owner="doomed",
        )
        signal.send("ready")
        service.run_once("integrity", period=period)
        signal.send("done")
