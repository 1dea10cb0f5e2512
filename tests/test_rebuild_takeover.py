"""A rebuild's claim outlives a SIGKILLed holder only until the next rebuild looks, never its lease.

The killed child's lease is still running at the clock the next rebuild is
given (stopped there, it never runs out): the next rebuild must take the
claim over all the same, because the lock its holder held (a PostgreSQL
advisory lock, a file lock beside a SQLite database) went with its process.
A live holder, paused between renewals, keeps its claim. A claim without
that lock (written by older code) still lasts its lease.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from eventstore import EventStore, NewEvent, utc_now
from eventstore.errors import ProjectionError
from eventstore.integrity import format_time
from eventstore.schema import projection_checkpoints as checkpoints
from projections import FlowProjection, Projection, rebuild
from projections.checkpoints import LOCKED, REBUILD_LEASE, claim, lock_appends

from . import kill_workers
from .conftest import Target
from .kill_workers import AppliedOnce, applied_counts, kill_during, operation_time
from .readmodels import snapshot
from .test_rebuild_crash import some_flows


def the_claim(store: EventStore, name: str) -> sa.Row[tuple[int, str]] | None:
    query = sa.select(checkpoints.c.version, checkpoints.c.updated_at).where(
        checkpoints.c.name == f"{name}#rebuild"
    )
    with store.reading() as conn:
        return conn.execute(query).first()


def stopped_clock() -> datetime:
    return utc_now()


def lock_files(target: Target) -> list[Path]:
    """The rebuild lock files beside a SQLite database (none on PostgreSQL)."""
    if target.dialect != "sqlite":
        return []
    database = Path(target.url.removeprefix("sqlite:///"))
    return sorted(database.parent.glob(f"{database.name}-rebuild-*.lock"))


def test_a_killed_rebuilds_claim_is_taken_over_while_its_lease_runs(target: Target) -> None:
    some_flows(target)
    with target.open(projections=[FlowProjection()]) as store:
        before = snapshot(store)
    assert not kill_during(kill_workers.rebuild_flows, (target.url, target.options, 20, True), 0.0)
    now = stopped_clock()
    with target.open(projections=[FlowProjection()], clock=lambda: now) as store:
        left = the_claim(store, "flows")
        assert left is not None and left.version == LOCKED
        assert left.updated_at > format_time(now), "the killed child's lease has run out: nothing tested"
        assert len(lock_files(target)) == (target.dialect == "sqlite")  # the dead child's, unlocked
        rebuild(store, FlowProjection(), batch_size=50)
        assert snapshot(store) == before
        assert the_claim(store, "flows") is None
        assert lock_files(target) == []
        assert not [t for t in sa.inspect(store.engine).get_table_names() if t.endswith("__rebuild")]


def test_a_runner_killed_while_building_is_built_by_the_next_at_a_stopped_clock(target: Target) -> None:
    """A runner's first build is a rebuild with ``wait=True``: it must not wait out the lease."""
    with target.open() as store:
        for start in range(0, 2000, 200):
            store.append(f"flow-{start}", [NewEvent("Counted", {"n": n}) for n in range(200)])
    assert not kill_during(kill_workers.build_for_catch_up, (target.url, target.options), 0.0)
    now = stopped_clock()
    with target.open(clock=lambda: now) as store:
        left = the_claim(store, AppliedOnce.name)
        assert left is not None and left.updated_at > format_time(now)
        # a stopped clock: the build can only go ahead by taking the claim over (a hang is bounded)
        operation_time(kill_workers.catch_up_at, (target.url, target.options, now.isoformat(), 20))
        assert applied_counts(store, AppliedOnce()) == dict.fromkeys(range(1, 2001), 1)
        assert the_claim(store, AppliedOnce.name) is None


@contextmanager
def paused_rebuild(
    target: Target, failures: list[BaseException], projection: Projection | None = None
) -> Iterator[None]:
    """A rebuild in a thread, paused after its first batch, with its lock held, until the block ends:
    of the flow read models (by a store opened with them), or of ``projection`` (by one without)."""
    paused, go = threading.Event(), threading.Event()

    def hold(_: object) -> None:
        if not paused.is_set():
            paused.set()
            go.wait()

    def holder() -> None:
        try:
            opened = [FlowProjection()] if projection is None else []
            with target.open(projections=opened) as store:
                rebuild(store, projection or FlowProjection(), batch_size=20, progress=hold)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert paused.wait(kill_workers.CHILD_TIMEOUT), "the holder never reported progress"
        yield
    finally:
        go.set()
        thread.join()


def test_a_paused_live_rebuild_keeps_its_claim(target: Target) -> None:
    some_flows(target)
    failures: list[BaseException] = []
    with paused_rebuild(target, failures), target.open(projections=[FlowProjection()]) as store:
        assert the_claim(store, "flows") is not None
        with pytest.raises(ProjectionError, match="already running"):
            rebuild(store, FlowProjection())
    assert not failures
    with target.open(projections=[FlowProjection()]) as store:
        assert the_claim(store, "flows") is None
        rebuild(store, FlowProjection())


def test_a_claim_without_the_lock_lasts_its_lease(target: Target) -> None:
    """As written by code from before the locks: no sign of whether its holder lives."""
    some_flows(target)
    now = stopped_clock()
    with target.open(projections=[FlowProjection()], clock=lambda: now) as store:
        assert claim(store, FlowProjection(), "older")
        with pytest.raises(ProjectionError, match="already running"):
            rebuild(store, FlowProjection())
    later = now + REBUILD_LEASE + timedelta(seconds=1)
    with target.open(projections=[FlowProjection()], clock=lambda: later) as store:
        rebuild(store, FlowProjection())
        assert the_claim(store, "flows") is None


@contextmanager
def appends_held(target: Target) -> Iterator[None]:
    """The append lock held by another connection, as a live rebuild's batches hold it on SQLite."""
    if target.dialect == "sqlite":
        conn = sqlite3.connect(target.url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.close()
        return
    with target.open() as writer, writer.engine.begin() as held:
        lock_appends(held)
        yield


def test_a_live_rebuild_refuses_the_next_without_waiting_for_the_append_lock(target: Target) -> None:
    """A SQLite rebuild's batches hold the write lock back to back: a second rebuild that took the
    append lock to read the claim waited for it (then StoreBusy, or a rebuild again once the first
    had ended), where PostgreSQL said "already running" at once."""
    some_flows(target)
    failures: list[BaseException] = []
    with (
        paused_rebuild(target, failures),
        target.open(busy_timeout=0.5, lock_timeout=0.5) as store,
        appends_held(target),
        pytest.raises(ProjectionError, match="already running"),
    ):
        rebuild(store, FlowProjection())
    assert not failures
