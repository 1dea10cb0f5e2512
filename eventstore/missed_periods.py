"""Missed periods: a job's latest scheduled period that passed with no run, run once when maintenance starts.

A host down across 02:00 (or no ``maintain`` process running then) leaves
that night's period without a run. As anacron and systemd's
``Persistent=true`` do, ``Maintenance.start`` runs such a job once, at once,
for its latest due period (the latest scheduled time at or before now):
several missed periods are one run, for the latest. The run is an ordinary
scheduled run for that period, through the job's compare-and-set claim
(``eventstore.job_leases``), so of several processes starting together one
runs it and the others are ``skipped``.

A job that has never run (no ``maintenance_jobs`` row, or one with no
period) missed its latest period only if the store already held an event
at that period's time: a store in use since before a nightly backup was due
gets its first backup now, not a week later, while a brand-new or empty store
(nothing to back up, check or prune) waits for the job's schedule.
"""

from __future__ import annotations

from datetime import datetime, tzinfo

from .integrity import format_time
from .maintenance_config import JobConfig
from .store import EventStore


def missed_period(
    settings: JobConfig,
    zone: tzinfo,
    *,
    now: datetime,
    last_period: str | None,
    first_recorded: datetime | None,
) -> datetime | None:
    """The period the job missed and should run for now, or None.

    ``settings`` are the job's effective settings (``run_missed`` resolved);
    ``last_period`` is its row's ``period`` (canonical UTC text, None if it
    never ran); ``first_recorded`` is when the store's first event was
    recorded (None for an empty store), asked only for a job that never ran.
    """
    if not (settings.enabled and settings.scheduled and settings.run_missed):
        return None
    due = settings.period_of(now, zone)
    if last_period is None:
        return due if first_recorded is not None and first_recorded <= due else None
    return due if format_time(due) > last_period else None  # canonical text sorts as time does


def first_recorded(store: EventStore) -> datetime | None:
    """When the store's first event (by position) was recorded; None if it holds none."""
    first = next(iter(store.read_all(limit=1)), None)
    return None if first is None else first.recorded_at
