"""Job leases in ``maintenance_jobs``: each maintenance job runs once per period across processes.

A run claims its job's row with one compare-and-set ``UPDATE``: it succeeds
only if no unexpired lease is held and the row's ``period`` is older than the
period being run. On PostgreSQL a concurrent claim waits for the row lock and
then re-checks the condition against the winner's row, so it fails; on SQLite
writers are serialised anyway. So however many processes fire a job for the
same period, one runs it. A run that dies leaves its lease to expire
(``lease_seconds``), after which the next period's run may claim the job.

A row claimed by a process whose clock is ahead (its ``last_started`` is
more than ``CLOCK_AHEAD`` later than the claimer's now) does not hold up the
other processes until their clocks get there: its period is disregarded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect

from .errors import JobLeaseLost
from .integrity import format_time
from .schema import maintenance_jobs as jobs
from .store import EventStore

CLOCK_AHEAD = timedelta(minutes=1)
"""How much later than this process's clock a claim's start may be before it counts as a clock ahead."""


@dataclass(frozen=True, slots=True)
class JobStatus:
    """A job's row: who holds it, for which period, and how its last run went."""

    name: str
    owner: str | None
    lease_until: str | None
    period: str | None
    last_started: str | None
    last_finished: str | None
    last_status: str | None
    last_error: str | None
    last_result: dict[str, Any] | None
    last_position: int


@dataclass(frozen=True, slots=True)
class Claim:
    """A claimed job: the run may go ahead; ``position`` is where the last run left off."""

    name: str
    owner: str
    period: str
    position: int
    started: str
    """When the claim was made (``last_started``): two claims of one owner and period differ by it."""


def claim(
    store: EventStore,
    name: str,
    owner: str,
    *,
    now: datetime,
    lease_seconds: float,
    period: datetime,
    manual: bool = False,
) -> Claim | None:
    """Take the job for ``period`` if it is free and that period has not run; None otherwise.

    A ``manual`` run (``run_once`` by hand) needs only the job to be free. It
    counts for ``period`` (the scheduled period it falls in) unless the row
    has a later one already: it never moves the row's period backwards, but
    for a period claimed by a clock ahead, which no claim heeds.
    """
    stamp, until, slot = (
        format_time(now),
        format_time(later(now, timedelta(seconds=lease_seconds))),
        format_time(period),
    )
    newer = sa.or_(
        jobs.c.period.is_(None),
        jobs.c.period < slot,
        jobs.c.last_started > format_time(later(now, CLOCK_AHEAD)),  # claimed by a clock ahead: disregarded
    )
    conditions = [jobs.c.name == name, sa.or_(jobs.c.owner.is_(None), jobs.c.lease_until <= stamp)]
    with store.transaction() as tx:
        conn = tx.connection
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite_dialect.insert
        conn.execute(insert(jobs).values(name=name, last_position=0).on_conflict_do_nothing())
        taken = conn.execute(
            jobs.update()
            .where(*conditions, *([] if manual else [newer]))
            .values(
                owner=owner,
                lease_until=until,
                period=sa.case((newer, slot), else_=jobs.c.period) if manual else slot,
                last_started=stamp,
                last_status="running",
            )
            .returning(jobs.c.last_position, jobs.c.period)
        ).first()
    return None if taken is None else Claim(name, owner, str(taken[1]), int(taken[0]), stamp)


def renew(
    store: EventStore,
    held: Claim,
    *,
    now: datetime,
    lease_seconds: float,
    position: int | None = None,
) -> None:
    """Extend the lease (and record progress); ``JobLeaseLost`` if another process took the job."""
    values: dict[str, Any] = {"lease_until": format_time(later(now, timedelta(seconds=lease_seconds)))}
    if position is not None:
        values["last_position"] = position
    with store.transaction() as tx:
        done = tx.connection.execute(_mine(held).values(**values))
        if done.rowcount != 1:
            holder = tx.connection.execute(sa.select(jobs.c.owner).where(jobs.c.name == held.name)).scalar()
            raise JobLeaseLost(held.name, held.owner, holder)


def finish(
    store: EventStore,
    held: Claim,
    *,
    now: datetime,
    status: str,
    error: str | None = None,
    result: dict[str, Any] | None = None,
) -> bool:
    """Record how the run went and free the job; False if the lease had been lost meanwhile."""
    # A job's summary is for people to read: keys that are not strings (a count per status code)
    # become strings, values JSON cannot hold become their str().
    encoded = (
        None if result is None else orjson.dumps(result, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    )
    with store.transaction() as tx:
        done = tx.connection.execute(
            _mine(held).values(
                owner=None,
                lease_until=None,
                last_finished=format_time(now),
                last_status=status,
                last_error=error,
                last_result=encoded,
            )
        )
    return done.rowcount == 1


def later(now: datetime, by: timedelta) -> datetime:
    """``now + by``; the last moment of the year 9999 if that is later (a clock near the end of time)."""
    try:
        return now + by
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC)


def _mine(held: Claim) -> sa.Update:
    return jobs.update().where(
        jobs.c.name == held.name,
        jobs.c.owner == held.owner,
        jobs.c.period == held.period,
        jobs.c.last_started == held.started,
    )


def job_status(store: EventStore) -> list[JobStatus]:
    """Every job's row, by name: what to watch (``eventstore maintain --status``)."""
    with store.reading() as conn:
        rows = conn.execute(sa.select(jobs).order_by(jobs.c.name)).all()
    return [
        JobStatus(
            name=row.name,
            owner=row.owner,
            lease_until=row.lease_until,
            period=row.period,
            last_started=row.last_started,
            last_finished=row.last_finished,
            last_status=row.last_status,
            last_error=row.last_error,
            last_result=None if row.last_result is None else orjson.loads(row.last_result),
            last_position=int(row.last_position),
        )
        for row in rows
    ]
