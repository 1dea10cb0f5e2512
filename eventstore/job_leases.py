"""Job leases in ``maintenance_jobs``: each maintenance job runs once per period across processes.

A run claims its job's row with one compare-and-set ``UPDATE``: it succeeds
only if no unexpired lease is held and the row's ``period`` is older than the
period being run. On PostgreSQL a concurrent claim waits for the row lock and
then re-checks the condition against the winner's row, so it fails; on SQLite
writers are serialised anyway. So however many processes fire a job for the
same period, one runs it.

A run that dies must not hold its job up for its lease. So a run first takes
its job's lock that dies with its process (``process_locks``, kind ``job``,
named for the job) and holds it until it has finished; a claim made holding
it says so (``locked``). A claimer that holds the lock and finds such a claim
knows its holder is gone (alive, it would still hold the lock): it takes the
claim over at once, lease or not, and runs the same period again, from the
``last_position`` the dead run reached. ``job_status`` asks the lock too and
reports such a claim as ``died``. A claim made without the lock (none to be
had: no ``fcntl``, a lock file that cannot be opened; or another process
held the lock for an instant) and rows from before the lock are left to
their lease, after which the next period's run may claim the job. A live
holder keeps its claim until its lease runs out, as before; one that lost
its lock while alive (its PostgreSQL connection dropped) may be taken over,
and then loses the job at its next renewal (``JobLeaseLost``).

The mark (``locked``) is the claim's own ``last_started``, not a flag, and
``finish`` clears it: a claim counts as made with the lock only while the
row's ``last_started`` is the mark. A process still on the code from before
migration 0018 claims without touching ``locked``; with a flag its live
claim would inherit the last claim's mark and be taken for dead.

A row claimed by a process whose clock is ahead (its ``last_started`` is
more than ``CLOCK_AHEAD`` later than the claimer's now) does not hold up the
other processes until their clocks get there: its period is disregarded. If
its holder died holding the lock, its claim is taken over at once too, however
far ahead its lease runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect

from . import process_locks, reconnecting
from .errors import JobLeaseLost
from .integrity import format_time
from .schema import maintenance_jobs as jobs
from .store import EventStore

CLOCK_AHEAD = timedelta(minutes=1)
"""How much later than this process's clock a claim's start may be before it counts as a clock ahead."""

LOCK_KIND = "job"
"""The kind of the maintenance jobs' locks in ``process_locks``; each is named for its job."""

DIED = "died"
"""The ``last_status`` ``job_status`` reports for a claim whose holder died (its lock is free)."""


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
    locked: bool = False,
) -> Claim | None:
    """Take the job for ``period`` if it is free and that period has not run; None otherwise.

    ``locked``: the caller holds the job's process lock (``process_locks.take``
    with ``LOCK_KIND``) and will until it has finished. Then a claim made
    with the lock too is a dead run's: it is taken over at once, and its
    period, which it did not finish, may run again.

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
    free = [jobs.c.owner.is_(None), jobs.c.lease_until <= stamp]
    if locked:  # we hold the lock: a claim made with it has lost its holder
        dead = sa.and_(jobs.c.owner.is_not(None), jobs.c.locked == jobs.c.last_started)
        free.append(dead)
        newer = sa.or_(newer, sa.and_(dead, jobs.c.period <= slot))  # the dead run did not finish its period
    conditions = [jobs.c.name == name, sa.or_(*free)]
    with reconnecting.transaction(store) as tx:
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
                locked=stamp if locked else None,
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
    with reconnecting.transaction(store) as tx:
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
    with reconnecting.transaction(store) as tx:
        done = tx.connection.execute(
            _mine(held).values(
                owner=None,
                lease_until=None,
                last_finished=format_time(now),
                last_status=status,
                last_error=error,
                last_result=encoded,
                locked=None,
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
    """Every job's row, by name: what to watch (``eventstore maintain --status``).

    A claim made with the job's lock whose lock nobody holds is reported
    with ``last_status`` ``died`` (``DIED``), not ``running``: its run ended
    without recording how it went (its process was killed, or ``finish``
    failed and the run let its lock go), and the next run takes it over at once.
    """
    with reconnecting.reading(store) as conn:
        rows = conn.execute(sa.select(jobs).order_by(jobs.c.name)).all()
        unlocked = [
            row
            for row in rows
            if row.owner is not None
            and row.locked == row.last_started
            and not process_locks.held(conn, LOCK_KIND, row.name)
        ]
    died = _still_claimed(store, unlocked)
    return [
        JobStatus(
            name=row.name,
            owner=row.owner,
            lease_until=row.lease_until,
            period=row.period,
            last_started=row.last_started,
            last_finished=row.last_finished,
            last_status=DIED if row.name in died else row.last_status,
            last_error=row.last_error,
            last_result=None if row.last_result is None else orjson.loads(row.last_result),
            last_position=int(row.last_position),
        )
        for row in rows
    ]


def _still_claimed(store: EventStore, rows: list[sa.Row[Any]]) -> set[str]:
    """The jobs of ``rows`` (claims whose lock was free) still held by the same claim: dead runs.

    A holder lets its lock go only after ``finish`` has committed, so a claim
    still there once its lock was seen free was not finished: its holder died.
    """
    if not rows:
        return set()
    with reconnecting.reading(store) as conn:
        now = {
            row.name: (row.owner, row.last_started)
            for row in conn.execute(
                sa.select(jobs.c.name, jobs.c.owner, jobs.c.last_started).where(
                    jobs.c.name.in_([row.name for row in rows])
                )
            )
        }
    return {row.name for row in rows if now.get(row.name) == (row.owner, row.last_started)}
