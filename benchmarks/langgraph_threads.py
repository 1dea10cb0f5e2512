"""Benchmark ``EventStoreSaver.threads()``: how long one page of the thread listing takes.

    PYTHONPATH=. python benchmarks/langgraph_threads.py                 # 20,000 threads, 5,000 on PostgreSQL
    PYTHONPATH=. python benchmarks/langgraph_threads.py --threads 2000 --pg-threads 2000
    PYTHONPATH=. python benchmarks/langgraph_threads.py --sqlite-path /tmp/threads.db --no-postgres
    PYTHONPATH=. python benchmarks/langgraph_threads.py --pg-store postgresql+psycopg://root@127.0.0.1/mine

Each backend gets --threads threads, each saved with ``saver.put``: a root
checkpoint; every 4th thread also a subgraph namespace; every 10th thread
then deleted, and every 7th with a subgraph has it deleted by
``delete_for_runs`` (a live thread with a deleted namespace). With
--sqlite-path the SQLite store is kept there and reused by the next run
(--pg-store: a PostgreSQL database of yours, filled if it holds no threads),
so two commits can be measured on one store. Then pages of 50 are asked, each
five times, and the fastest is printed in milliseconds: the first page, one at
the middle, and the first page with deleted threads. Every page carries its
total, and counting is part of what a page costs.

Figures are printed, never asserted on; each listing checks its total.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the checkout importable, this file not taken for langgraph
    _here = Path(__file__).resolve().parent
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from langgraph.checkpoint.base import empty_checkpoint

from benchmarks.scratch import Scratch
from eventstore.integrations.langgraph import EventStoreSaver

DEFAULT_PG_URL = "postgresql://root@127.0.0.1:5432/test"
TRIES = 5


def fill(saver: EventStoreSaver, threads: int) -> None:
    """``threads`` threads; some with a subgraph namespace, some deleted, some with a deleted namespace."""
    for number in range(threads):
        thread = f"thread-{number:06d}"
        run = f"run-{number}"
        namespaces = ["", "sub:1"] if number % 4 == 0 else [""]
        for ns in namespaces:
            checkpoint = empty_checkpoint()
            checkpoint["channel_values"] = {"n": number}
            checkpoint["channel_versions"] = {"n": 1}
            config: Any = {"configurable": {"thread_id": thread, "checkpoint_ns": ns}}
            metadata: Any = {
                "source": "loop",
                "run_id": run if ns else f"{run}-root",
                "actor": f"a{number % 9}",
            }
            saver.put(config, checkpoint, metadata, {"n": 1})
        if number % 10 == 0:
            saver.delete_thread(thread)
        elif number % 28 == 0:
            saver.delete_for_runs([run])


def best_ms(saver: EventStoreSaver, **page: Any) -> tuple[float, int]:
    times = []
    for _ in range(TRIES):
        started = time.perf_counter()
        found = saver.threads(**page)
        times.append(time.perf_counter() - started)
    return min(times) * 1000, found.total


def measure(name: str, url: str, threads: int) -> None:
    with EventStoreSaver.from_url(url) as saver:
        if saver.threads(include_deleted=True).total == 0:
            started = time.perf_counter()
            fill(saver, threads)
            print(f"{name}: {threads} threads saved in {time.perf_counter() - started:.0f} s")
        total = saver.threads(include_deleted=True).total
        live = total - len(range(0, total, 10))
        for label, page, expected in (
            ("first page", {}, live),
            ("middle page", {"offset": live // 2}, live),
            ("first page, --deleted", {"include_deleted": True}, total),
        ):
            ms, found = best_ms(saver, limit=50, **page)
            assert found == expected, (label, found, expected)
            print(f"{name}, {total} threads: {label:<22} {ms:8.1f} ms")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=20_000, help="threads on SQLite")
    parser.add_argument("--pg-threads", type=int, default=5_000, help="threads on PostgreSQL")
    parser.add_argument("--sqlite-path", help="keep the SQLite store here, and reuse it if it exists")
    parser.add_argument("--pg-store", help="an existing PostgreSQL database to fill, or reuse, instead")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)
    with Scratch(None if args.no_postgres or args.pg_store else args.pg_url, None) as scratch:
        path = args.sqlite_path or scratch.sqlite_path("threads")
        measure("SQLite", f"sqlite:///{path}", args.threads)
        if args.pg_store:
            measure("PostgreSQL", args.pg_store, args.pg_threads)
        elif not args.no_postgres:
            measure("PostgreSQL", scratch.pg_database("threads"), args.pg_threads)


if __name__ == "__main__":
    main()
