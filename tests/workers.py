"""Child processes for the concurrency and crash tests, and the parent's side of them.

Children are started with the ``spawn`` method: each one imports the library
afresh and opens its own store from ``(url, options)``, as another program
would, so no connection, pool or PostgreSQL head cache is shared with the
test process. Entry points are module-level functions so that they pickle.
"""

from __future__ import annotations

import multiprocessing
import queue
import random
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any, Self

from eventstore import AppendResult, EventStore, NewEvent, RevisionMismatch, utc_now

SPAWN = multiprocessing.get_context("spawn")
BARRIER_TIMEOUT = 60.0  # a bound on a wait for siblings, never a clock
MISMATCH_RETRIES = 500


# -- the parent's side ---------------------------------------------------------
class Children:
    """Child processes that each run ``fn(*args)`` and report its result or traceback.

    Leaving the ``with`` block kills any child still running, so a failing
    test never leaves writers behind.
    """

    def __init__(self, *, timeout: float = 120.0) -> None:
        self._reports: Any = SPAWN.Queue()
        self._processes: list[Any] = []
        self._results: dict[int, tuple[bool, Any]] = {}
        self._deadline = time.monotonic() + timeout

    def start(self, fn: Callable[..., Any], *args: Any) -> None:
        index = len(self._processes)
        process = SPAWN.Process(target=_report, args=(self._reports, index, fn, args), daemon=True)
        process.start()
        self._processes.append(process)

    def wait(self, timeout: float) -> bool:
        """Collect reports for up to ``timeout`` seconds; True once every child has reported.

        Raises if a child failed or died, or the children outlived their time.
        """
        try:
            index, ok, value = self._reports.get(timeout=timeout)
            self._results[index] = (ok, value)
            while len(self._results) < len(self._processes):
                index, ok, value = self._reports.get_nowait()
                self._results[index] = (ok, value)
        except queue.Empty:
            pass
        failures = [value for ok, value in self._results.values() if not ok]
        if failures:
            raise AssertionError("a child process failed:\n" + "\n".join(failures))
        dead = [i for i, p in enumerate(self._processes) if p.exitcode is not None and i not in self._results]
        if dead and self._reports.empty():
            raise AssertionError(f"child processes {dead} died without reporting")
        if time.monotonic() > self._deadline:
            raise AssertionError("child processes did not finish in time")
        return len(self._results) == len(self._processes)

    def results(self) -> list[Any]:
        """Every child's return value, in the order they were started."""
        while not self.wait(timeout=1.0):
            pass  # bounded by the deadline that ``wait`` enforces
        return [self._results[i][1] for i in range(len(self._processes))]

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for process in self._processes:
            if process.is_alive():
                process.kill()
            process.join(timeout=30)
        self._reports.close()


def _report(reports: Any, index: int, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        reports.put((index, True, fn(*args)))
    except BaseException:
        reports.put((index, False, f"--- child {index} ---\n{traceback.format_exc()}"))


# -- concurrent writers ------------------------------------------------------------
def write_mixed(
    url: str, options: dict[str, Any], name: str, start: Any, appends: int, shared: list[str], threads: int
) -> list[AppendResult]:
    """``threads`` threads on one store, each appending to its own flow and to shared ones.

    The processes open their stores at once (on SQLite, even a new file).
    """
    start.wait(BARRIER_TIMEOUT)
    with EventStore.open(url, **options) as store, ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(_write_thread, store, f"{name}.{t}", appends, shared) for t in range(threads)]
        return [result for future in futures for result in future.result()]


def _write_thread(store: EventStore, name: str, appends: int, shared: list[str]) -> list[AppendResult]:
    rng = random.Random(name)
    own, own_revision = f"own-{name}", 0
    results = []
    for seq in range(appends):
        events = [NewEvent("Wrote", {"by": name, "seq": seq, "n": n}) for n in range(rng.randint(1, 3))]
        if rng.random() < 0.5:
            result = store.append(own, events, expected_revision=own_revision)
            own_revision = result.revision
        else:
            result = append_after_reading(store, rng.choice(shared), events)
        results.append(result)
    return results


def append_after_reading(store: EventStore, flow: str, events: list[NewEvent]) -> AppendResult:
    """Read the flow's revision and append expecting it, again after each RevisionMismatch."""
    for _attempt in range(MISMATCH_RETRIES):
        try:
            return store.append(flow, events, expected_revision=store.revision(flow))
        except RevisionMismatch:
            continue
    raise AssertionError(f"{MISMATCH_RETRIES} RevisionMismatches in a row on {flow!r}")


def append_any(
    url: str, options: dict[str, Any], name: str, flow: str, start: Any, appends: int
) -> list[AppendResult]:
    """Append ``appends`` one-event batches to ``flow`` with ``ANY``, at once with the siblings."""
    with EventStore.open(url, **options) as store:
        start.wait(BARRIER_TIMEOUT)
        return [store.append(flow, [NewEvent("Wrote", {"by": name, "seq": seq})]) for seq in range(appends)]


def read_then_append(
    url: str, options: dict[str, Any], flow: str, sync: Any, rounds: int, lockstep: bool
) -> list[tuple[int, int | None]]:
    """Read the revision, then append expecting it, ``rounds`` times (a child process's entry point).

    Returns ``(revision read, first revision appended)`` per round, or
    ``(revision read, None)`` for a RevisionMismatch that found a later head.
    In ``lockstep`` every process reads the same revision in each round.
    """
    outcomes: list[tuple[int, int | None]] = []
    with EventStore.open(url, **options) as store:
        sync.wait(BARRIER_TIMEOUT)
        for round_ in range(rounds):
            if lockstep:
                sync.wait(BARRIER_TIMEOUT)
            read = store.revision(flow)
            if lockstep:
                sync.wait(BARRIER_TIMEOUT)
            try:
                result = store.append(flow, [NewEvent("Won", {"round": round_})], expected_revision=read)
            except RevisionMismatch as exc:
                assert exc.expected == read < exc.actual, exc
                outcomes.append((read, None))
            else:
                outcomes.append((read, result.first_revision))
    return outcomes


def race_same_batch(stores: list[EventStore], flow: str, batch: list[NewEvent]) -> list[Any]:
    """Threads append the same batch to a new flow at once: one per store given; results or errors."""
    start = threading.Barrier(len(stores))

    def attempt(store: EventStore) -> Any:
        start.wait(BARRIER_TIMEOUT)
        try:
            return store.append(flow, batch, expected_revision=0)
        except RevisionMismatch as exc:
            return exc

    with ThreadPoolExecutor(len(stores)) as pool:
        return list(pool.map(attempt, stores))


# -- crashes -------------------------------------------------------------------------
def append_big(
    url: str, options: dict[str, Any], flows: list[str], count: int, size: int, signal: Connection
) -> None:
    """Append ``count`` events of ``size`` bytes to each flow, in one transaction.

    Sends "ready" once the write is under way: the store's clock is called
    inside the write transaction, after the batch was validated and encoded
    and just before the rows are chained and inserted. Sends "done" after
    the commit.
    """
    batches = {flow: [NewEvent("Big", {"i": i, "pad": "x" * size}) for i in range(count)] for flow in flows}
    signalled: list[bool] = []

    def clock() -> Any:
        if not signalled:
            signalled.append(True)
            signal.send("ready")
        return utc_now()

    with EventStore.open(url, **options, clock=clock) as store:
        if len(flows) == 1:
            store.append(flows[0], batches[flows[0]], expected_revision=0)
        else:
            with store.transaction() as tx:
                for flow, events in batches.items():
                    tx.append(flow, events, expected_revision=0)
    signal.send("done")


def put_writes_to_one_checkpoint(
    url: str, options: dict[str, Any], name: str, config: dict[str, Any], start: Any, writes: int
) -> int:
    """Save ``writes`` tasks' writes to the checkpoint ``config`` from a saver of this process's own."""
    from eventstore.integrations.langgraph import EventStoreSaver

    with EventStoreSaver.from_url(url, **options) as saver:
        start.wait(BARRIER_TIMEOUT)
        for n in range(writes):
            saver.put_writes(config, [("result", f"{name}-{n}")], f"{name}-task-{n}")
    return writes


def claim_new_files_while_others_write(directory: str, rounds: int, start: Any) -> int:
    """For each of ``rounds`` new files, in step with the other children: switch it to WAL as a
    store does (``claim``), then write to it; how many claims went through."""
    import sqlalchemy as sa

    from eventstore.backends import sqlite

    claimed = 0
    for r in range(rounds):
        start.wait(BARRIER_TIMEOUT)
        url = sa.make_url(f"sqlite:///{directory}/new-{r}.db")
        engine = sqlite.create_engine(url, busy_timeout=30.0, synchronous="NORMAL", pool_size=1)
        try:
            sqlite.SQLiteBackend(engine, busy_timeout=30.0).claim()
            claimed += 1
            with engine.begin() as conn:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (x)")
                for i in range(50):
                    conn.exec_driver_sql("INSERT INTO t VALUES (?)", (i,))
        finally:
            engine.dispose()
    return claimed
