"""``Maintenance``: the store's scheduled jobs on an APScheduler ``BackgroundScheduler``.

Each job runs on its schedule (interval or cron, ``MaintenanceConfig``) and
can be run once by name (``run_once``, ``eventstore maintain --once JOB``).
Several maintenance processes may run against one database: a run first
claims its job's row in ``maintenance_jobs`` for the period it belongs to
(``eventstore.job_leases``), so each job runs once per period, not once per
process, and never twice at once. While it holds the claim it holds the
job's lock that dies with its process (``eventstore.process_locks``), so a
run killed outright is known dead at once and its period run again. A
period that passed while no process ran is run once when the service
starts (``eventstore.missed_periods``), unless ``run_missed`` is off.

Layering: ``eventstore`` never imports ``projections`` at module level. The
jobs that need read models (catch-up, the lease sweeper) import it inside the
job, as the CLI does; everything else here is the store's own.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from apscheduler.schedulers.background import (  # type: ignore[import-untyped]  # APScheduler 3 has no hints
    BackgroundScheduler,
)

from . import job_leases, missed_periods, process_locks
from .checks import check_store, check_text, shown
from .errors import InvalidInput, JobLeaseLost
from .integrity import format_time
from .job_leases import Claim, JobStatus
from .maintenance_config import DEFAULT_JOBS, JobConfig, MaintenanceConfig
from .store import Clock, EventStore
from .wording import nouns

log = logging.getLogger("eventstore.maintenance")

JobFunction = Callable[["JobContext"], Mapping[str, Any] | None]
"""A job: does its work through the context, returns a JSON-able summary (or None)."""


class JobSkipped(Exception):  # control flow, not an error: the run had nothing to do
    """Raised by a job that does not apply here (say, SQLite housekeeping on PostgreSQL)."""


class JobFailed(Exception):
    """Raised by a job that did part of its work and failed at the rest: the run is ``failed``, its
    message the error, and ``details`` the summary of what it did (say, the catch-up projections
    that advanced while another failed)."""

    def __init__(self, message: str, details: Mapping[str, Any]) -> None:
        self.details = dict(details)
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Job:
    """A job the service runs: its name, what it does, and its default schedule."""

    name: str
    run: JobFunction
    default: JobConfig

    def __post_init__(self) -> None:
        check_label("a maintenance job's name", self.name)


@dataclass(frozen=True, slots=True)
class JobResult:
    """How one ``run_once`` went: ``ok``, ``failed``, ``skipped`` (not claimed, nothing to do) or ``lost``."""

    name: str
    status: str
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class JobContext:
    """What a running job gets: the store, its settings, the clock, and its lease."""

    def __init__(self, service: Maintenance, held: Claim, settings: JobConfig) -> None:
        self.service = service
        self.store = service.store
        self.config = service.config
        self.name = held.name
        self.period = held.period
        """The scheduled time this run is for, as canonical UTC text."""
        self.position = held.position
        """Where the last run of this job left off (``maintenance_jobs.last_position``)."""
        self._held = held
        self._settings = settings
        self._renewed = self.now()

    def now(self) -> datetime:
        return self.service.clock()

    @property
    def stopping(self) -> bool:
        """True once the service is shutting down: a long job should return at its next batch."""
        return self.service._stopping.is_set()

    def renew(self, *, position: int | None = None) -> None:
        """Extend the job's lease, recording ``position`` as progress; ``JobLeaseLost`` if taken over.

        Long jobs call this between batches, so the lease never runs out while they work.
        """
        job_leases.renew(
            self.store,
            self._held,
            now=self.now(),
            lease_seconds=self._settings.lease_seconds,
            position=position,
        )
        self._renewed = self.now()
        if position is not None:
            self.position = position

    def renew_if_due(self) -> None:
        """Renew the lease if a tenth of it has passed since it was last renewed (``JobLeaseLost`` too).

        For progress hooks, which may be called far more often than the lease
        needs renewing: most calls only read the clock.
        """
        if (self.now() - self._renewed).total_seconds() >= self._settings.lease_seconds / 10:
            self.renew()


class Maintenance:
    """The maintenance jobs of one store, on a schedule or one at a time.

    ``catch_up`` are the catch-up projections to keep current; ``jobs`` adds
    jobs of your own (or replaces a built-in one of the same name);
    ``signing_key`` (for signed checkpoints) and ``retention_policy`` (for
    ``eventstore.retention``) override what the config names. The clock
    defaults to the store's, which ``FlowService`` also uses to judge leases.
    """

    def __init__(
        self,
        store: EventStore,
        config: MaintenanceConfig | None = None,
        *,
        catch_up: Sequence[Any] = (),
        jobs: Sequence[Job] = (),
        clock: Clock | None = None,
        owner: str | None = None,
        signing_key: Any = None,
        retention_policy: Any = None,
    ) -> None:
        from .maintenance_jobs import builtin_jobs

        check_store(store)
        self.store = store
        self.config = config if config is not None else MaintenanceConfig()
        self.clock: Clock = clock if clock is not None else store.clock
        self.owner = (
            check_label("owner", owner)
            if owner is not None
            else f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}"
        )
        self.catch_up = list(catch_up)
        self.signing_key = signing_key
        self.retention_policy = retention_policy
        self.jobs: dict[str, Job] = {job.name: job for job in (*builtin_jobs(), *jobs)}
        unknown = sorted(set(self.config.jobs) - set(self.jobs))
        if unknown:
            raise InvalidInput(
                f"unknown maintenance {nouns(len(unknown), 'job')} {', '.join(unknown)}; "
                f"known: {', '.join(self.jobs)}"
            )
        self.state: dict[str, Any] = {}
        """Scratch space that jobs keep between runs in this process (say, catch-up runners)."""
        self._stopping = threading.Event()
        self._scheduler: BackgroundScheduler | None = None
        self._catching_up: threading.Thread | None = None
        self._missed_done: threading.Event | None = None
        self._missed_results: list[JobResult] = []

    # -- settings and schedules ------------------------------------------------
    def settings(self, name: str) -> JobConfig:
        """The effective schedule and lease of a job."""
        job = self._job(name)
        return self.config.job(name, job.default)

    def enabled(self) -> list[str]:
        return [name for name in self.jobs if self.settings(name).enabled]

    def next_run_time(self, name: str, after: datetime | None = None) -> datetime | None:
        """When the job would next run after ``after`` (default: now), or None if disabled."""
        settings = self.settings(name)
        if not settings.enabled:
            return None
        moment = after if after is not None else self.clock()
        found: datetime | None = settings.trigger(self.config.zone).get_next_fire_time(None, moment)
        return found

    def period_of(self, name: str, moment: datetime | None = None) -> datetime:
        """The period a run of ``name`` at ``moment`` belongs to (its latest scheduled time)."""
        return self.settings(name).period_of(moment or self.clock(), self.config.zone)

    def missed(self, *, now: datetime | None = None) -> dict[str, datetime]:
        """The jobs whose latest due period has not run and that run missed periods, with that period.

        ``eventstore.missed_periods`` says when a period counts as missed,
        for a job that has never run too. Disabled jobs and jobs with
        ``run_missed`` off have none.
        """
        moment = now if now is not None else self._now()
        rows = {row.name: row.period for row in self.status()}
        first: list[datetime | None] = []  # read once, and only for a job that never ran

        def first_recorded() -> datetime | None:
            if not first:
                first.append(missed_periods.first_recorded(self.store))
            return first[0]

        found = {}
        for name in self.jobs:
            settings, last = self.settings(name), rows.get(name)
            if not (settings.enabled and settings.scheduled and settings.run_missed):
                continue
            period = missed_periods.missed_period(
                settings,
                self.config.zone,
                now=moment,
                last_period=last,
                first_recorded=first_recorded() if last is None else None,
            )
            if period is not None:
                found[name] = period
        return found

    def run_missed(self) -> list[JobResult]:
        """Run each job's missed period once, one job after another; what ``start`` does first.

        Each run is a scheduled run for its job's latest due period: it goes
        through the job's claim, so of several processes doing this at once
        one runs each period and the others are ``skipped``. A job whose
        period another process ran meanwhile is left out, as is everything
        once the service is stopping; so is a run that could not start or
        could not record its end, which is logged as a scheduled run's is.
        """
        results = []
        for name in self.missed():
            if self._stopping.is_set():
                break
            job, settings, now = self._job(name), self.settings(name), self._now()
            period = self.missed(now=now).get(name)  # again: another process may have run it meanwhile
            if period is None:
                continue
            log.info("maintenance: %s missed period %s: running it now", name, format_time(period))
            try:
                results.append(self._run(job, settings, now, period, manual=False))
            except _EndNotRecorded:
                pass  # logged as such: the run went ahead, only its end is not recorded
            except Exception as exc:  # say, the database refused the claim: the next job may still run
                log_error(f"maintenance: {name} could not run", exc)
        return results

    def status(self) -> list[JobStatus]:
        """The ``maintenance_jobs`` rows: who holds each job and how its last run went."""
        return job_leases.job_status(self.store)

    # -- running -------------------------------------------------------------------
    def run_once(self, name: str, *, period: datetime | None = None) -> JobResult:
        """Run a job now, if no other process is running it; return how it went.

        ``period`` is the scheduled time the run is for (the scheduler's
        runs give theirs); a run for a period that already ran is skipped. A
        period that has not started yet (later than the job's current
        period, or than now for a job without a schedule) is ``InvalidInput``
        and nothing is written: a run recorded for it would count every
        period until then as run. Without ``period``, the run is by hand: it
        runs unless the job is held right now, and counts for the scheduled
        period it falls in, so it never holds up the next one.
        """
        job = self._job(name)
        settings = self.settings(name)
        now = self._now()
        manual, period = (
            (True, self._current_period(settings, now))
            if period is None
            else (False, self._check_period(name, settings, period, now))
        )
        try:
            return self._run(job, settings, now, period, manual=manual)
        except _EndNotRecorded as unrecorded:  # logged; the caller gets the database's own error
            raise unrecorded.cause from None

    def _now(self) -> datetime:
        now = self.clock()
        format_time(now)  # a naive or non-datetime clock is InvalidInput here, before any period arithmetic
        return now

    def _current_period(self, settings: JobConfig, now: datetime) -> datetime:
        """The period a run at ``now`` counts for: its scheduled period, or ``now`` for an unscheduled job."""
        return settings.period_of(now, self.config.zone) if settings.scheduled else now

    def _check_period(self, name: str, settings: JobConfig, period: object, now: datetime) -> datetime:
        """``period``, a timezone-aware datetime no later than the job's current period."""
        if not isinstance(period, datetime) or period.utcoffset() is None:
            raise InvalidInput(
                f"maintenance job {name!r}: a period must be a timezone-aware datetime, not {shown(period)}"
            )
        current = self._current_period(settings, now)
        if period > current:
            raise InvalidInput(
                f"maintenance job {name!r}: period {format_time(period)} has not started yet "
                f"(now is {format_time(now)}; the latest period it can run for is {format_time(current)}): "
                "a run recorded for it would count every period until then as run"
            )
        return period

    def _run(
        self, job: Job, settings: JobConfig, now: datetime, period: datetime, *, manual: bool
    ) -> JobResult:
        # The job's lock dies with this process: held from before the claim until after ``finish``, it
        # tells the others at once that a claim made with it and still standing is a dead run's.
        # Another process holding it (taking a dead run's claim over, or on its way out) is no reason
        # to skip: the claim decides, without the lock, by the lease alone.
        lock = process_locks.take(self.store, job_leases.LOCK_KIND, job.name)
        try:
            done = self._run_claimed(
                job, settings, now, period, manual=manual, locked=bool(lock and lock.held)
            )
        finally:
            if lock is not None:
                lock.release()
        # Why not, asked once the lock is let go: held, it would keep a dead run's claim looking alive.
        return (
            done if done is not None else JobResult(job.name, "skipped", {"reason": self._why_not(job.name)})
        )

    def _run_claimed(
        self, job: Job, settings: JobConfig, now: datetime, period: datetime, *, manual: bool, locked: bool
    ) -> JobResult | None:
        """Claim the job and run it; None if it could not be claimed."""
        name = job.name
        held = job_leases.claim(
            self.store,
            name,
            self.owner,
            now=now,
            lease_seconds=settings.lease_seconds,
            period=period,
            manual=manual,
            locked=locked,
        )
        if held is None:
            return None
        log.info("maintenance: %s started (period %s)", name, held.period)
        try:
            details = dict(job.run(JobContext(self, held, settings)) or {})
        except JobSkipped as skipped:
            return self._finish(held, JobResult(name, "skipped", {"reason": str(skipped)}))
        except JobLeaseLost as lost:
            log.warning("maintenance: %s stopped: %s", name, lost)
            return JobResult(name, "lost", error=str(lost))
        except JobFailed as failed:  # each of its failures was logged as it happened
            return self._finish(held, JobResult(name, "failed", failed.details, error=str(failed)))
        except Exception as exc:  # a job's failure, a bug included, is recorded and logged; it never escapes
            log_error(f"maintenance: {name} failed", exc)
            return self._finish(held, JobResult(name, "failed", error=f"{type(exc).__name__}: {exc}"))
        except BaseException:
            job_leases.finish(self.store, held, now=self.clock(), status="interrupted")
            raise
        return self._finish(held, JobResult(name, "ok", details))

    def _finish(self, held: Claim, result: JobResult) -> JobResult:
        if result.status != "failed":  # a failure was logged already
            log.info("maintenance: %s %s %s", result.name, result.status, result.details)
        try:
            kept = job_leases.finish(
                self.store,
                held,
                now=self.clock(),
                status=result.status,
                error=result.error,
                result=result.details,
            )
        except Exception as exc:  # the database went away meanwhile, say: the run is over all the same
            log_error(
                f"maintenance: {result.name} {result.status}, but recording its end failed "
                "(the next run takes its claim over)",
                exc,
            )
            raise _EndNotRecorded(exc) from exc
        if kept:
            return result
        log.warning("maintenance: %s ran past its lease; another process may have run it too", result.name)
        lost = f"maintenance job {result.name!r}: the lease of {held.owner!r} expired before the run ended"
        if result.error is not None:
            lost += f"; the run {result.status}: {result.error}"
        return JobResult(result.name, "lost", result.details, error=lost)

    def _why_not(self, name: str) -> str:
        row = next((s for s in self.status() if s.name == name), None)
        now = format_time(self.clock())
        if row is not None and row.owner is not None:
            if row.last_status == job_leases.DIED:
                return (
                    f"the run for period {row.period} in {row.owner} (started {row.last_started}) no "
                    "longer holds the job's lock and recorded no end (died: its process was killed, it "
                    "could not record its end, or its lock's PostgreSQL session was ended); "
                    "the next run for that period or a later one takes it over at once"
                )
            if (row.lease_until or "") > now:
                return f"running in {row.owner} until {row.lease_until}"
            return (
                f"the run for this period ({row.period}) in {row.owner} stopped without finishing "
                f"(its lease expired at {row.lease_until}); the next period runs it"
            )
        return f"already ran for this period ({row.period if row else '?'})"

    def _job(self, name: str) -> Job:
        job = self.jobs.get(name)
        if job is None:
            raise InvalidInput(f"unknown maintenance job {name!r}; known: {', '.join(self.jobs)}")
        return job

    # -- the scheduler ---------------------------------------------------------------
    @property
    def scheduler(self) -> BackgroundScheduler:
        """The APScheduler scheduler (created by ``start``), for inspection."""
        if self._scheduler is None:
            raise InvalidInput("the maintenance scheduler is not started")
        return self._scheduler

    def start(self) -> None:
        """Schedule every enabled job on a background scheduler and start it."""
        if self._scheduler is not None:
            raise InvalidInput("the maintenance scheduler is already started")
        if self._catching_up is not None and self._catching_up.is_alive():
            # shutdown(wait=False) left it going: clearing the stop would set it off again
            raise InvalidInput(
                "the runs of missed periods the last start began are still stopping: "
                "wait for them (missed_runs) before starting again"
            )
        self._stopping.clear()
        scheduler = BackgroundScheduler(
            timezone=self.config.zone,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
        )
        for name in self.enabled():
            settings = self.settings(name)
            # Running missed periods, a fire the scheduler missed (the host slept, the process was
            # stopped) runs once when it wakes, however late, for the period then current.
            late = {"misfire_grace_time": None} if settings.run_missed else {}
            trigger = settings.trigger(self.config.zone)
            scheduler.add_job(self._fire, trigger=trigger, args=[name], id=name, name=name, **late)
        scheduler.start()
        self._scheduler = scheduler
        self._missed_done, self._missed_results = threading.Event(), []
        self._catching_up = threading.Thread(target=self._run_missed_logged, name="eventstore-missed-periods")
        self._catching_up.start()
        log.info("maintenance: started %s as %s", ", ".join(self.enabled()) or "no jobs", self.owner)

    def _run_missed_logged(self) -> None:
        """``run_missed`` on its own thread: what goes wrong is logged, never raised."""
        try:
            self._missed_results = self.run_missed()
        except Exception as exc:  # say, the database is unreachable: the schedule goes on
            log_error("maintenance: could not run the missed periods", exc)
        finally:
            if self._missed_done is not None:
                self._missed_done.set()

    def missed_runs(self, *, timeout: float | None = None) -> list[JobResult] | None:
        """Wait for the runs of missed periods the last ``start`` began; their results, or None if
        they are still going after ``timeout`` seconds. Stopping the service before one began leaves
        it out, as the scheduler leaves out a run not begun."""
        if self._missed_done is None:
            raise InvalidInput("the maintenance scheduler was never started")
        return list(self._missed_results) if self._missed_done.wait(timeout) else None

    def _fire(self, name: str) -> None:
        """Run a job for its period on a scheduler thread; what goes wrong is logged, never raised.

        The period is the current one by the same reading of the clock the
        run is judged by, so it is never "not started yet", whatever the
        scheduler's timing: APScheduler 3 does not pass the scheduled time, and
        runs a job only once its own clock (this host's) has reached it. No
        tolerance is needed; a scheduler waking early finds nothing due.
        """
        try:
            job, settings, now = self._job(name), self.settings(name), self._now()
            self._run(job, settings, now, self._current_period(settings, now), manual=False)
        except _EndNotRecorded:
            pass  # logged as such: the run went ahead, only its end is not recorded
        except Exception as exc:  # say, the database refused the claim: try next period
            log_error(f"maintenance: {name} could not run", exc)

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop scheduling; with ``wait``, let running jobs finish (they stop at their next batch)."""
        self._stopping.set()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=wait)
            self._scheduler = None
            if self._catching_up is not None and wait:
                self._catching_up.join()
            log.info("maintenance: stopped")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()


MAX_LABEL_LENGTH = 100
"""The longest job name or owner: ``maintenance_jobs.name`` and ``owner`` are ``VARCHAR(100)``."""


def check_label(what: str, value: object) -> str:
    """A job name or owner every backend stores alike: 1 to 100 characters of UTF-8 text without NUL."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_LABEL_LENGTH:
        raise InvalidInput(f"{what} must be 1 to {MAX_LABEL_LENGTH} characters, not {value!r}")
    return check_text(what, value)


class _EndNotRecorded(Exception):
    """A run ended but its end could not be recorded (logged already): ``run_once`` raises ``cause``."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


def log_error(what: str, exc: Exception) -> None:
    """One line at ERROR: ``what: Type: message``; the traceback too only when DEBUG is enabled."""
    first = next(iter(str(exc).splitlines()), "")
    log.error("%s: %s: %s", what, type(exc).__name__, first, exc_info=log.isEnabledFor(logging.DEBUG))


__all__ = [
    "DEFAULT_JOBS",
    "Job",
    "JobContext",
    "JobFailed",
    "JobResult",
    "JobSkipped",
    "Maintenance",
    "MaintenanceConfig",
]
