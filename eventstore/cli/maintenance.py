"""Command-line commands for running the store for months: ``maintain`` and ``backup``.

``maintain`` runs the maintenance jobs on their schedules until SIGINT or
SIGTERM (or one job with ``--once``); ``backup`` copies a SQLite store with
SQLite's online backup API. Each is a library call plus formatting.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from .output import echo, echo_json, printable, signal_setter
from .params import FilePath

if TYPE_CHECKING:
    from ..maintenance import Maintenance

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

EXIT_STATUS = {"failed": 1, "lost": 3}
"""``maintain --once``: the exit status of a run that did not go through (0 for ``ok`` and ``skipped``)."""


def register(main: click.Group, open_store: Any, errors: Any) -> None:
    """Add the commands to the ``eventstore`` group."""

    @main.command()
    @click.option("--once", "job", metavar="JOB", default=None, help="Run this one job now, then exit.")
    @click.option(
        "--config",
        "config_path",
        type=FilePath(),
        default=None,
        help="A TOML file of schedules and policies (docs/operations.md).",
    )
    @click.option(
        "--catch-up",
        "catch_up",
        multiple=True,
        metavar="MODULE:CLASS",
        help="A catch-up projection to keep current (repeatable).",
    )
    @click.option("--status", is_flag=True, help="Show each job's schedule and last run, then exit.")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output (--once, --status).")
    @click.option(
        "--log-level",
        type=click.Choice(LOG_LEVELS, case_sensitive=False),
        metavar="LEVEL",
        default="INFO",
        show_default=True,
        help="What to log on standard error: DEBUG (with tracebacks), INFO, WARNING, ERROR or CRITICAL.",
    )
    @click.pass_context
    def maintain(
        ctx: click.Context,
        job: str | None,
        config_path: Path | None,
        catch_up: tuple[str, ...],
        status: bool,
        as_json: bool,
        log_level: str,
    ) -> None:
        """Run the maintenance jobs on their schedules until SIGINT or SIGTERM.

        With --once JOB, run that job now and exit: status 1 if it failed, 3 if
        it lost its lease to another process mid-run. Several `maintain`
        processes may share a database: each job runs once per period among
        them. With --status, a job a live process runs shows as `running`, held
        by it; one whose holder no longer holds the job's lock and recorded no
        end (its process was killed mid-run, could not record its end, or lost
        its lock's PostgreSQL session) as `died` (the next run takes it over at
        once and runs its period again), and one
        whose holder let its lease run out as `expired`. A job whose latest
        period passed while no process ran runs once at start, for that
        period, unless its `run_missed` is false in --config; --status shows
        such a missed period.
        """
        from ..maintenance import Maintenance
        from ..maintenance_config import MaintenanceConfig

        if status and job is not None:
            raise click.UsageError("--status and --once are two commands: give one", ctx)
        if as_json and not status and job is None:
            raise click.UsageError(
                "--json is for --once and --status; the service logs to standard error", ctx
            )
        ctx.with_resource(_logging_to_stderr(log_level.upper()))
        with errors():
            config = MaintenanceConfig.load(config_path) if config_path else MaintenanceConfig()
        projections = _catch_up_projections(catch_up)
        with open_store(ctx) as store, errors():
            service = Maintenance(store, config, catch_up=projections)
            if status:
                _show_status(service, as_json)
            elif job is not None:
                result = service.run_once(job)
                line = {"job": result.name, "status": result.status, **result.details}
                if result.error:
                    line["error"] = result.error
                if as_json:
                    echo_json(line)
                else:
                    said = _first_line(result.error) or orjson.dumps(result.details, default=str).decode()
                    echo(printable(f"{result.name}: {result.status} {said}"))
                if result.status in EXIT_STATUS:
                    sys.exit(EXIT_STATUS[result.status])
            else:
                _serve(service)

    @main.command()
    @click.argument("path", type=FilePath())
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @click.pass_context
    def backup(ctx: click.Context, path: Path, as_json: bool) -> None:
        """Copy a SQLite store to PATH with SQLite's online backup API; writers carry on.

        PATH must not exist. On PostgreSQL, use pg_dump (docs/operations.md).
        """
        from ..housekeeping import backup as backup_store

        with open_store(ctx) as store, errors():
            done = backup_store(store, path)
        if as_json:
            echo_json({"path": str(done.path), "bytes": done.bytes, "seconds": done.seconds})
        else:
            echo(f"backed up to {printable(done.path)} ({done.bytes:,} bytes in {done.seconds:.2f}s)")


class _OneLineFormatter(logging.Formatter):
    """Log lines without tracebacks: an exception shows as ``Type: message`` on the line it explains."""

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            exc = record.exc_info[1] if record.exc_info else None
            record = logging.makeLogRecord(
                {**record.__dict__, "exc_info": None, "exc_text": None, "stack_info": None}
            )
            if exc is not None:
                record.msg, record.args = f"{record.getMessage()} ({type(exc).__name__}: {exc})", None
        return printable(_first_line(super().format(record)))


@contextmanager
def _logging_to_stderr(level: str) -> Iterator[None]:
    """Log at ``level`` to standard error for the command's lifetime; tracebacks only at DEBUG.

    Alembic's chatter (``Context impl SQLiteImpl.`` each time a store opens) and APScheduler's
    (``Running job ...`` and ``... executed successfully`` around every run, a failed one included:
    the service logs each run itself) only at DEBUG; APScheduler's warnings (a run skipped because
    the last one is still going, a run missed) stay.
    """
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter if level == "DEBUG" else _OneLineFormatter
    handler.setFormatter(formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    chatty = [logging.getLogger(name) for name in ("alembic", "apscheduler")]
    previous = [logger.level for logger in (root, *chatty)]
    root.addHandler(handler)
    root.setLevel(level)
    if level != "DEBUG":
        for logger in chatty:
            logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        for logger, was in zip((root, *chatty), previous, strict=True):
            logger.setLevel(was)


def _first_line(text: str | None) -> str:
    return next(iter((text or "").splitlines()), "")


def _serve(service: Maintenance) -> None:
    """Run the scheduler until SIGINT or SIGTERM, then let running jobs finish and exit."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, signal_setter(stop)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        service.start()
        echo(printable(f"maintenance started as {service.owner}: {', '.join(service.enabled())}"), err=True)
        while not stop.wait(timeout=1.0):
            pass  # the jobs run on the scheduler's threads
        echo("stopping: waiting for running jobs to finish", err=True)
    finally:
        service.shutdown(wait=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    echo("maintenance stopped", err=True)


def _show_status(service: Maintenance, as_json: bool) -> None:
    from ..integrity import format_time
    from ..job_leases import CLOCK_AHEAD, DIED, later

    rows = {row.name: row for row in service.status()}
    missed = service.missed()
    now = format_time(service.clock())
    ahead = format_time(later(service.clock(), CLOCK_AHEAD))
    width = max([22, *(len(_schedule_text(service, name)) for name in service.jobs)])
    for name in service.jobs:
        settings = service.settings(name)
        schedule = f"every {settings.every:g}s" if settings.every is not None else f"cron {settings.cron}"
        row = rows.get(name)
        # A holder whose process lock is free ended its run unrecorded (killed, or its ``finish`` failed);
        # one whose lease ran out died or hangs: not running it.
        died = row is not None and row.last_status == DIED
        expired = not died and row is not None and row.owner is not None and (row.lease_until or "") <= now
        line: dict[str, Any] = {
            "job": name,
            "enabled": settings.enabled,
            "schedule": schedule,
            "next_run": service.next_run_time(name),
            "last_status": "expired" if expired else (row.last_status if row else None),
            "last_started": row.last_started if row else None,
            "last_finished": row.last_finished if row else None,
            "held_by": row.owner if row and not expired and not died else None,
            "expired_holder": row.owner if row and expired else None,
            "dead_holder": row.owner if row and died else None,
            "last_error": row.last_error if row else None,
            "last_position": row.last_position if row else 0,
            "period": row.period if row else None,
            "clock_ahead": bool(row and row.last_started and row.last_started > ahead),
            "run_missed": settings.run_missed,
            "missed_period": format_time(missed[name]) if name in missed else None,
        }
        if as_json:
            echo_json(line)
            continue
        state = line["last_status"] or "never run"
        when = line["last_finished"] or line["last_started"] or ""
        if not settings.enabled:
            next_run = "disabled"
        elif line["next_run"] is None:
            next_run = "never"
        else:
            next_run = f"next {line['next_run'].astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
        shown_schedule = _schedule_text(service, name)
        echo(printable(f"{name:<16} {shown_schedule:<{width}} {next_run:<29} {state:<8} {when}"))
        if row is not None and line["held_by"]:
            echo(f"{'':<16} running, held by {printable(row.owner or '')} until {row.lease_until}")
        elif row is not None and died:
            echo(
                f"{'':<16} died: {printable(row.owner or '')} started the run for period {row.period} at "
                f"{row.last_started} and no longer holds the job's lock, with no end recorded (its process "
                "was killed, it could not record its end, or its lock's PostgreSQL session was ended); "
                "the next run takes the job over at once"
            )
        elif row is not None and expired:
            echo(
                f"{'':<16} lease expired at {row.lease_until}: {printable(row.owner or '')} "
                "stopped without finishing; the next run takes the job over"
            )
        if row is not None and line["clock_ahead"]:
            echo(
                f"{'':<16} clock ahead? last started {row.last_started}, later than this host's clock "
                "(a period claimed by a clock ahead holds up no one)"
            )
        if line["missed_period"] and not line["held_by"]:
            echo(
                f"{'':<16} missed period {line['missed_period']}: not run; "
                "maintain runs it once, at once, when it starts"
            )
        if line["last_error"]:
            echo(f"{'':<16} error: {printable(line['last_error'])}")


def _catch_up_projections(specs: tuple[str, ...]) -> list[Any]:
    """Load ``--catch-up`` projections; one no runner takes, or given twice, is refused now, not every run."""
    from .params import load_projection

    loaded: dict[str, str] = {}
    projections = []
    for spec in specs:
        projection = load_projection(spec, "--catch-up")
        if projection.kind == "inline":
            raise click.BadParameter(
                f"cannot load {spec}: projection {projection.name!r} is inline (kind = 'inline'): "
                "a runner would fold the events its stores fold; drop that line to keep it with a runner",
                param_hint="--catch-up",
            )
        if projection.name in loaded:
            raise click.BadParameter(
                f"{spec}: projection {projection.name!r} given twice (as {loaded[projection.name]})",
                param_hint="--catch-up",
            )
        loaded[projection.name] = spec
        projections.append(projection)
    return projections


def _schedule_text(service: Maintenance, name: str) -> str:
    """A job's schedule for people: a cron schedule names the zone its fields read in, unless UTC."""
    settings = service.settings(name)
    unless_missed = "" if settings.run_missed or not settings.enabled else ", missed periods not run"
    if settings.every is not None:
        return f"every {settings.every:g}s{unless_missed}"
    zone = service.config.timezone
    return f"cron {settings.cron}" + (f" {zone}" if zone != "UTC" else "") + unless_missed
