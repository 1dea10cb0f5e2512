"""Benchmark time travel: state at a revision of a long flow, diffs, and verify.

    PYTHONPATH=. python benchmarks/timetravel.py [--events 100000] [--samples 200] [--no-postgres]

One flow of ``--events`` events (steps scheduled, started and completed, the
state patched as it goes) is written on SQLite and on PostgreSQL. Then:

* the first ``state_at`` of the last revision (it folds everything and
  leaves a snapshot every 1,000 revisions), timed once;
* ``state_at`` of ``--samples`` random revisions, median and 95th percentile;
  the issue's target is under 20 ms on SQLite. Steps come from a snapshot's
  parts as they are read, so a second figure reads every step of the state;
* ``diff`` between random revision pairs 500 apart, median;
* ``replay`` of the flow's last 5 events (from the snapshot before them),
  every state it yields kept, median: what debugging a long flow's tail costs;
* ``verify`` of the whole store, events per second.

Figures are printed, never asserted on.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import on_both_backends, print_table
from eventstore import EventStore, NewEvent
from eventstore.timetravel import diff, replay, state_at

DEFAULT_PG_URL = "postgresql://root@127.0.0.1:5432/test"
TARGET_MS = 20.0


def flow_events(count: int) -> list[list[NewEvent]]:
    """The flow's events in append batches of 1,000."""
    events = [
        NewEvent(
            "FlowStarted",
            {
                "controller_id": "bot",
                "goal": "long-running agent",
                "owner_session_key": "s",
                "state": {"n": 0},
            },
        )
    ]
    step = 0
    while len(events) < count:
        sid = f"s{step}"
        events += [
            NewEvent(
                "StepScheduled", {"step_id": sid, "name": "tool", "run_id": f"r{step}", "position": step}
            ),
            NewEvent("StepStarted", {"step_id": sid}),
            NewEvent("StepCompleted", {"step_id": sid, "result": {"rows": step % 17}}),
            NewEvent(
                "FlowAdvanced", {"current_step": sid, "state_patch": {"n": step, f"k{step % 50}": step}}
            ),
        ]
        step += 1
    events = events[:count]
    return [events[i : i + 1000] for i in range(0, count, 1000)]


def measure(store: EventStore, label: str, events: int, samples: int) -> dict[str, float]:
    for batch in flow_events(events):
        store.append("long", batch)
    started = time.perf_counter()
    state_at(store, "long")
    cold = time.perf_counter() - started
    rng = random.Random(7)
    timings = []
    for _ in range(samples):
        revision = rng.randint(1, events)
        started = time.perf_counter()
        state_at(store, "long", revision=revision)
        timings.append((time.perf_counter() - started) * 1000)
    whole = []  # the same, then every step read (all of a snapshot's parts loaded)
    for _ in range(max(10, samples // 4)):
        revision = rng.randint(1, events)
        started = time.perf_counter()
        view = state_at(store, "long", revision=revision)
        read = sum(1 for step in view.steps.values() if step.status)
        whole.append((time.perf_counter() - started) * 1000)
        assert read == len(view.steps)
    diffs = []
    for _ in range(max(10, samples // 10)):
        a = rng.randint(1, events - 500)
        started = time.perf_counter()
        diff(store, "long", a, a + 500)
        diffs.append((time.perf_counter() - started) * 1000)
    replays = []  # the tail of the flow, every state kept as a debugging caller would
    for _ in range(max(3, samples // 40)):
        started = time.perf_counter()
        kept = list(replay(store, "long", from_revision=events - 4))
        replays.append((time.perf_counter() - started) * 1000)
        assert len(kept) == 5
    started = time.perf_counter()
    report = store.verify()
    verify_rate = report.events_checked / (time.perf_counter() - started)
    timings.sort()
    figures = {
        "cold": cold * 1000,
        "median": statistics.median(timings),
        "p95": timings[int(len(timings) * 0.95) - 1],
        "whole": statistics.median(whole),
        "diff": statistics.median(diffs),
        "replay": statistics.median(replays),
        "verify": verify_rate,
    }
    print(f"  {label}: done", flush=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)
    pg_url = None if args.no_postgres else args.pg_url
    results = on_both_backends(
        "timetravel", lambda store, label: measure(store, label, args.events, args.samples), pg_url
    )
    print(f"\none flow of {args.events:,} events; {args.samples} random revisions\n")
    rows = [
        ("first state_at (folds all, writes snapshots) ms", "cold", "{:,.0f}"),
        ("state_at random revision, median ms", "median", "{:,.1f}"),
        ("state_at random revision, p95 ms", "p95", "{:,.1f}"),
        ("state_at + read every step, median ms", "whole", "{:,.1f}"),
        ("diff of 500 revisions, median ms", "diff", "{:,.1f}"),
        ("replay last 5 events, median ms", "replay", "{:,.1f}"),
        ("verify, events/s", "verify", "{:,.0f}"),
    ]
    print_table(results, rows, label=44, column=16)
    if "SQLite" in results:
        p95 = results["SQLite"]["p95"]
        verdict = "met" if p95 < TARGET_MS else "MISSED"
        print(f"\ntarget: state_at on SQLite under {TARGET_MS:.0f} ms: p95 {p95:.1f} ms, {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
