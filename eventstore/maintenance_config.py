"""What the maintenance jobs do and when: a schedule per job (interval or cron) and each job's policy.

A ``MaintenanceConfig`` is a frozen pydantic model, so a TOML file
(``eventstore maintain --config FILE``) is checked field by field, and every
field has a default: an empty config runs every default job on its default
schedule. ``docs/operations.md`` lists the jobs and their defaults.
"""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pydantic
from apscheduler.triggers.base import BaseTrigger  # type: ignore[import-untyped]  # APScheduler 3 has no hints
from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]  # APScheduler 3 has no hints
from apscheduler.triggers.interval import (  # type: ignore[import-untyped]  # APScheduler 3 has no hints
    IntervalTrigger,
)

from .checks import validation_message
from .errors import InvalidInput

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
"""Interval schedules count from here, not from when a process started, so every
process computes the same run times and can agree on which period a run belongs to."""

FLOW_ENDINGS = ("finished", "failed", "cancelled")

MIN_EVERY = 1.0
"""The shortest interval schedule, in seconds."""
MAX_EVERY = 366 * 86400.0
"""The longest interval schedule (a leap year), in seconds; use a cron for anything rarer."""
MIN_LEASE = 1.0
MAX_LEASE = 7 * 86400.0
"""The longest lease, in seconds: a run that holds its job a week without renewing it is dead."""
CRON_HORIZON = timedelta(days=5 * 365 + 1)
"""A cron schedule must run within five years (from 2000-01-01), so ``0 0 30 2 *`` is refused."""
MAX_KEEP_DAYS = 36525.0
"""The longest retention, in days (a century); leave a status out of ``keep_days`` to keep it for ever."""


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")


_SECOND = timedelta(seconds=1)
_LOOKBACK = timedelta(days=3653)
"""How far back ``ZonedCron.last_run`` looks: ten years, more than any accepted cron leaves between runs."""
_AROUND = timedelta(days=2)
"""More than any change of a zone's offset (Samoa skipped a whole day in 2011)."""


class ZonedCron(BaseTrigger):  # type: ignore[misc]  # APScheduler 3 has no hints
    """A crontab schedule read on the wall clock of ``zone``: each matching wall time runs once.

    APScheduler 3's ``CronTrigger`` in a zone with daylight saving time can
    give the same run time again and again in the hour repeated in autumn
    (its scheduler then never moves on). Here the fields are matched against
    wall-clock time by a ``CronTrigger`` in UTC, which has no such hour, and
    each matching wall time is mapped to one instant:

    * a wall time that happens twice (autumn) runs at its first occurrence;
    * a wall time that never happens (the hour skipped in spring) runs at the
      change itself, the first instant after the gap.

    That mapping never goes backwards in time, so the runs strictly increase,
    and both the next run after a moment and the last run at or before it are
    found by bisection over wall time: a few dozen lookups, never a walk.
    """

    def __init__(self, expression: str, zone: tzinfo) -> None:
        self.expression = expression
        self.zone = zone
        self._walls = CronTrigger.from_crontab(expression, timezone=UTC)

    def __str__(self) -> str:
        return f"cron[{self.expression}, {self.zone}]"

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        """APScheduler's question: the first run after ``previous_fire_time``, else at or after ``now``."""
        start = (
            now if previous_fire_time is None else min(now, previous_fire_time + timedelta(microseconds=1))
        )
        return self.next_run(start)  # in UTC: times of the repeated hour compare unequal across zones

    def next_run(self, moment: datetime) -> datetime | None:
        """The first run at or after ``moment`` (UTC), or None if there is none."""

        def reached(wall: datetime) -> bool:
            found = self._run_from(wall)
            return found is None or found >= moment

        low, high = self._wall(moment) - _AROUND, self._wall(moment) + _AROUND
        if not reached(low):  # then the first wall time to reach it is between the two
            while high - low > _SECOND:
                middle = low + (high - low) / 2
                low, high = (low, middle) if reached(middle) else (middle, high)
            low = high
        return self._run_from(low)

    def last_run(self, moment: datetime) -> datetime | None:
        """The latest run at or before ``moment`` (UTC), or None if there was none in ten years."""

        def within(wall: datetime) -> bool:
            found = self._run_from(wall)
            return found is not None and found <= moment

        low, high = self._wall(moment) - _LOOKBACK, self._wall(moment) + _AROUND
        if not within(low):
            return None
        while high - low > _SECOND:
            middle = low + (high - low) / 2
            low, high = (middle, high) if within(middle) else (low, middle)
        return self._run_from(low)

    def _wall(self, moment: datetime) -> datetime:
        return moment.astimezone(self.zone).replace(tzinfo=None)

    def _run_from(self, wall: datetime) -> datetime | None:
        """The instant of the first matching wall time at or after ``wall`` (naive, in the zone)."""
        found = self._walls.get_next_fire_time(None, wall.replace(tzinfo=UTC))
        return None if found is None else self._instant(found.replace(tzinfo=None))

    def _instant(self, wall: datetime) -> datetime:
        """When ``wall`` happens in the zone: its first occurrence, or the change that skipped it."""
        instant: datetime = wall.replace(tzinfo=self.zone).astimezone(UTC)  # fold 0: the first occurrence
        if self._wall(instant) == wall:
            return instant
        # Skipped: ``instant`` (read with the offset before the change) is after the change, and the
        # same wall time read with the offset after it is before; the change is the first second between.
        before = wall.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        offset = before.astimezone(self.zone).utcoffset()
        while instant - before > _SECOND:
            middle = before + _SECOND * ((instant - before) // _SECOND // 2)
            if middle.astimezone(self.zone).utcoffset() == offset:
                before = middle
            else:
                instant = middle
        return instant


class JobConfig(_Model):
    """When a job runs: every ``every`` seconds, or at ``cron`` (crontab syntax), if ``enabled``.

    ``lease_seconds`` bounds how long a run may hold the job without renewing
    its lease before another process may take the job over.
    """

    every: float | None = pydantic.Field(default=None, ge=MIN_EVERY, le=MAX_EVERY, allow_inf_nan=False)
    cron: str | None = None
    enabled: bool = True
    lease_seconds: float = pydantic.Field(default=600.0, ge=MIN_LEASE, le=MAX_LEASE, allow_inf_nan=False)

    @pydantic.model_validator(mode="after")
    def _one_schedule(self) -> JobConfig:
        if self.every is not None and self.cron is not None:
            raise ValueError("give `every` or `cron`, not both")
        if self.cron is not None:
            try:
                first = CronTrigger.from_crontab(self.cron, timezone=UTC).get_next_fire_time(None, EPOCH)
            except ValueError as exc:
                raise ValueError(f"not a crontab expression: {self.cron!r} ({exc})") from exc
            if first is None or first > EPOCH + CRON_HORIZON:
                raise ValueError(f"cron {self.cron!r} never runs (not once in five years)")
        return self

    def over(self, default: JobConfig) -> JobConfig:
        """These settings, with anything left unset taken from ``default``."""
        given = self.model_dump(exclude_unset=True)
        if "every" in given or "cron" in given:
            given.setdefault("every", None)
            given.setdefault("cron", None)
        return default.model_copy(update=given)

    @property
    def scheduled(self) -> bool:
        return self.every is not None or self.cron is not None

    def trigger(self, zone: tzinfo) -> BaseTrigger:
        if self.cron is not None:
            return ZonedCron(self.cron, zone)
        if self.every is None:
            raise InvalidInput("a job needs a schedule: `every` (seconds) or `cron`")
        return IntervalTrigger(seconds=self.every, start_date=EPOCH, timezone=UTC)

    def period_of(self, moment: datetime, zone: tzinfo) -> datetime:
        """The start of the period ``moment`` falls in: the latest run time at or before it.

        Every process computes the same value for the same period, so the
        database can tell a second run of one period from the next period's run.
        """
        if self.every is not None:
            step = timedelta(seconds=self.every)
            return EPOCH + step * ((moment - EPOCH) // step)
        if self.cron is None:
            raise InvalidInput("a job needs a schedule: `every` (seconds) or `cron`")
        found = ZonedCron(self.cron, zone).last_run(moment)
        return moment if found is None else found  # no run in ten years: this moment is its own period


DEFAULT_JOBS: dict[str, JobConfig] = {
    "catch-up": JobConfig(every=5, lease_seconds=60),
    "sweep-leases": JobConfig(every=30, lease_seconds=120),
    "snapshots": JobConfig(every=3600),
    "integrity": JobConfig(every=3600),
    "wal-checkpoint": JobConfig(every=600, lease_seconds=120),
    "quick-check": JobConfig(cron="15 4 * * *", lease_seconds=3600),
    "integrity-check": JobConfig(cron="45 4 * * 0", enabled=False, lease_seconds=3600),
    "backup": JobConfig(cron="0 1 * * *", enabled=False, lease_seconds=3600),
    "retention": JobConfig(cron="0 2 * * *", lease_seconds=3600),
}
"""The built-in jobs and their default schedules (docs/operations.md explains each)."""


class SweeperPolicy(_Model):
    """What the lease sweeper records for a step whose worker's lease expired."""

    on_expired: Literal["time_out", "fail", "retry"] = "time_out"
    reason: str = "lease expired: the worker stopped renewing it"
    batch_size: int = pydantic.Field(default=500, ge=1, le=1000)


class SnapshotPolicy(_Model):
    """Snapshot flows every ``every`` revisions (as ``eventstore.timetravel.state_at`` does)."""

    every: int = pydantic.Field(default=1000, ge=1)


class IntegrityPolicy(_Model):
    """Incremental chain verification; a signed checkpoint after it when a key is configured."""

    batch_size: int = pydantic.Field(default=2000, ge=1)
    signing_key_file: Path | None = None
    """An Ed25519 private key (PEM, unencrypted) for ``eventstore.checkpoints``."""


KeepDays = Annotated[float, pydantic.Field(ge=0, le=MAX_KEEP_DAYS, allow_inf_nan=False, strict=True)]


class RetentionConfig(_Model):
    """Days to keep terminal flows after their last event, per status; unlisted statuses are kept."""

    keep_days: dict[Literal["finished", "failed", "cancelled"], KeepDays] = pydantic.Field(
        default_factory=dict
    )
    archive_dir: Path = Path("archives")
    max_flows: int = pydantic.Field(default=10_000, ge=1)
    """Flows pruned at most per run, the oldest first."""

    @pydantic.field_validator("keep_days")
    @classmethod
    def _a_retention_policy(cls, value: dict[str, float]) -> dict[str, float]:
        """What the retention job will pass to ``RetentionPolicy.from_days``: its rules too, now."""
        try:
            from .retention import RetentionPolicy
        except ModuleNotFoundError:  # a version without retention: the job is skipped anyway
            return value
        try:
            RetentionPolicy.from_days(value)
        except InvalidInput as exc:
            raise ValueError(str(exc)) from exc
        return value


class BackupPolicy(_Model):
    """Where the ``backup`` job writes SQLite backups, and how many it keeps."""

    directory: Path | None = None
    keep: int = pydantic.Field(default=7, ge=1)


class MaintenanceConfig(_Model):
    """Every maintenance setting; the defaults are in ``DEFAULT_JOBS`` and the policy classes."""

    timezone: str = "UTC"
    jobs: dict[str, JobConfig] = pydantic.Field(default_factory=dict)
    sweeper: SweeperPolicy = SweeperPolicy()
    snapshots: SnapshotPolicy = SnapshotPolicy()
    integrity: IntegrityPolicy = IntegrityPolicy()
    retention: RetentionConfig = RetentionConfig()
    backup: BackupPolicy = BackupPolicy()

    @pydantic.field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @pydantic.model_validator(mode="after")
    def _backup_has_a_place(self) -> MaintenanceConfig:
        if self.job("backup").enabled and self.backup.directory is None:
            raise ValueError("the backup job needs [backup] directory")
        return self

    @property
    def zone(self) -> tzinfo:
        return ZoneInfo(self.timezone)

    def job(self, name: str, default: JobConfig | None = None) -> JobConfig:
        """The effective settings of a job: ``[jobs.NAME]`` over its default."""
        given = self.jobs.get(name)
        default = default or DEFAULT_JOBS.get(name) or JobConfig()
        return default if given is None else given.over(default)

    @classmethod
    def load(cls, path: str | Path) -> MaintenanceConfig:
        """Read a TOML file; a missing file or a bad setting is ``InvalidInput``."""
        try:
            with open(path, "rb") as file:
                data = tomllib.load(file)
        except OSError as exc:
            raise InvalidInput(f"cannot read the maintenance config {str(path)!r}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInput(f"{path}: not valid TOML: {exc}") from exc
        return cls.parse(data, source=str(path))

    @classmethod
    def parse(cls, data: dict[str, Any], *, source: str = "config") -> MaintenanceConfig:
        try:
            return cls.model_validate(data)
        except pydantic.ValidationError as exc:
            raise InvalidInput(f"{source}: {validation_message(exc)}") from exc
