"""Reads that stream: their peak memory does not grow with the flow they read.

Measured with tracemalloc (Python's own allocations, not timings): the peak
while reading a flow ten times longer must stay under three times the
peak of the short one. Holding every event grows it about tenfold.
"""

from __future__ import annotations

import contextlib
import os
import tracemalloc
from collections.abc import Callable

from eventstore import EventStore, NewEvent
from eventstore.cli import main

from .conftest import Target

PAYLOAD = "x" * 1000  # each event about a kilobyte, so the events held dominate the peak


def _fill(store: EventStore, flow_id: str, count: int) -> None:
    for start in range(0, count, 1000):
        batch = [NewEvent("Noted", {"text": PAYLOAD, "n": n}) for n in range(start, min(count, start + 1000))]
        store.append(flow_id, batch, expected_revision=start)


def _peak(run: Callable[[], object]) -> int:
    """tracemalloc's peak while ``run`` runs, after one warm-up run (imports, caches)."""
    run()
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _cli(target: Target, *args: str) -> Callable[[], None]:
    schema = target.options.get("schema")
    prefix = ["--url", target.url, *(["--schema", schema] if schema else [])]

    def run() -> None:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            main.main([*prefix, *args], standalone_mode=False)

    return run


class TestHistoryJson:
    def test_streams_a_long_flow(self, target: Target) -> None:
        with target.open() as store:
            _fill(store, "short", 1_000)
            _fill(store, "long", 10_000)
        short = _peak(_cli(target, "history", "short", "--json"))
        long = _peak(_cli(target, "history", "long", "--json"))
        assert long < 3 * short, (short, long)
