"""A rebuild's swap on PostgreSQL while a long transaction reads a live table (a report).

The swap needs the live tables' ACCESS EXCLUSIVE lock, which waits for the
reader; while it waits, new readers of those tables queue behind it, and the
swap holds appends. It must wait only a short while at a time, letting
writers and readers through in between, and either swap once the reader is
done or, past its patience, fail saying which table is held.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from eventstore import EventStore, NewEvent
from eventstore.errors import ProjectionError
from projections import FlowProjection, FlowService, rebuild

from .conftest import Target
from .readmodels import snapshot

SLOW = 2.0  # seconds: a starved call; before the fix they waited the whole long read out


class Traffic:
    """A writer appending (its inline read models too) and a reader reading a live table, each call
    timed, in threads, until stopped."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.calls: dict[str, list[float]] = {"append": [], "read": []}
        self.failures: list[BaseException] = []
        self.stop = threading.Event()

    def _loop(self, kind: str, call: Callable[[int], object]) -> None:
        n = 0
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                call(n)
            except Exception as exc:  # reported by the test
                self.failures.append(exc)
            self.calls[kind].append(time.perf_counter() - started)
            n += 1
            time.sleep(0.02)  # pacing, not a wait for a clock

    def _append(self, n: int) -> None:
        FlowService(self.store).start_flow(f"w{n}", controller_id="c", goal="g", owner_session_key=f"s{n}")

    def _read(self, n: int) -> None:
        with self.store.reading() as conn:
            conn.exec_driver_sql("SELECT count(*) FROM flows").scalar_one()

    @contextmanager
    def running(self) -> Iterator[None]:
        threads = [
            threading.Thread(target=self._loop, args=("append", self._append)),
            threading.Thread(target=self._loop, args=("read", self._read)),
        ]
        for thread in threads:
            thread.start()
        try:
            yield
        finally:
            self.stop.set()
            for thread in threads:
                thread.join()

    def assert_unstarved(self) -> None:
        assert not self.failures, self.failures
        for kind, durations in self.calls.items():
            assert durations, f"no {kind} ran"
            assert max(durations) < SLOW, f"a {kind} waited {max(durations):.1f}s"


@contextmanager
def long_read(store: EventStore, release: threading.Event) -> Iterator[list[float]]:
    """A transaction holding a read of the live ``sessions`` table until ``release`` is set; yields
    the list its end time (perf_counter) is added to."""
    ended: list[float] = []
    holding = threading.Event()

    def report() -> None:
        with store.engine.connect() as conn, conn.begin():
            conn.exec_driver_sql("SELECT count(*) FROM sessions").scalar_one()
            holding.set()
            release.wait(30)
        ended.append(time.perf_counter())

    thread = threading.Thread(target=report)
    thread.start()
    holding.wait(10)
    try:
        yield ended
    finally:
        release.set()
        thread.join()


def seeded(target: Target) -> EventStore:
    store = target.open(projections=[FlowProjection()])
    service = FlowService(store)
    for f in range(20):
        service.start_flow(f"f{f}", controller_id="c", goal="g", owner_session_key=f"s{f}")
        store.append(f"f{f}", [NewEvent("Noted", {"n": n}) for n in range(5)])
    return store


def test_a_swap_waits_out_a_long_reader_without_stalling_appends_or_reads(pg_target: Target) -> None:
    with seeded(pg_target) as store:
        traffic = Traffic(store)
        release = threading.Event()
        timer = threading.Timer(4.0, release.set)  # the report runs 4 s, the store's appends wait 10 s
        with traffic.running(), long_read(store, release) as ended:
            timer.start()
            rebuild(store, FlowProjection())
            swapped = time.perf_counter()
        timer.join()
        assert ended and swapped >= ended[0]  # the swap came once the report was done
        traffic.assert_unstarved()
        inline = snapshot(store)
        rebuild(store, FlowProjection())
        assert snapshot(store) == inline


def test_a_swap_past_its_patience_names_the_held_table_and_keeps_the_old_tables(pg_target: Target) -> None:
    with seeded(pg_target) as store:
        before = snapshot(store)
        traffic = Traffic(store)
        release = threading.Event()
        held = pytest.raises(ProjectionError, match=r"'sessions'.*held.*old tables")
        with traffic.running(), long_read(store, release), held:
            rebuild(store, FlowProjection(), patience=1.0)
        traffic.assert_unstarved()
        after = snapshot(store)
        assert len(after["flows"]) == len(before["flows"]) + len(traffic.calls["append"])
        assert not [name for name in sa.inspect(store.engine).get_table_names() if "__rebuild" in name]


def test_a_swap_that_waits_longer_than_the_claims_lease_keeps_its_claim(pg_target: Target) -> None:
    """The claim's lease (2 min) is shorter than the patience (5 min): the waits renew it. Here the
    store's clock runs 100 times fast, so the report's 2 s are 200 s of it."""
    started, at = datetime.now(UTC), time.monotonic()

    def fast() -> datetime:
        return started + timedelta(seconds=(time.monotonic() - at) * 100)

    with seeded(pg_target) as plain, pg_target.open(projections=[FlowProjection()], clock=fast) as store:
        release = threading.Event()
        timer = threading.Timer(2.0, release.set)
        with long_read(plain, release) as ended:
            timer.start()
            rebuild(store, FlowProjection())  # "lost its claim: its lease expired" before
            swapped = time.perf_counter()
        timer.join()
        assert ended and swapped >= ended[0]
        assert (fast() - started).total_seconds() > 120  # it did outlast the lease
