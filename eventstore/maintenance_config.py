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
from typing import Any, Literal
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


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")


class JobConfig(_Model):
    """When a job runs: every ``every`` seconds, or at ``cron`` (crontab syntax), if ``enabled``.

    ``lease_seconds`` bounds how long a run may hold the job without renewing
    its lease before another process may take the job over.
    """

    every: float | None = pydantic.Field(default=None, gt=0)
    cron: str | None = None
    enabled: bool = True
    lease_seconds: float = pydantic.Field(default=600.0, gt=0)

    @pydantic.model_validator(mode="after")
    def _one_schedule(self) -> JobConfig:
        if self.every is not None and self.cron is not None:
            raise ValueError("give `every` or `cron`, not both")
        if self.cron is not None:
            try:
                CronTrigger.from_crontab(self.cron, timezone=UTC)
            except ValueError as exc:
                raise ValueError(f"not a crontab expression: {self.cron!r} ({exc})") from exc
        return self

    def over(self, default: JobConfig) -> JobConfig:
        """These settings, with anything left unset taken from ``default``."""
        given = self.model_dump(exclude_unset=True)
        if "every" in given or "cron" in given:
            given.setdefault("every", None)
            given.setdefault("cron", None)
        return default.model_copy(update=given)

    def trigger(self, zone: tzinfo) -> BaseTrigger:
        if self.cron is not None:
            return CronTrigger.from_crontab(self.cron, timezone=zone)
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
        trigger = self.trigger(zone)
        lookback = timedelta(minutes=1)
        while True:  # the latest run time at or before ``moment``: look back twice as far each time
            found = trigger.get_next_fire_time(None, moment - lookback)
            if found is not None and found <= moment:
                break
            if lookback > timedelta(days=800):
                return moment  # a schedule with no run in two years: this moment is its own period
            lookback *= 2
        while True:
            later = trigger.get_next_fire_time(found, found + timedelta(microseconds=1))
            if later is None or later > moment:
                return found.astimezone(UTC)  # type: ignore[no-any-return]  # APScheduler returns datetimes
            found = later


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


class RetentionConfig(_Model):
    """Days to keep terminal flows after their last event, per status; unlisted statuses are kept."""

    keep_days: dict[Literal["finished", "failed", "cancelled"], float] = pydantic.Field(default_factory=dict)
    archive_dir: Path = Path("archives")
    max_flows: int = pydantic.Field(default=10_000, ge=1)
    """Flows pruned at most per run, the oldest first."""


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
