"""Benchmark the audit questions on a large log: how long each answer takes.

    PYTHONPATH=. python benchmarks/audit.py                 # 1,000,000 events
    PYTHONPATH=. python benchmarks/audit.py --quick         # 100,000 events
    PYTHONPATH=. python benchmarks/audit.py --events 300000 --no-postgres

Each backend gets a log of ``--events`` events in agent flows of about 95 (no read
models: every question below is answered from the log). A flow is started in a
session of ten flows, runs nine steps, each with tool calls, model calls, a
decision by one of the agents (caused by the model call before it) and
the step's completion; its fifth step has a gate opened and approved by one of
fifty people (the approval caused by the opening); every fourth flow has a
step that fails and is retried. About one event in nine is audited.

On PostgreSQL the tables are analysed once written, as autovacuum does
within a minute of such a load. Then each question is asked twice and the faster is printed in
milliseconds, with how many entries it gave: a flow's whole trail, a
session's, one person's approvals (the first 50, and all of them), the first
50 failures, the first 50 entries of the whole log, the entries of the last
flows written (``since``), an actor with no entries, and the causes and
effects of one approval. Every answer is checked against what the log was
given.

There is no peer to compare with (no other audit store answers these
questions): run it on two commits to see what a change did. Figures are
printed, never asserted on.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.scratch import Scratch
from benchmarks.workload import make_samples
from eventstore import EventStore, NewEvent
from eventstore.audit import audit_trail
from eventstore.causation import causes, effects
from eventstore.schema import AUDIT_EVENT_TYPES

DEFAULT_PG_URL = "postgresql://root@127.0.0.1:5432/test"
FLOW_SIZE = 95  # on average: 94 events, 96 in a flow with a failure
STEPS = 9
FLOWS_PER_SESSION = 10
PEOPLE = 50
AGENTS = ("agent:planner", "agent:researcher", "agent:writer")
FLOWS_PER_COMMIT = 50


def flow_events(number: int, samples: list[Any]) -> list[NewEvent]:
    """Flow ``number``'s events, its causation links set."""
    events = [
        NewEvent(
            "FlowStarted",
            {"controller_id": "bench", "goal": f"task {number}", "owner_session_key": session_of(number)},
        )
    ]
    for step in range(STEPS):
        step_id = f"s{step}"
        agent = AGENTS[(number + step) % len(AGENTS)]
        events += [
            NewEvent(
                "StepScheduled", {"step_id": step_id, "name": f"step {step}", "run_id": f"{number}/{step}"}
            ),
            NewEvent("StepStarted", {"step_id": step_id}),
        ]
        events += [NewEvent(s.type, s.data) for s in samples[step * 5 % len(samples) :][:5]]
        model_call = NewEvent("LLMCallCompleted", {"step_id": step_id, "model": "m", "tokens": 900})
        decision = NewEvent(
            "DecisionRecorded",
            {"actor": agent, "decision": "delegate", "rationale": "it ranked first", "step_id": step_id},
            metadata={"causation_id": str(model_call.event_id)},
        )
        events += [model_call, decision]
        if step == 4:
            opened = NewEvent(
                "GateOpened",
                {"step_id": step_id, "prompt": "Send it?", "options": [{"value": "yes", "label": "Yes"}]},
            )
            approved = NewEvent(
                "GateApproved",
                {"step_id": step_id, "by": person_of(number), "selections": ["yes"]},
                metadata={"causation_id": str(opened.event_id)},
            )
            events += [opened, approved]
        if step == 6 and number % 4 == 0:
            events += [
                NewEvent("StepFailed", {"step_id": step_id, "error": "rate limited"}),
                NewEvent("StepRetried", {"step_id": step_id, "retry_count": 1}),
            ]
        events.append(NewEvent("StepCompleted", {"step_id": step_id}))
    events.append(NewEvent("FlowFinished", {"result": {"ok": True}}))
    return events


def session_of(number: int) -> str:
    return f"sess-{number // FLOWS_PER_SESSION:06d}"


def person_of(number: int) -> str:
    return f"human:{number % PEOPLE:02d}"


def fill(store: EventStore, flows: int) -> dict[int, list[NewEvent]]:
    """``flows`` flows, ``FLOWS_PER_COMMIT`` to a transaction; the events of a few of them, by number."""
    samples = [s for s in make_samples() if s.type not in AUDIT_EVENT_TYPES]  # the log's agent chatter
    kept: dict[int, list[NewEvent]] = {}
    for first in range(0, flows, FLOWS_PER_COMMIT):
        with store.transaction() as tx:
            for number in range(first, min(first + FLOWS_PER_COMMIT, flows)):
                events = flow_events(number, samples)
                if number in (flows // 2, 0):
                    kept[number] = events
                tx.append(f"flow-{number:07d}", events, expected_revision=0, metadata={"actor": "runtime"})
    return kept


def questions(
    store: EventStore, flows: int, kept: dict[int, list[NewEvent]]
) -> dict[str, tuple[Callable[[], int], int]]:
    """Each question, and how many entries (or events) its answer must have."""
    middle = flows // 2
    approvals_by_person = len(range(0, flows, PEOPLE))  # person 00 approved flows 0, 50, 100, ...
    last_commit = (flows - 1) // FLOWS_PER_COMMIT * FLOWS_PER_COMMIT  # its first flow
    since = _recorded_at(store, f"flow-{last_commit:07d}")
    approval = next(e for e in kept[middle] if e.type == "GateApproved")
    per_flow = _audited(kept[middle])
    per_session = sum(_audited_count(n) for n in range(flows) if session_of(n) == session_of(middle))

    def count(**scope: Any) -> Callable[[], int]:
        return lambda: sum(1 for _ in audit_trail(store, **scope))

    return {
        "a flow's trail": (count(flow_id=f"flow-{middle:07d}"), per_flow),
        "a session's trail": (count(session=session_of(middle)), per_session),
        "a person's approvals, first 50": (count(actor=person_of(0), limit=50), min(50, approvals_by_person)),
        "a person's approvals, all": (count(actor=person_of(0)), approvals_by_person),
        "failures, first 50": (count(types=["StepFailed"], limit=50), min(50, len(range(0, flows, 4)))),
        "approvals, first 2,000": (count(types=["GateApproved"], limit=2000), min(2000, flows)),
        "whole log, first 50": (count(limit=50), 50),
        "since: the last flows": (
            count(since=since),
            sum(_audited_count(n) for n in range(last_commit, flows)),
        ),
        "an actor with no entries": (count(actor="human:nobody"), 0),
        "causes of an approval": (lambda: len(causes(store, approval.event_id)), 1),
        "effects of a gate opening": (lambda: len(effects(store, approval.metadata["causation_id"])), 1),  # type: ignore[index]
    }


def _audited(events: list[NewEvent]) -> int:
    return sum(e.type in AUDIT_EVENT_TYPES for e in events)


def _audited_count(number: int) -> int:
    return STEPS + 2 + (number % 4 == 0)


def _recorded_at(store: EventStore, flow_id: str) -> Any:
    return next(iter(store.read_flow(flow_id, to_revision=1))).recorded_at


def measure(store: EventStore, flows: int, kept: dict[int, list[NewEvent]]) -> dict[str, tuple[float, int]]:
    """Milliseconds per answer (best of two), and its size."""
    found: dict[str, tuple[float, int]] = {}
    for name, (ask, expected) in questions(store, flows, kept).items():
        best, got = float("inf"), -1
        for _ in range(2):
            start = time.perf_counter()
            got = ask()
            best = min(best, time.perf_counter() - start)
        if got != expected:
            raise SystemExit(f"{name}: {got} entries, expected {expected}")
        found[name] = (best * 1000, got)
    return found


def run(url: str, flows: int, **options: Any) -> dict[str, tuple[float, int]]:
    with EventStore.open(url, **options) as store:
        started = time.perf_counter()
        kept = fill(store, flows)
        elapsed = time.perf_counter() - started
        print(f"    {store.last_position():,} events written in {elapsed:.0f} s", flush=True)
        if store.dialect == "postgresql":  # the statistics autovacuum gathers within a minute of a load
            with store.engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")
        return measure(store, flows, kept)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    events = 100_000 if args.quick else args.events
    flows = max(FLOWS_PER_SESSION, events // FLOW_SIZE)
    pg_url = None if args.no_postgres else args.pg_url
    results: dict[str, dict[str, tuple[float, int]]] = {}
    with Scratch(pg_url, args.dir) as scratch:
        print(f"SQLite {sqlite3.sqlite_version}", flush=True)
        results["SQLite"] = run(f"sqlite:///{scratch.sqlite_path('audit')}", flows)
        if pg_url is not None:
            version = scratch.server_facts()["version"].split()[0]
            print(f"PostgreSQL {version}", flush=True)
            results[f"PostgreSQL {version}"] = run(scratch.pg_database("audit"), flows, create=True)
    names = list(results)
    print(f"\nms per answer, {flows:,} flows of about {FLOW_SIZE} events (best of 2)")
    print(f"{'':34}{'entries':>9}" + "".join(f"{name:>18}" for name in names))
    for row, (_, size) in results[names[0]].items():
        print(f"{row:34}{size:>9,}" + "".join(f"{results[name][row][0]:>18,.1f}" for name in names))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the log (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help="100,000 events")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument(
        "--pg-url", default=DEFAULT_PG_URL, help="a PostgreSQL URL to create scratch databases with"
    )
    parser.add_argument("--dir", help="where the SQLite file goes (default: a temporary directory)")
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
