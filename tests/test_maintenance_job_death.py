"""A maintenance run killed outright is known dead at once: reported so, and its period run again.

A run holds its job's lock that dies with its process (``process_locks``,
kind ``job``) while it holds its claim. A claim made with it whose lock is
free is a dead run's: ``--status`` says ``died``, and the next run takes it
over without waiting out the lease, for the same period, from where it
stopped. A live holder, paused, keeps its claim; a claim made without the
lock still lasts its lease.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from freezegun import freeze_time

from eventstore import EventStore, NewEvent, StorageError, job_leases, process_locks
from eventstore.cli import main
from eventstore.integrity import format_time
from eventstore.job_leases import JobStatus, claim
from eventstore.maintenance import Job, JobContext, Maintenance
from eventstore.maintenance_config import JobConfig
from eventstore.schema import maintenance_jobs

from . import maintenance_workers
from .conftest import Target
from .kill_workers import kill_during
from .maintenance_workers import RECORDER
from .workers import BARRIER_TIMEOUT

NOW = datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC)
NOON = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def row_of(service: Maintenance, name: str) -> JobStatus:
    (row,) = [row for row in service.status() if row.name == name]
    return row


def status_json(target: Target, job: str) -> dict[str, object]:
    schema = target.options.get("schema")
    args = ["--url", target.url, *(["--schema", schema] if schema else []), "maintain", "--status", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (line,) = [orjson.loads(text) for text in result.stdout.splitlines() if f'"{job}"' in text]
    return dict(line)


def lock_files(target: Target) -> list[Path]:
    if target.dialect != "sqlite":
        return []
    database = Path(target.url.removeprefix("sqlite:///"))
    return sorted(database.parent.glob(f"{database.name}-job-*.lock"))


def test_a_run_killed_mid_job_is_reported_dead_and_its_period_finished_at_once(target: Target) -> None:
    with target.open() as store:
        for n in range(5):
            store.append(f"flow-{n}", [NewEvent("Noted", {"i": i}) for i in range(10)])
        period = Maintenance(store, clock=lambda: NOW).period_of("integrity")
    args = (target.url, target.options, NOW, period)
    assert not kill_during(maintenance_workers.integrity_paused, args, 0.0, after_steps=1)
    with freeze_time(NOW), target.open() as store:
        service = Maintenance(store)
        dead = row_of(service, "integrity")
        assert (dead.last_status, dead.owner, dead.period, dead.last_started, dead.last_position) == (
            "died",
            "doomed",
            format_time(period),
            format_time(NOW),
            10,
        )
        assert (dead.lease_until or "") > format_time(NOW), "the dead run's lease has run out: nothing tested"
        line = status_json(target, "integrity")
        assert (line["last_status"], line["held_by"], line["dead_holder"]) == ("died", None, "doomed")
        result = service.run_once("integrity", period=period)
        assert (result.status, result.details["from_position"], result.details["to_position"]) == (
            "ok",
            11,
            50,
        )
        done = row_of(service, "integrity")
        assert (done.last_status, done.owner, done.period, done.last_position) == (
            "ok",
            None,
            format_time(period),
            50,
        )
        assert lock_files(target) == []


@contextmanager
def paused_run(store: EventStore) -> Iterator[Maintenance]:
    """A live run of ``slow`` on a thread, paused inside its job until the block ends."""
    started, go_on = threading.Event(), threading.Event()

    def pause(ctx: JobContext) -> dict[str, str]:
        started.set()
        assert go_on.wait(BARRIER_TIMEOUT)
        return {"by": "paused"}

    service = Maintenance(store, jobs=[Job("slow", pause, JobConfig(every=3600))], owner="paused")
    results = []
    thread = threading.Thread(target=lambda: results.append(service.run_once("slow")))
    thread.start()
    try:
        assert started.wait(BARRIER_TIMEOUT)
        yield service
    finally:
        go_on.set()
        thread.join(BARRIER_TIMEOUT)
    assert [r.status for r in results] == ["ok"]


def test_a_paused_live_holder_is_neither_displaced_nor_called_dead(target: Target) -> None:
    with freeze_time(NOW), target.open() as first, target.open() as second:
        other = Maintenance(second, jobs=[Job("slow", lambda ctx: {"by": "other"}, JobConfig(every=3600))])
        with paused_run(first):
            assert row_of(other, "slow").last_status == "running"
            skipped = other.run_once("slow")
            assert skipped.status == "skipped" and "running in paused" in skipped.details["reason"]
        assert row_of(other, "slow").last_result == {"by": "paused"}


def test_a_manual_run_takes_a_dead_runs_claim_over_for_its_period(store: EventStore) -> None:
    # Made with the lock (locked=True) by a holder that no longer holds it: a dead run's claim.
    assert claim(store, "record", "dead", now=NOON, lease_seconds=600, period=NOON, locked=True)
    service = Maintenance(store, jobs=[RECORDER], clock=lambda: NOON + timedelta(seconds=1))
    assert row_of(service, "record").last_status == "died"
    assert service.run_once("record").status == "ok"
    assert maintenance_workers.runs(store) == [
        ("RunStarted", format_time(NOON)),
        ("RunEnded", format_time(NOON)),
    ]
    assert service.run_once("record", period=NOON).status == "skipped"  # now it has run


def test_a_dead_claim_made_by_a_clock_ahead_is_taken_over_at_once(store: EventStore) -> None:
    ahead = NOON + timedelta(days=2)
    assert claim(store, "record", "ahead", now=ahead, lease_seconds=600, period=ahead, locked=True)
    service = Maintenance(store, jobs=[RECORDER], clock=lambda: NOON)
    assert service.run_once("record", period=NOON).status == "ok"
    assert row_of(service, "record").period == format_time(NOON)


def test_a_dead_claim_of_a_later_period_keeps_its_period_from_an_earlier_run(store: EventStore) -> None:
    later = NOON + timedelta(minutes=1)
    assert claim(store, "record", "dead", now=later, lease_seconds=600, period=later, locked=True)
    service = Maintenance(store, jobs=[RECORDER], clock=lambda: later)
    skipped = service.run_once("record", period=NOON)
    assert skipped.status == "skipped" and "died" in skipped.details["reason"]
    assert service.run_once("record", period=later).status == "ok"


def test_a_claim_made_without_the_lock_lasts_its_lease(store: EventStore) -> None:
    assert claim(store, "record", "dead", now=NOON, lease_seconds=600, period=NOON)
    service = Maintenance(store, jobs=[RECORDER], clock=lambda: NOON + timedelta(seconds=1))
    assert row_of(service, "record").last_status == "running"
    assert service.run_once("record").status == "skipped"


def test_where_no_lock_can_be_had_a_run_claims_by_its_lease_alone(tmp_path: Path) -> None:
    database = tmp_path / "events.db"
    digest = hashlib.sha256(b"record").hexdigest()[:16]
    Path(f"{database}-job-{digest}.lock").mkdir()  # a lock file that cannot be opened: no lock to be had
    with EventStore.open(f"sqlite:///{database}") as store:
        service = Maintenance(store, jobs=[RECORDER], clock=lambda: NOON)
        held: list[str | None] = []

        def note_the_claim(ctx: JobContext) -> None:
            with store.reading() as conn:
                held.append(conn.execute(sa.select(maintenance_jobs.c.locked)).scalar_one())

        service.jobs["record"] = Job("record", note_the_claim, JobConfig(every=60))
        assert service.run_once("record", period=NOON).status == "ok"
        assert held == [None]  # claimed unlocked: were its run to die, its lease would be waited out


def claim_as_before_0018(
    store: EventStore, name: str, owner: str, *, now: datetime, period: datetime
) -> bool:
    """The claim of a process still on the code from before migration 0018: it leaves ``locked`` alone."""
    stamp = format_time(now)
    jobs = maintenance_jobs
    with store.transaction() as tx:
        taken = tx.connection.execute(
            jobs.update()
            .where(
                jobs.c.name == name,
                sa.or_(jobs.c.owner.is_(None), jobs.c.lease_until <= stamp),
                sa.or_(jobs.c.period.is_(None), jobs.c.period < format_time(period)),
            )
            .values(
                owner=owner,
                lease_until=format_time(now + timedelta(hours=1)),
                period=format_time(period),
                last_started=stamp,
                last_status="running",
            )
        )
    return taken.rowcount == 1


def test_a_live_claim_by_a_process_from_before_0018_after_a_finished_run_is_not_taken_for_dead(
    target: Target,
) -> None:
    later = NOON + timedelta(minutes=1)
    with target.open() as store:
        first = Maintenance(store, jobs=[RECORDER], clock=lambda: NOON, owner="new")
        assert first.run_once("record", period=NOON).status == "ok"  # with the lock: finished, idle
        assert claim_as_before_0018(store, "record", "old", now=later, period=later)  # alive, running
        second = Maintenance(
            store, jobs=[RECORDER], clock=lambda: later + timedelta(seconds=5), owner="new-2"
        )
        assert (row_of(second, "record").last_status, row_of(second, "record").owner) == ("running", "old")
        skipped = second.run_once("record", period=later)
        assert skipped.status == "skipped" and "running in old" in skipped.details["reason"]
        assert [run for run in maintenance_workers.runs(store) if run[0] == "RunStarted"] == [
            ("RunStarted", format_time(NOON))
        ]
    with target.open() as store:  # and so it reads to another process
        assert row_of(Maintenance(store, jobs=[RECORDER]), "record").last_status == "running"


def test_a_claim_from_before_0018_over_a_dead_runs_expired_lease_is_not_taken_for_dead(
    store: EventStore,
) -> None:
    later = NOON + timedelta(minutes=11)
    assert claim(store, "record", "dead", now=NOON, lease_seconds=600, period=NOON, locked=True)
    assert claim_as_before_0018(
        store, "record", "old", now=later, period=later
    )  # the lease ran out: its turn
    service = Maintenance(store, jobs=[RECORDER], clock=lambda: later + timedelta(seconds=5), owner="new")
    assert row_of(service, "record").last_status == "running"
    skipped = service.run_once("record", period=later)
    assert skipped.status == "skipped" and "running in old" in skipped.details["reason"]


def test_a_finished_run_leaves_no_mark_of_its_lock(store: EventStore) -> None:
    service = Maintenance(store, jobs=[RECORDER], clock=lambda: NOON)
    assert service.run_once("record", period=NOON).status == "ok"
    with store.reading() as conn:
        assert conn.execute(sa.select(maintenance_jobs.c.locked)).scalar_one() is None


@contextmanager
def job_row_locked(store: EventStore, target: Target, name: str) -> Iterator[None]:
    """Another connection holds ``name``'s row (SQLite: the whole file) against writers meanwhile."""
    if target.dialect == "sqlite":
        blocker = sqlite3.connect(target.url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            yield
        finally:
            blocker.close()
        return
    with store.engine.connect() as conn, conn.begin():
        row = maintenance_jobs.c.name == name
        conn.execute(sa.select(maintenance_jobs.c.name).where(row).with_for_update())
        yield


def test_a_run_that_could_not_record_its_end_is_not_said_to_have_lost_its_process(target: Target) -> None:
    with target.open(lock_timeout=0.3, busy_timeout=0.3) as store, ExitStack() as blocked:

        def hold_the_row_then_return(ctx: JobContext) -> dict[str, str]:
            blocked.enter_context(job_row_locked(store, target, "integrity"))  # held until the run is over
            return {}

        job = Job("integrity", hold_the_row_then_return, JobConfig(every=3600))  # the CLI lists its row
        service = Maintenance(store, jobs=[job], clock=lambda: NOW, owner="alive")
        with pytest.raises(StorageError):  # its end cannot be written: a real lock, waited for in vain
            service.run_once("integrity")
        blocked.close()
        assert row_of(service, "integrity").last_status == "died"  # taken over at once: right
    schema = target.options.get("schema")
    args = ["--url", target.url, *(["--schema", schema] if schema else []), "maintain", "--status"]
    shown = " ".join(CliRunner().invoke(main, args).stdout.split())
    assert "died: alive started the run" in shown
    assert "its process is gone" not in shown
    assert (
        "no longer holds the job's lock, with no end recorded (its process was killed, it could not "
        "record its end, or its lock's PostgreSQL session was ended)" in shown
    )


def test_a_run_finished_between_the_row_read_and_the_lock_probe_is_not_called_dead(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    with target.open() as store:
        lock = process_locks.take(store, job_leases.LOCK_KIND, "record")
        assert lock is not None and lock.held
        held = claim(store, "record", "live", now=NOON, lease_seconds=600, period=NOON, locked=True)
        assert held is not None
        probe = process_locks.held

        def finished_meanwhile(conn: sa.Connection, kind: str, name: str) -> bool:
            # job_status has read the row (running, locked): the live run finishes and lets its lock go
            # before the probe, which so finds the lock free.
            assert job_leases.finish(store, held, now=NOON, status="ok")
            lock.release()
            return probe(conn, kind, name)

        monkeypatch.setattr(process_locks, "held", finished_meanwhile)
        (row,) = [row for row in job_leases.job_status(store) if row.name == "record"]
        assert (row.last_status, row.owner) == ("running", "live")  # as read; not "died"


def test_a_live_run_whose_lock_connection_is_killed_is_taken_over_and_loses_its_lease(
    pg_target: Target,
) -> None:
    outcome: list[str] = []
    with pg_target.open() as store:
        other = Maintenance(
            store, jobs=[Job("slow", lambda ctx: {"by": "other"}, JobConfig(every=3600))], clock=lambda: NOW
        )

        def lose_the_lock(ctx: JobContext) -> dict[str, str]:
            with store.engine.connect() as conn:  # the session holding this job's advisory lock: ended
                key = process_locks._advisory_key(conn, job_leases.LOCK_KIND, "slow") & 0xFFFF_FFFF_FFFF_FFFF
                (pid,) = conn.execute(
                    sa.text(
                        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                        " AND classid = CAST(:high AS oid) AND objid = CAST(:low AS oid) AND objsubid = 1"
                    ),
                    {"high": key >> 32, "low": key & 0xFFFF_FFFF},
                ).scalars()
                assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
                conn.commit()
            taken = other.run_once("slow", period=period)  # its holder lives, but its lock is gone
            outcome.append(taken.status)
            ctx.renew()
            return {"by": "first"}

        first = Maintenance(
            store, jobs=[Job("slow", lose_the_lock, JobConfig(every=3600))], clock=lambda: NOW
        )
        period = first.period_of("slow")
        result = first.run_once("slow", period=period)
        assert outcome == ["ok"]
        assert result.status == "lost"
        (row,) = [row for row in first.status() if row.name == "slow"]
        assert (row.last_status, row.owner, row.last_result) == ("ok", None, {"by": "other"})
