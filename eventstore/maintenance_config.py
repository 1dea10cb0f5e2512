"""What the maintenance jobs do and when: a schedule per job (interval or cron) and each job's policy.

A ``MaintenanceConfig`` is a frozen pydantic model, so a TOML file
(``eventstore maintain --config FILE``) is checked field by field, and every
field has a default: an empty config runs every default job on its default
schedule. ``docs/operations.md`` lists the jobs and their defaults.
"""

from __future__ import annotations

import re
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

from .checks import MAX_COUNT, check_path, validation_message
from .errors import InvalidInput
from .retention import MAX_DAYS
from .signing import load_signing_key

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
MAX_REVISION = 2**31 - 1
"""The largest revision (a 32-bit column on both backends): ``[snapshots] every`` at most this."""
MAX_KEEP_DAYS = float(MAX_DAYS)
"""The longest retention, in days (a century, as ``retention.MAX_DAYS``); leave a status out of
``keep_days`` to keep it for ever."""


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")


_SECOND = timedelta(seconds=1)
_LOOKBACK = timedelta(days=3653)
"""How far back ``ZonedCron.last_run`` looks: ten years, more than any accepted cron leaves between runs."""
_AROUND = timedelta(days=2)
"""More than any change of a zone's offset (Samoa skipped a whole day in 2011)."""


_CRONTAB_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
"""Crontab's day-of-week numbers: 0 (and 7) is Sunday. APScheduler 3 counts from Monday: it is given names."""
_WEEKDAY_TERM = re.compile(r"(?:\*|(?P<first>\w+)(?:-(?P<last>\w+))?)(?:/(?P<step>\d+))?", re.ASCII)


def crontab_triggers(expression: str) -> tuple[CronTrigger, ...]:
    """APScheduler ``CronTrigger``s (in UTC) that together match what crontab matches; a run is the earliest.

    ``CronTrigger.from_crontab`` in APScheduler 3 is not crontab: it reads a
    day-of-week number from Monday (0 = Monday, 7 refused), and it requires
    both the day of month and the day of week to match. Crontab counts from
    Sunday (0 and 7), and when both day fields are restricted (neither starts
    with ``*``) a day matching either runs: that is two triggers here.
    """
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"Wrong number of fields; got {len(fields)}, expected 5")
    minute, hour, day, month, weekday = fields
    weekdays = _crontab_weekdays(weekday)

    def trigger(day: str, day_of_week: str) -> CronTrigger:
        return CronTrigger(
            minute=minute, hour=hour, day=day, month=month, day_of_week=day_of_week, timezone=UTC
        )

    if day.startswith("*") or weekday.startswith("*"):
        return (trigger(day, weekdays),)
    return (trigger(day, "*"), trigger("*", weekdays))


def _crontab_weekdays(field: str) -> str:
    """Crontab's day-of-week field (numbers, names, ranges, steps, lists) as APScheduler weekday names."""
    days: set[int] = set()
    for term in field.lower().split(","):
        match = _WEEKDAY_TERM.fullmatch(term)
        if match is None:
            raise ValueError(f"day of week {term!r}: give 0-7 (0 and 7 are Sunday) or sun-sat")
        first, last, step = match["first"], match["last"], int(match["step"] or 1)
        low = 0 if first is None else _crontab_weekday(first)
        # `*` and `N/step` run to the week's end, 7; so does a range ending on Sunday (`fri-sun`)
        to_the_end = first is None or (last is None and match["step"]) or last == "sun"
        high = 7 if to_the_end else _crontab_weekday(last or first)
        if low > high or step < 1:
            raise ValueError(f"day of week {term!r}: not a range of days")
        days.update(number % 7 for number in range(low, high + 1, step))
    if len(days) == len(_CRONTAB_WEEKDAYS):
        return "*"
    return ",".join(_CRONTAB_WEEKDAYS[number] for number in sorted(days))


def _crontab_weekday(token: str) -> int:
    if token.isdigit() and int(token) <= 7:
        return int(token)
    if token in _CRONTAB_WEEKDAYS:
        return _CRONTAB_WEEKDAYS.index(token)
    raise ValueError(f"day of week {token!r}: give 0-7 (0 and 7 are Sunday) or sun-sat")


def _first_run(triggers: tuple[CronTrigger, ...], start: datetime) -> datetime | None:
    """The earliest time at or after ``start`` that any of ``triggers`` matches."""
    found = [run for trigger in triggers if (run := trigger.get_next_fire_time(None, start)) is not None]
    return min(found, default=None)


class ZonedCron(BaseTrigger):  # type: ignore[misc]  # APScheduler 3 has no hints
    """A crontab schedule read on the wall clock of ``zone``: each matching wall time runs once.

    APScheduler 3's ``CronTrigger`` in a zone with daylight saving time can
    give the same run time again and again in the hour repeated in autumn
    (its scheduler then never moves on). Here the fields are matched against
    wall-clock time by ``crontab_triggers`` in UTC, which has no such hour, and
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
        self._walls = crontab_triggers(expression)

    def __str__(self) -> str:
        return f"cron[{self.expression}, {self.zone}]"

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        """APScheduler's question: the first run after ``previous_fire_time``, else at or after ``now``.

        Strictly after: APScheduler's scheduler asks again with the time it was
        given until the answer is later than ``now``, so giving back
        ``previous_fire_time`` when ``now`` equals it would never end.
        """
        start = now if previous_fire_time is None else previous_fire_time + timedelta(microseconds=1)
        return self.next_run(start)  # in UTC: times of the repeated hour compare unequal across zones

    def next_run(self, moment: datetime) -> datetime | None:
        """The first run at or after ``moment`` (UTC), or None if there is none."""

        def reached(wall: datetime) -> bool:
            found = self._run_from(wall)
            return found is None or found >= moment

        low, high = _shifted(self._wall(moment), -_AROUND), _shifted(self._wall(moment), _AROUND)
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

        low, high = _shifted(self._wall(moment), -_LOOKBACK), _shifted(self._wall(moment), _AROUND)
        if not within(low):
            return None
        while high - low > _SECOND:
            middle = low + (high - low) / 2
            low, high = (middle, high) if within(middle) else (low, middle)
        return self._run_from(low)

    def _wall(self, moment: datetime) -> datetime:
        try:
            return moment.astimezone(self.zone).replace(tzinfo=None)
        except OverflowError:  # a moment at either end of the years 1 to 9999, in a zone past that end
            return datetime.max if moment.year > 1 else datetime.min

    def _run_from(self, wall: datetime) -> datetime | None:
        """The instant of the first matching wall time at or after ``wall`` (naive, in the zone)."""
        found = _first_run(self._walls, wall.replace(tzinfo=UTC))
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


def _shifted(wall: datetime, by: timedelta) -> datetime:
    """``wall + by``, kept within the years 1 to 9999 (a clock at either end of them)."""
    try:
        return wall + by
    except OverflowError:
        return datetime.max if by > timedelta(0) else datetime.min


class JobConfig(_Model):
    """When a job runs: every ``every`` seconds, or at ``cron`` (crontab syntax), if ``enabled``.

    ``lease_seconds`` bounds how long a run may hold the job without renewing
    its lease before another process may take the job over. ``run_missed``:
    whether a period that passed with no run is run once when maintenance
    starts (``eventstore.missed_periods``); None takes the config's ``run_missed``.
    """

    every: float | None = pydantic.Field(
        default=None, ge=MIN_EVERY, le=MAX_EVERY, allow_inf_nan=False, strict=True
    )
    cron: str | None = None
    enabled: bool = pydantic.Field(default=True, strict=True)
    lease_seconds: float = pydantic.Field(
        default=600.0, ge=MIN_LEASE, le=MAX_LEASE, allow_inf_nan=False, strict=True
    )
    run_missed: bool | None = pydantic.Field(default=None, strict=True)

    @pydantic.model_validator(mode="after")
    def _one_schedule(self) -> JobConfig:
        if self.every is not None and self.cron is not None:
            raise ValueError("give `every` or `cron`, not both")
        if self.cron is not None:
            try:
                first = _first_run(crontab_triggers(self.cron), EPOCH)
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
    batch_size: int = pydantic.Field(default=500, ge=1, le=1000, strict=True)


class SnapshotPolicy(_Model):
    """Snapshot flows every ``every`` revisions (as ``eventstore.timetravel.state_at`` does)."""

    every: int = pydantic.Field(default=1000, ge=1, le=MAX_REVISION, strict=True)


class IntegrityPolicy(_Model):
    """Incremental chain verification; a signed checkpoint after it when a key is configured."""

    batch_size: int = pydantic.Field(default=2000, ge=1, le=MAX_COUNT, strict=True)
    signing_key_file: Path | None = None
    """An Ed25519 private key (PEM, unencrypted) for ``eventstore.checkpoints``."""

    @pydantic.field_validator("signing_key_file")
    @classmethod
    def _a_signing_key(cls, value: Path | None) -> Path | None:
        """Read the key now, so a missing or unusable file is refused at load, not at every run."""
        if value is not None:
            try:
                load_signing_key(value)
            except InvalidInput as exc:
                raise ValueError(str(exc)) from exc
        return value


def _not_empty(value: Any) -> Any:
    """TOML's ``""`` is no directory: pathlib would read it as the working one, where nobody looks."""
    if value == "":
        raise ValueError("an empty path; name a directory, or leave the setting out for its default")
    return value


Directory = Annotated[Path, pydantic.BeforeValidator(_not_empty)]

KeepDays = Annotated[float, pydantic.Field(ge=0, le=MAX_KEEP_DAYS, allow_inf_nan=False, strict=True)]


class RetentionConfig(_Model):
    """Days to keep terminal flows after their last event, per status; unlisted statuses are kept."""

    keep_days: dict[Literal["finished", "failed", "cancelled"], KeepDays] = pydantic.Field(
        default_factory=dict
    )
    archive_dir: Directory = Path("archives")
    max_flows: int = pydantic.Field(default=10_000, ge=1, le=MAX_COUNT, strict=True)
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

    directory: Directory | None = None
    keep: int = pydantic.Field(default=7, ge=1, strict=True)


class MaintenanceConfig(_Model):
    """Every maintenance setting; the defaults are in ``DEFAULT_JOBS`` and the policy classes."""

    timezone: str = "UTC"
    run_missed: bool = pydantic.Field(default=True, strict=True)
    """Run a job's missed period once when maintenance starts (``[jobs.NAME] run_missed`` overrides it)."""
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
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: "America" is a directory
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
        """The effective settings of a job: ``[jobs.NAME]`` over its default; ``run_missed`` always set."""
        given = self.jobs.get(name)
        default = default or DEFAULT_JOBS.get(name) or JobConfig()
        settings = default if given is None else given.over(default)
        if settings.run_missed is None:
            return settings.model_copy(update={"run_missed": self.run_missed})
        return settings

    @classmethod
    def load(cls, path: str | Path) -> MaintenanceConfig:
        """Read a TOML file; a missing file or a bad setting is ``InvalidInput``."""
        checked = check_path("the maintenance config", path)
        try:
            with open(checked, "rb") as file:
                data = tomllib.load(file)
        except OSError as exc:
            raise InvalidInput(f"cannot read the maintenance config {str(path)!r}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInput(f"{path}: not valid TOML: {exc}") from exc
        except UnicodeDecodeError as exc:  # tomllib decodes the whole file first
            raise InvalidInput(
                f"{path}: not valid TOML: it is not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from exc
        return cls.parse(data, source=str(path))

    @classmethod
    def parse(cls, data: dict[str, Any], *, source: str = "config") -> MaintenanceConfig:
        try:
            return cls.model_validate(data)
        except pydantic.ValidationError as exc:
            raise InvalidInput(f"{source}: {validation_message(exc)}") from exc
