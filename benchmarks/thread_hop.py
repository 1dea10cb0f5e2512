"""What the worker-thread hop of EventStoreSaver's async methods costs a put, and where it goes.

    PYTHONPATH=. python benchmarks/thread_hop.py [--puts 1000] [--rounds 6] [--synchronous NORMAL]
        [--fsync] [--scratch-dir DIR]

1. ``aput`` of ``benchmarks/langgraph.py``'s agent thread, one after
   another, by subject: ``EventStoreSaver.aput`` as shipped (on SQLite, by
   default, in the saver's worker threads: ``eventstore.workers``); the same
   ``put`` handed to one thread of its own the way aiosqlite hands each call
   to its connection's thread (a queue in, ``call_soon_threadsafe`` out); the
   same ``put`` called on the loop thread, no hop at all; LangGraph's
   ``AsyncSqliteSaver``. Each subject and round gets a fresh file and 50
   warm-up puts; rounds rotate the order. Printed per subject: puts per
   second (best, median), the process's CPU per put, how many threads ran
   the puts, and context switches per put that a thread asked for (it
   went to sleep) on the loop thread and on the process's other threads
   (``workers``). ``others (cores)`` is the CPU the rest of the machine used
   meanwhile: the noise.
2. ``--fsync``: the same 4 KB ``pwrite`` + ``fdatasync`` in a loop, by one
   thread, by threads taking turns, by a new thread each time (no SQLite,
   no asyncio): the median ``fdatasync``.

Figures are printed, never asserted on.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # a script: the checkout importable, not benchmarks/langgraph.py as langgraph
    _here = Path(__file__).resolve().parent
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

import sqlalchemy as sa
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from benchmarks.langgraph import Step, agent_checkpoints
from eventstore import EventStore, RecordedEvent
from eventstore.integrations.langgraph import EventStoreSaver
from projections import Projection
from projections.langgraph import LangGraphProjection

Put = Callable[..., Awaitable[Any]]


class OneThread:
    """aiosqlite's way: calls queued to one thread, each result handed back with ``call_soon_threadsafe``."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    def run(self, call: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        self._calls.put((future, call, args))
        return future

    def close(self) -> None:
        self._calls.put(None)
        self._thread.join()

    def _work(self) -> None:
        while (item := self._calls.get()) is not None:
            future, call, args = item
            try:
                result = call(*args)
            except BaseException as exc:
                future.get_loop().call_soon_threadsafe(future.set_exception, exc)
            else:
                future.get_loop().call_soon_threadsafe(future.set_result, result)


def busy_cores() -> float:
    """CPU seconds the whole machine has been busy (``/proc/stat``), not counting idle and I/O wait."""
    with open("/proc/stat") as stat:
        ticks = [int(n) for n in stat.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def sleeps() -> dict[str, int]:
    """Each thread of this process: how many times it went to sleep (voluntary context switches)."""
    counts = {}
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/status") as status:
            line = next(line for line in status if line.startswith("voluntary_ctxt_switches"))
        counts[tid] = int(line.split()[1])
    return counts


async def timed(put: Put, steps: list[Step], ran_on: set[int], *, thread: str = "t") -> dict[str, float]:
    config: Any = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    loop_tid = str(threading.get_native_id())
    slept, cpu, busy = sleeps(), time.process_time(), busy_cores()
    ran_on.clear()
    started = time.perf_counter()
    for checkpoint, metadata, new_versions in steps:
        config = await put(config, checkpoint, metadata, new_versions)
    seconds = time.perf_counter() - started
    cpu, busy, after = time.process_time() - cpu, busy_cores() - busy, sleeps()
    woke = {tid: n - slept.get(tid, 0) for tid, n in after.items()}
    return {
        "rate": len(steps) / seconds,
        "cpu_us": cpu / len(steps) * 1e6,
        "threads": len(ran_on),
        "loop_sleeps": woke.pop(loop_tid, 0) / len(steps),
        "other_sleeps": sum(woke.values()) / len(steps),
        "others": max(0.0, busy - cpu) / seconds,
    }


class FoldThreads(Projection):
    """Records the thread that folded each checkpoint: the thread its put ran on."""

    name = "bench_fold_threads"
    kind = "inline"

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[int] = set()

    def define_tables(self, metadata: sa.MetaData) -> None:
        sa.Table(self.name, metadata, sa.Column("position", sa.BigInteger, primary_key=True))

    def on_CheckpointSaved(self, tx: Any, event: RecordedEvent) -> None:
        self.seen.add(threading.get_ident())


async def subject(name: str, path: str, steps: list[Step], synchronous: str) -> dict[str, float]:
    warm = agent_checkpoints(50)
    if name == "AsyncSqliteSaver":
        async with AsyncSqliteSaver.from_conn_string(path) as theirs:
            await theirs.setup()
            await timed(theirs.aput, warm, set(), thread="warm-up")
            return await timed(theirs.aput, steps, set())
    folds = FoldThreads()
    store = EventStore.open(
        f"sqlite:///{path}", create=True, synchronous=synchronous, projections=[folds, LangGraphProjection()]
    )
    with store, EventStoreSaver(store) as saver:
        one = OneThread()

        async def direct(*args: Any) -> Any:
            return saver.put(*args)

        try:
            puts: dict[str, Put] = {
                SUBJECTS[0]: saver.aput,
                SUBJECTS[1]: lambda *args: one.run(saver.put, *args),
                SUBJECTS[2]: direct,
            }
            put = puts[name]
            await timed(put, warm, folds.seen, thread="warm-up")
            return await timed(put, steps, folds.seen)
        finally:
            one.close()


SUBJECTS = ["EventStoreSaver.aput", "one thread of its own", "put on the loop thread", "AsyncSqliteSaver"]


async def hops(*, puts: int, rounds: int, synchronous: str, directory: str) -> None:
    steps = agent_checkpoints(puts)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in SUBJECTS}
    for number in range(rounds):
        for name in SUBJECTS[number % len(SUBJECTS) :] + SUBJECTS[: number % len(SUBJECTS)]:
            path = os.path.join(directory, f"{number}-{SUBJECTS.index(name)}.db")
            results[name].append(await subject(name, path, steps, synchronous))
    print(f"\n{puts} puts per round, {rounds} rounds; EventStoreSaver at synchronous={synchronous}; medians:")
    print(
        f"  {'subject':<26} {'best/s':>7} {'put/s':>6} {'CPU us/put':>11} {'threads':>8}"
        f" {'sleeps/put: loop':>17} {'workers':>8} {'others (cores)':>15}"
    )
    for name in SUBJECTS:
        rows = results[name]
        med = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        threads = "" if name == "AsyncSqliteSaver" else f"{med['threads']:.0f}"
        print(
            f"  {name:<26} {max(row['rate'] for row in rows):>7.0f} {med['rate']:>6.0f}"
            f" {med['cpu_us']:>11.0f} {threads:>8} {med['loop_sleeps']:>17.2f}"
            f" {med['other_sleeps']:>8.2f} {med['others']:>15.2f}"
        )
        every = ", ".join(f"{row['rate']:.0f}" for row in rows)
        print(f"  {'':<26} every round: {every}")


def fsyncs(directory: str, *, calls: int = 300, rounds: int = 3) -> None:
    """The median ``fdatasync`` of a 4 KB write, by who calls it."""
    path = os.path.join(directory, "fsync.bin")

    def run(how: str) -> float:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        took: list[float] = []

        def write(n: int) -> None:
            os.pwrite(fd, b"x" * 4096, n * 4096)
            started = time.perf_counter()
            os.fdatasync(fd)
            took.append(time.perf_counter() - started)

        try:
            if how == "one thread":
                for n in range(calls):
                    write(n)
            elif how == "a new thread each":
                for n in range(calls):
                    thread = threading.Thread(target=write, args=(n,))
                    thread.start()
                    thread.join()
            else:  # two threads taking turns
                inboxes: list[queue.SimpleQueue[int | None]] = [queue.SimpleQueue(), queue.SimpleQueue()]
                done: queue.SimpleQueue[None] = queue.SimpleQueue()

                def serve(inbox: queue.SimpleQueue[int | None]) -> None:
                    while (n := inbox.get()) is not None:
                        write(n)
                        done.put(None)

                threads = [threading.Thread(target=serve, args=(inbox,)) for inbox in inboxes]
                for thread in threads:
                    thread.start()
                for n in range(calls):
                    inboxes[n % 2].put(n)
                    done.get()
                for inbox in inboxes:
                    inbox.put(None)
                for thread in threads:
                    thread.join()
        finally:
            os.close(fd)
        return statistics.median(took) * 1e6

    kinds = ["one thread", "two threads taking turns", "a new thread each"]
    medians: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(rounds):
        for kind in kinds:
            medians[kind].append(run(kind))
    print(f"\n{calls} x (4 KB pwrite, fdatasync), {rounds} rounds: median fdatasync per round")
    for kind in kinds:
        print(f"  {kind:<26} {', '.join(f'{us:.0f} us' for us in medians[kind])}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--puts", type=int, default=1000, help="puts per round (default 1000)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--synchronous", default="NORMAL", help="EventStoreSaver's (default NORMAL)")
    parser.add_argument("--fsync", action="store_true", help="also time fdatasync by who calls it")
    parser.add_argument("--scratch-dir", default=None, help="where scratch files go")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.scratch_dir) as directory:
        asyncio.run(
            hops(puts=args.puts, rounds=args.rounds, synchronous=args.synchronous, directory=directory)
        )
        if args.fsync:
            fsyncs(directory)


if __name__ == "__main__":
    main()
