"""Benchmark the read models' listings on a store with many flows: how long one page takes.

    PYTHONPATH=. python benchmarks/listings.py              # 1,000,000 flows
    PYTHONPATH=. python benchmarks/listings.py --quick      # 100,000 flows
    PYTHONPATH=. python benchmarks/listings.py --flows 300000 --no-postgres

Each backend gets a log of --flows flows, one ``FlowStarted`` each (a third of
them then finished, a third failed), appended without the read models, which
``projections.rebuild`` then builds. Then every ``FlowQueries`` listing is
asked for a page of 50, each twice, and the faster is printed in
milliseconds: the first page, one at the middle of the list (offset paging
walks what it skips), and the first page by status and by owner. Every page
carries its total, and counting is part of what a page costs.

There is no peer to compare with: run it on two commits (the store is built
by the library under test) to see what a change did. Figures are printed,
never asserted on; each listing checks its total.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.scratch import Scratch
from eventstore import EventStore, NewEvent
from projections import FlowProjection, FlowQueries, rebuild

DEFAULT_PG_URL = "postgresql://root@127.0.0.1:5432/test"
OWNERS = 1000
PER_COMMIT = 2000
ENDINGS = [None, ("FlowFinished", {"result": {"ok": True}}), ("FlowFailed", {"error": {"message": "x"}})]


def fill(store: EventStore, flows: int) -> None:
    """``flows`` flows: started, and two thirds of them finished or failed."""
    for first in range(0, flows, PER_COMMIT):
        with store.transaction() as tx:
            for number in range(first, min(first + PER_COMMIT, flows)):
                start = NewEvent(
                    "FlowStarted",
                    {
                        "controller_id": "bench",
                        "goal": "list me",
                        "owner_session_key": f"s{number % OWNERS:04d}",
                        "requester_origin": None,
                        "state": {},
                        "parent_flow_id": None,
                    },
                )
                ending = ENDINGS[number % len(ENDINGS)]
                events = [start] if ending is None else [start, NewEvent(*ending)]
                tx.append(f"flow-{number:07d}", events, expected_revision=0)


def measure(store: EventStore, flows: int) -> dict[str, float]:
    """Milliseconds per page of each listing (best of two)."""
    queries = FlowQueries(store)
    owned = -(-flows // OWNERS)  # flows of owner s0000
    pages: dict[str, tuple[Callable[[], object], int]] = {
        "flows(), first page": (lambda: queries.flows(), flows),
        "flows(), middle page": (lambda: queries.flows(offset=flows // 2), flows),
        "flows(status='finished')": (lambda: queries.flows(status="finished"), (flows + 1) // 3),
        "flows(owner=...)": (lambda: queries.flows(owner="s0000"), owned),
        "sessions()": (lambda: queries.sessions(), OWNERS),
    }
    found: dict[str, float] = {}
    for name, (ask, total) in pages.items():
        best = float("inf")
        for _ in range(2):
            start = time.perf_counter()
            page = ask()
            best = min(best, time.perf_counter() - start)
        if page.total != total:  # type: ignore[attr-defined]
            raise SystemExit(f"{name}: total {page.total}, expected {total}")  # type: ignore[attr-defined]
        found[name] = best * 1000
    return found


def run(url: str, flows: int, **options: object) -> dict[str, float]:
    with EventStore.open(url, **options) as store:  # type: ignore[arg-type]
        started = time.perf_counter()
        fill(store, flows)
        progress = rebuild(store, FlowProjection())
        print(f"    {flows:,} flows loaded and folded in {time.perf_counter() - started:.0f} s", flush=True)
        if progress.done != store.last_position():
            raise SystemExit(f"rebuild folded {progress.done} of {store.last_position()} events")
    with EventStore.open(url, projections=[FlowProjection()]) as store:
        return measure(store, flows)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    flows = 100_000 if args.quick else args.flows
    pg_url = None if args.no_postgres else args.pg_url
    results: dict[str, dict[str, float]] = {}
    with Scratch(pg_url, args.dir) as scratch:
        print(f"SQLite {sqlite3.sqlite_version}", flush=True)
        results["SQLite"] = run(f"sqlite:///{scratch.sqlite_path('listings')}", flows)
        if pg_url is not None:
            version = scratch.server_facts()["version"].split()[0]
            print(f"PostgreSQL {version}", flush=True)
            results[f"PostgreSQL {version}"] = run(scratch.pg_database("listings"), flows, create=True)
    names = list(results)
    print(f"\nms per page of 50, {flows:,} flows (best of 2)")
    print(f"{'':28}" + "".join(f"{name:>18}" for name in names))
    for row in results[names[0]]:
        print(f"{row:28}" + "".join(f"{results[name][row]:>18,.1f}" for name in names))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--flows", type=int, default=1_000_000, help="flows in the store (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help="100,000 flows")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("EVENTSTORE_BENCH_PG_URL", DEFAULT_PG_URL),
        help="an existing database to connect to; a scratch database is created beside it",
    )
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument(
        "--dir", default=None, help="where to put the scratch SQLite file (default: a temp dir)"
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
