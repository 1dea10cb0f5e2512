"""Benchmark signed checkpoints: taking one over a large log, proofs against it, checking it.

    PYTHONPATH=. python benchmarks/merkle.py [--events 1000000] [--samples 200] [--no-postgres]

A log of ``--events`` small events (10 flows, appends of 1,000) is written on
SQLite and on PostgreSQL. Then:

* the first ``take_checkpoint``: it hashes every leaf once and fills the
  subtree cache;
* 1,000 more events and a second ``take_checkpoint``: the incremental case;
* ``inclusion_proof`` + ``verify`` of ``--samples`` random events, by
  position (median and 95th percentile), and one by event id;
* ``consistency_proof`` + ``verify`` between the two checkpoints;
* ``verify_checkpoints``, which recomputes everything from the leaves.

Figures are printed, never asserted on.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import on_both_backends, print_table
from eventstore import EventStore, NewEvent
from eventstore import checkpoints as cp

DEFAULT_PG_URL = "postgresql://root@127.0.0.1:5432/test"


def fill(store: EventStore, count: int, first: int = 0) -> None:
    for start in range(first, first + count, 1000):
        size = min(1000, first + count - start)
        store.append(f"flow-{start // 1000 % 10}", [NewEvent("Step", {"n": start + i}) for i in range(size)])


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = call()
    return result, (time.perf_counter() - started) * 1000


def measure(store: EventStore, label: str, events: int, samples: int) -> dict[str, float]:
    key = cp.generate_key()
    fill(store, events)
    print(f"  {label}: {events:,} events written", flush=True)
    first, first_ms = timed(lambda: cp.take_checkpoint(store, key))
    fill(store, 1000, events)
    second, second_ms = timed(lambda: cp.take_checkpoint(store, key))
    rng = random.Random(7)
    proofs = []
    for _ in range(samples):
        position = rng.randint(1, second.tree_size)
        started = time.perf_counter()
        cp.inclusion_proof(store, position, second).verify(second)
        proofs.append((time.perf_counter() - started) * 1000)
    (some,) = store.read_all(after_position=rng.randint(1, events), limit=1)
    _, by_id_ms = timed(lambda: cp.inclusion_proof(store, some.event_id, second).verify(second))
    _, consistency_ms = timed(lambda: cp.consistency_proof(store, first, second).verify(first, second))
    report, check_ms = timed(lambda: cp.verify_checkpoints(store, key.public_key()))
    assert report.ok, report.problems
    proofs.sort()
    print(f"  {label}: done", flush=True)
    return {
        "first": first_ms / 1000,
        "second": second_ms,
        "median": statistics.median(proofs),
        "p95": proofs[int(len(proofs) * 0.95) - 1],
        "by_id": by_id_ms,
        "consistency": consistency_ms,
        "check": report.events_checked / (check_ms / 1000),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)
    pg_url = None if args.no_postgres else args.pg_url
    results = on_both_backends(
        "merkle", lambda store, label: measure(store, label, args.events, args.samples), pg_url
    )
    print(f"\n{args.events:,} events, then 1,000 more; {args.samples} random inclusion proofs\n")
    rows = [
        ("first take_checkpoint (hashes every leaf), s", "first", "{:,.1f}"),
        ("take_checkpoint after 1,000 more events, ms", "second", "{:,.0f}"),
        ("inclusion proof + verify by position, median ms", "median", "{:,.2f}"),
        ("inclusion proof + verify by position, p95 ms", "p95", "{:,.2f}"),
        ("inclusion proof + verify by event id, ms", "by_id", "{:,.2f}"),
        ("consistency proof + verify, ms", "consistency", "{:,.2f}"),
        ("verify_checkpoints, events/s", "check", "{:,.0f}"),
    ]
    print_table(results, rows, label=48, column=14)
    return 0


if __name__ == "__main__":
    sys.exit(main())
