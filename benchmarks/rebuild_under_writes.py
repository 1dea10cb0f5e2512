"""Benchmark what writers feel while a projection is rebuilt: their latency and failures.

    PYTHONPATH=. python benchmarks/rebuild_under_writes.py
    PYTHONPATH=. python benchmarks/rebuild_under_writes.py --writers 4 --events 3000 --no-sqlite

Writers append one-event batches in a loop, each in its own thread with its
own store, while ``projections.rebuild`` rebuilds a catch-up projection whose
fold costs a few milliseconds of the database's time per event (``--cost``
rows counted per event): slower than the writers append, the case where the
rebuild's swap has a long tail to fold with appends held. Writers open their
stores with ``--lock-timeout`` (PostgreSQL) and ``--busy-timeout`` (SQLite).

Printed per backend: the rebuild's time and events, how many times the swap
took the append lock, and for the writers: appends, ``StoreBusy`` failures,
and latency p50 / p99 / max. Figures are printed, never asserted on.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import projections.rebuilding as rebuilding
from benchmarks.scratch import Scratch
from eventstore import EventStore, NewEvent, RecordedEvent, Transaction
from eventstore.errors import StoreBusy
from projections import Projection, rebuild

DEFAULT_PG_URL = "postgresql://root@127.0.0.1:5432/test"


class SlowCounts(Projection):
    """Decisions per actor, each fold also counting ``cost`` rows on the database."""

    name: ClassVar[str] = "bench_slow_counts"
    version: ClassVar[int] = 1
    cost: ClassVar[int] = 20_000

    def define_tables(self, metadata: sa.MetaData) -> None:
        sa.Table(
            "bench_slow_counts",
            metadata,
            sa.Column("actor", sa.String(200), primary_key=True),
            sa.Column("decisions", sa.Integer, nullable=False),
        )

    def on_DecisionRecorded(self, tx: Transaction, event: RecordedEvent) -> None:
        conn = tx.connection
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT count(*) FROM generate_series(1, {self.cost})")
        else:
            conn.exec_driver_sql(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
                " SELECT count(*) FROM n",
                (self.cost,),
            )
        table = self.table("bench_slow_counts")
        actor = event.data["actor"]
        bumped = conn.execute(
            table.update().where(table.c.actor == actor).values(decisions=table.c.decisions + 1)
        )
        if bumped.rowcount == 0:
            conn.execute(table.insert().values(actor=actor, decisions=1))


def decision(actor: str) -> NewEvent:
    return NewEvent("DecisionRecorded", {"actor": actor, "decision": "go"})


class SwapCounter:
    """Counts the swap's holds of the append lock (wraps ``swap_in`` where ``rebuilding`` calls it)."""

    def __init__(self) -> None:
        self.holds = 0
        self._swap = rebuilding.swap_in

    def __enter__(self) -> SwapCounter:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.holds += 1
            return self._swap(*args, **kwargs)

        rebuilding.swap_in = counted  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        rebuilding.swap_in = self._swap  # type: ignore[assignment]


def run(label: str, url: str, options: dict[str, Any], args: argparse.Namespace) -> None:
    with EventStore.open(url, create=True, **options) as store:
        for start in range(0, args.events, 100):
            store.append(
                f"pre-{start}", [decision(f"a{i % 7}") for i in range(min(100, args.events - start))]
            )
        stop = threading.Event()
        latencies: list[list[float]] = [[] for _ in range(args.writers)]
        busy = [0] * args.writers
        errors: list[BaseException] = []

        def write(number: int) -> None:
            try:
                with EventStore.open(url, **options) as writer:
                    while not stop.is_set():
                        began = time.perf_counter()
                        try:
                            writer.append(f"w{number}", [decision(f"w{number}")])
                        except StoreBusy:
                            busy[number] += 1
                        latencies[number].append(time.perf_counter() - began)
            except BaseException as exc:  # reported below, never lost in the thread
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(number,)) for number in range(args.writers)]
        for thread in threads:
            thread.start()
        began = time.perf_counter()
        with SwapCounter() as swaps:
            try:
                done = rebuild(store, SlowCounts(), batch_size=100)
            finally:
                seconds = time.perf_counter() - began
                stop.set()
                for thread in threads:
                    thread.join()
    if errors:
        raise errors[0]
    waits = sorted(wait for each in latencies for wait in each)
    p99 = waits[min(len(waits) - 1, int(len(waits) * 0.99))]
    print(
        f"{label:<11} rebuild {done.done:>6} events in {seconds:6.1f} s, "
        f"swap held appends {swaps.holds:>3}x | "
        f"writers: {len(waits):>6} appends, {sum(busy):>3} StoreBusy, latency p50 "
        f"{statistics.median(waits) * 1000:6.1f} ms, p99 {p99 * 1000:7.1f} ms, max {waits[-1] * 1000:7.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--events", type=int, default=400, help="events in the log before the rebuild")
    parser.add_argument("--cost", type=int, default=20_000, help="rows counted per folded event")
    parser.add_argument("--lock-timeout", type=float, default=2.0)
    parser.add_argument("--busy-timeout", type=float, default=2.0)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    SlowCounts.cost = args.cost
    print(
        f"{args.writers} writers appending 1-event batches; a projection folding {args.events}+ events, "
        f"counting {args.cost} rows per event"
    )
    with Scratch(None if args.no_postgres else args.pg_url, None) as scratch:
        if not args.no_sqlite:
            run(
                "SQLite",
                f"sqlite:///{scratch.sqlite_path('writes')}",
                {"busy_timeout": args.busy_timeout},
                args,
            )
        if not args.no_postgres:
            run("PostgreSQL", scratch.pg_database("writes"), {"lock_timeout": args.lock_timeout}, args)


if __name__ == "__main__":
    main()
