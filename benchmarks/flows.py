"""Benchmark the flow layer: FlowService commands against a hand-written baseline, and rebuilds.

    PYTHONPATH=. python benchmarks/flows.py             # the full run
    PYTHONPATH=. python benchmarks/flows.py --quick     # a smoke run, well under two minutes
    PYTHONPATH=. python benchmarks/flows.py --events 200000 --no-postgres

Workloads, on SQLite (file, WAL, synchronous=NORMAL) and PostgreSQL:

- commands: one writer drives whole flows through ``FlowService`` (start, ten
  steps each scheduled, started and completed, an approval gate opened and
  approved on one step, finish: 34 commands, 34 events, one transaction each),
  and the same commands through a baseline written here on the raw driver with
  no log as the source of truth: read the rows, update them with an optimistic
  revision check (or insert a new step), insert an audit row. Best of
  interleaved rounds.
- rebuild: ``projections.rebuild`` of the flow read models from a store of
  --events events, appended directly (without the projection) beforehand.

Figures are printed, never asserted on; each workload ends with a cheap check
that the read models hold what was driven.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
import psycopg
import sqlalchemy as sa

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import Figure
from benchmarks.scratch import Scratch
from eventstore import EventStore, NewEvent
from eventstore.flows import FLOW_EVENTS
from projections import FlowProjection, FlowQueries, FlowService, rebuild

DEFAULT_PG_URL = "postgresql://root@127.0.0.1:5432/test"
STEPS = 10
GATED_STEP = 4
COMMANDS_PER_FLOW = 1 + 3 * STEPS + 2 + 1
REBUILD_TARGET = 100_000  # events/s, SQLite
RATIO_TARGET = 0.5  # FlowService commands/s over the baseline's

Command = tuple[str, str, dict[str, Any]]  # verb, flow id, arguments (also the event's data)
Call = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]  # a FlowService method and its arguments


# -- the flow every subject drives -------------------------------------------------------


def flow_commands(number: int, prefix: str) -> list[Command]:
    """The commands of one flow, in order; the arguments are what its events record."""
    flow_id = f"{prefix}-{number:07d}"
    commands: list[Command] = [
        (
            "start_flow",
            flow_id,
            {
                "controller_id": "support-triage",
                "goal": f"Answer ticket #{number}: refund request for an overdue invoice",
                "owner_session_key": f"session-{number % 64:02d}",
                "state": {"ticket": number, "priority": "high", "channel": "email"},
            },
        )
    ]
    for s in range(STEPS):
        step_id = f"step-{s:02d}"
        commands += [
            (
                "schedule_step",
                flow_id,
                {
                    "step_id": step_id,
                    "name": ("retrieve", "rank", "draft", "check", "send")[s % 5],
                    "run_id": f"{flow_id}/{step_id}/1",
                    "task": {"prompt": f"step {s} of ticket {number}", "tool": "search", "k": 5},
                    "runtime": "python",
                    "position": s,
                },
            ),
            ("start_step", flow_id, {"step_id": step_id}),
        ]
        if s == GATED_STEP:
            commands += [
                (
                    "open_gate",
                    flow_id,
                    {
                        "step_id": step_id,
                        "prompt": "Send this reply to the customer?",
                        "options": [{"value": "send", "label": "Send"}, {"value": "edit", "label": "Edit"}],
                    },
                ),
                (
                    "approve_gate",
                    flow_id,
                    {
                        "step_id": step_id,
                        "by": "reviewer@example.com",
                        "feedback": "ok",
                        "selections": ["send"],
                    },
                ),
            ]
        commands.append(
            (
                "complete_step",
                flow_id,
                {
                    "step_id": step_id,
                    "result": {"tokens": 812 + s, "model": "gpt-4o-mini", "latency_ms": 930},
                    "output": {"text": "Three candidate documents found and ranked by relevance."},
                },
            )
        )
    commands.append(("finish", flow_id, {"result": {"status": "resolved", "steps": STEPS}}))
    assert len(commands) == COMMANDS_PER_FLOW
    return commands


EVENT_TYPES = {
    "start_flow": "FlowStarted",
    "schedule_step": "StepScheduled",
    "start_step": "StepStarted",
    "open_gate": "GateOpened",
    "approve_gate": "GateApproved",
    "complete_step": "StepCompleted",
    "finish": "FlowFinished",
}
STEP_VERBS = frozenset({"start_step", "open_gate", "approve_gate", "complete_step"})


# -- subjects ----------------------------------------------------------------------------


class Subject(Protocol):
    label: str

    def prepare(self, commands: list[Command]) -> list[Any]: ...
    def apply(self, op: Any) -> None: ...
    def check(self, flows: int) -> None: ...
    def close(self) -> None: ...


class Ours:
    """``FlowService`` on a store opened with the flow projection."""

    label = "FlowService"

    def __init__(self, url: str) -> None:
        self.store = _open(url, projections=[FlowProjection()])
        self.service = FlowService(self.store)

    def prepare(self, commands: list[Command]) -> list[Call]:
        ops = []
        for verb, flow_id, args in commands:
            kwargs = dict(args)
            positional: tuple[Any, ...] = (flow_id,)
            if verb in STEP_VERBS:
                positional = (flow_id, kwargs.pop("step_id"))
            if verb != "approve_gate":
                kwargs["actor"] = "agent-7"
            ops.append((getattr(self.service, verb), positional, kwargs))
        return ops

    def apply(self, op: Call) -> None:
        method, args, kwargs = op
        method(*args, **kwargs)

    def check(self, flows: int) -> None:
        queries = FlowQueries(self.store)
        finished = queries.flows(status="finished", limit=1)
        _expect(self.label, "finished flows", finished.total, flows)
        _expect(self.label, "events", self.store.last_position(), flows * COMMANDS_PER_FLOW)
        steps = queries.steps(finished.items[0].flow_id)
        _expect(self.label, "completed steps", sum(s.status == "completed" for s in steps), STEPS)
        _expect(self.label, "approved gates", sum(s.gate_status == "approved" for s in steps), 1)

    def close(self) -> None:
        self.store.close()


class Baseline:
    """The same commands hand-written on the raw driver: state rows are the truth, events an audit trail.

    One transaction per command: read the flow (and step) row, check the
    transition, update with ``WHERE revision = ?`` (or insert a new step),
    insert an audit row. ``sqlite3`` (WAL, synchronous=NORMAL, BEGIN
    IMMEDIATE) or ``psycopg``; the SQL is written once with ``?`` markers.
    """

    def __init__(self, target: str) -> None:
        self.postgres = target.startswith("postgresql")
        if self.postgres:
            url = sa.make_url(target).set(drivername="postgresql").render_as_string(hide_password=False)
            self.conn: Any = psycopg.connect(url)
            self.label = "raw psycopg"
            json, time_type, serial = "JSONB", "TIMESTAMPTZ", "BIGSERIAL"
        else:
            self.conn = sqlite3.connect(target, isolation_level=None)
            if SQLITE_PAGE_SIZE is not None:
                self.conn.execute(f"PRAGMA page_size = {SQLITE_PAGE_SIZE}")
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = NORMAL")
            self.label = "raw sqlite3"
            json, time_type, serial = "TEXT", "TEXT", "INTEGER"
        self._begin()
        for ddl in _BASELINE_DDL:
            self.conn.execute(ddl.format(json=json, time=time_type, serial=serial))
        self.conn.commit()

    def _begin(self) -> None:
        if not self.postgres:
            self.conn.execute("BEGIN IMMEDIATE")  # psycopg opens a transaction by itself

    def _q(self, sql: str, params: tuple[Any, ...]) -> Any:
        return self.conn.execute(sql.replace("?", "%s") if self.postgres else sql, params)

    def _now(self) -> Any:
        now = datetime.now(UTC)
        return now if self.postgres else now.isoformat()

    def prepare(self, commands: list[Command]) -> list[Command]:
        return commands

    def apply(self, command: Command) -> None:
        verb, flow_id, args = command
        self._begin()
        try:
            self._command(verb, flow_id, args)
        except BaseException:
            self.conn.rollback()
            raise
        self.conn.commit()

    def _command(self, verb: str, flow_id: str, args: dict[str, Any]) -> None:
        q, now, dumps = self._q, self._now(), _dumps
        flow = q("SELECT revision, status FROM flows WHERE flow_id = ?", (flow_id,)).fetchone()
        if verb == "start_flow":
            if flow is not None:
                raise RuntimeError(f"{flow_id} exists")
            state = dumps(args["state"])
            values = (
                flow_id,
                args["controller_id"],
                args["goal"],
                args["owner_session_key"],
                state,
                now,
                now,
            )
            q(_INSERT_FLOW, values)
            revision = 1
        else:
            if flow is None or flow[1] != "running":
                raise RuntimeError(f"{flow_id} is not running")
            revision = flow[0] + 1
            if verb == "finish":
                changed = q(_FINISH_FLOW, (dumps(args["result"]), revision, now, now, flow_id, flow[0]))
            else:
                self._step(verb, flow_id, args, now)
                changed = q(_BUMP_FLOW, (revision, now, flow_id, flow[0]))
            if changed.rowcount != 1:
                raise RuntimeError(f"{flow_id} changed under the command")
        q(_INSERT_EVENT, (flow_id, revision, EVENT_TYPES[verb], dumps(args), "agent-7", now))

    def _step(self, verb: str, flow_id: str, args: dict[str, Any], now: Any) -> None:
        q, step_id = self._q, args["step_id"]
        row = q(_SELECT_STEP, (flow_id, step_id)).fetchone()
        if verb == "schedule_step":
            if row is not None:
                raise RuntimeError(f"{flow_id}/{step_id} exists")
            task = _dumps(args["task"])
            keys = (flow_id, step_id, args["name"], args["run_id"], task, args["runtime"], args["position"])
            q(_INSERT_STEP, (*keys, now, now))
            return
        status, gate = (None, None) if row is None else row
        allowed, assignments, values = _STEP_CHANGES[verb]
        if not allowed(status, gate):
            raise RuntimeError(f"cannot {verb} {flow_id}/{step_id} ({status}, gate {gate})")
        sql = f"UPDATE steps SET {assignments}, updated_at = ? WHERE flow_id = ? AND step_id = ?"
        q(sql, (*values(args, now), now, flow_id, step_id))

    def check(self, flows: int) -> None:
        def count(sql: str) -> int:
            value = int(self._q(sql, ()).fetchone()[0])
            self.conn.commit()
            return value

        _expect(
            self.label, "finished flows", count("SELECT count(*) FROM flows WHERE status = 'finished'"), flows
        )
        _expect(self.label, "events", count("SELECT count(*) FROM events"), flows * COMMANDS_PER_FLOW)
        _expect(
            self.label,
            "completed steps",
            count("SELECT count(*) FROM steps WHERE status = 'completed'"),
            flows * STEPS,
        )

    def close(self) -> None:
        self.conn.close()


_INSERT_FLOW = (
    "INSERT INTO flows (flow_id, controller_id, goal, owner_session_key, state, status, revision, "
    "created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'running', 1, ?, ?)"
)
_FINISH_FLOW = (
    "UPDATE flows SET status = 'finished', result = ?, revision = ?, updated_at = ?, finished_at = ? "
    "WHERE flow_id = ? AND revision = ?"
)
_BUMP_FLOW = "UPDATE flows SET revision = ?, updated_at = ? WHERE flow_id = ? AND revision = ?"
_SELECT_STEP = "SELECT status, gate_status FROM steps WHERE flow_id = ? AND step_id = ?"
_INSERT_STEP = (
    "INSERT INTO steps (flow_id, step_id, name, run_id, task, runtime, position, status, "
    "scheduled_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'scheduled', ?, ?)"
)
_INSERT_EVENT = (
    "INSERT INTO events (flow_id, revision, type, data, actor, recorded_at) VALUES (?, ?, ?, ?, ?, ?)"
)
_STEP_CHANGES: dict[
    str, tuple[Callable[[Any, Any], bool], str, Callable[[dict[str, Any], Any], tuple[Any, ...]]]
] = {
    "start_step": (
        lambda status, gate: status == "scheduled",
        "status = 'running', attempts = attempts + 1, started_at = ?",
        lambda args, now: (now,),
    ),
    "open_gate": (
        lambda status, gate: status == "running" and gate != "open",
        "gate_status = 'open', gate_prompt = ?, gate_options = ?",
        lambda args, now: (args["prompt"], _dumps(args["options"])),
    ),
    "approve_gate": (
        lambda status, gate: gate == "open",
        "gate_status = 'approved', gate_by = ?, gate_selections = ?",
        lambda args, now: (args["by"], _dumps(args["selections"])),
    ),
    "complete_step": (
        lambda status, gate: status == "running" and gate != "open",
        "status = 'completed', result = ?, output = ?, finished_at = ?",
        lambda args, now: (_dumps(args["result"]), _dumps(args["output"]), now),
    ),
}
"""Per step command: is the transition allowed (status, gate status), what it sets, from what."""
_BASELINE_DDL = (
    "CREATE TABLE flows (flow_id VARCHAR(200) PRIMARY KEY, controller_id TEXT NOT NULL, goal TEXT NOT NULL, "
    "owner_session_key TEXT NOT NULL, state {json} NOT NULL, status VARCHAR(16) NOT NULL, result {json}, "
    "revision INTEGER NOT NULL, created_at {time}, updated_at {time}, finished_at {time})",
    "CREATE INDEX ix_flows_owner ON flows (owner_session_key, created_at)",
    "CREATE INDEX ix_flows_status ON flows (status, created_at)",
    "CREATE TABLE steps (flow_id VARCHAR(200), step_id VARCHAR(200), name TEXT NOT NULL, "
    "run_id TEXT NOT NULL, task {json} NOT NULL, runtime TEXT, position INTEGER NOT NULL, "
    "status VARCHAR(16) NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, result {json}, output {json}, "
    "gate_status VARCHAR(16), gate_prompt TEXT, "
    "gate_options {json}, gate_by TEXT, gate_selections {json}, scheduled_at {time}, started_at {time}, "
    "finished_at {time}, updated_at {time}, PRIMARY KEY (flow_id, step_id), UNIQUE (flow_id, run_id))",
    "CREATE TABLE events (id {serial} PRIMARY KEY, flow_id VARCHAR(200) NOT NULL, revision INTEGER NOT NULL, "
    "type TEXT NOT NULL, data {json} NOT NULL, actor TEXT, recorded_at {time} NOT NULL, "
    "UNIQUE (flow_id, revision))",
)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


SQLITE_PAGE_SIZE: int | None = None
"""``--sqlite-page-size``: the page size of every SQLite file made here, ours and the baseline's."""


def _open(target: str, **options: Any) -> EventStore:
    if target.startswith("postgresql"):
        return EventStore.open(target, create=True, **options)
    if SQLITE_PAGE_SIZE is not None and not Path(target).exists():
        made = sqlite3.connect(target)  # the size holds once the file has its first page
        made.execute(f"PRAGMA page_size = {SQLITE_PAGE_SIZE}")
        made.execute("PRAGMA journal_mode = WAL")
        made.close()
    return EventStore.open(f"sqlite:///{target}", synchronous="NORMAL", **options)


def _expect(label: str, what: str, actual: int, expected: int) -> None:
    if actual != expected:
        raise RuntimeError(f"{label}: {actual} {what}, expected {expected}")


# -- workloads -----------------------------------------------------------------------------


def measure_commands(subjects: dict[str, Subject], *, flows: int, rounds: int) -> dict[str, Figure]:
    """Whole flows, ``flows`` per round per subject; the rounds interleave; best round each.

    Returns commands (= events) over seconds. A couple of flows first warm up
    each subject; every flow is checked in the read models at the end.
    """
    keys = list(subjects)
    numbers = iter(range(10**6))
    for key in keys:
        for op in subjects[key].prepare([c for _ in range(2) for c in flow_commands(next(numbers), key)]):
            subjects[key].apply(op)
    best: dict[str, Figure] = {}
    for turn in range(rounds):
        for key in keys[turn % len(keys) :] + keys[: turn % len(keys)]:
            subject = subjects[key]
            ops = subject.prepare([c for _ in range(flows) for c in flow_commands(next(numbers), key)])
            apply = subject.apply
            start = time.perf_counter()
            for op in ops:
                apply(op)
            figure = Figure(len(ops), time.perf_counter() - start)
            print(f"    {subject.label:<14} round {turn + 1}: {figure.rate:>9,.0f} commands/s", flush=True)
            if key not in best or figure.rate > best[key].rate:
                best[key] = figure
    for subject in subjects.values():
        subject.check(2 + flows * rounds)
    return best


def log_events(total: int) -> Iterator[tuple[str, list[NewEvent]]]:
    """``total`` events as whole flows of the workload above (the last one cut short), one list per flow."""
    number = 0
    while total > 0:
        commands = flow_commands(number, "log")[: min(total, COMMANDS_PER_FLOW)]
        yield (
            commands[0][1],
            [NewEvent(EVENT_TYPES[verb], _event_data(verb, args)) for verb, _, args in commands],
        )
        total -= len(commands)
        number += 1


def _event_data(verb: str, args: dict[str, Any]) -> dict[str, Any]:
    return {**args, "requester_origin": None, "parent_flow_id": None} if verb == "start_flow" else args


def _validate_vocabulary() -> None:
    """The log's events must be what FlowService would have written: check one flow's against the models."""
    models = {model.event_type: model for model in FLOW_EVENTS}
    for verb, _flow_id, args in flow_commands(0, "check"):
        models[EVENT_TYPES[verb]].model_validate(_event_data(verb, args))


def measure_rebuild(target: str, total: int, *, per_commit: int = 30) -> tuple[Figure, Figure]:
    """Append ``total`` events without the projection, then time a rebuild. (fill, rebuild)."""
    _validate_vocabulary()
    store = _open(target)
    try:
        start = time.perf_counter()
        flows = log_events(total)
        while True:
            with store.transaction() as tx:
                appended = 0
                for flow_id, events in flows:
                    tx.append(flow_id, events, expected_revision=0)
                    appended += 1
                    if appended == per_commit:
                        break
            if appended < per_commit:
                break
        fill = Figure(total, time.perf_counter() - start)
        _expect("log", "events", store.last_position(), total)
        print(f"    bulk load: {fill.rate:>9,.0f} events/s", flush=True)
        progress = rebuild(store, FlowProjection())
        figure = Figure(progress.done, progress.seconds)
        _expect("rebuild", "events", progress.done, total)
        whole, rest = divmod(total, COMMANDS_PER_FLOW)
        queries = FlowQueries(store)
        _expect("rebuild", "finished flows", queries.flows(status="finished", limit=1).total, whole)
        _expect("rebuild", "running flows", queries.flows(status="running", limit=1).total, int(rest > 0))
        sessions = queries.sessions(limit=1000).items
        _expect("rebuild", "session events", sum(s.event_count for s in sessions), total)
        _expect("rebuild", "steps", len(queries.steps("log-0000000")), STEPS)
        return fill, figure
    finally:
        store.close()


# -- the run ---------------------------------------------------------------------------------


def run_backend(
    name: str, new_target: Callable[[str], str], *, flows: int, rounds: int, events: int
) -> dict[str, Figure]:
    print(f"{name}: commands ({flows} flows x {COMMANDS_PER_FLOW} commands per round)", flush=True)
    subjects: dict[str, Subject] = {
        "ours": Ours(new_target("fl_ours")),
        "base": Baseline(new_target("fl_base")),
    }
    try:
        figures = measure_commands(subjects, flows=flows, rounds=rounds)
    finally:
        for subject in subjects.values():
            subject.close()
    print(f"{name}: rebuild from {events:,} events", flush=True)
    figures["fill"], figures["rebuild"] = measure_rebuild(new_target("fl_log"), events)
    print(f"    rebuild: {figures['rebuild'].rate:>9,.0f} events/s", flush=True)
    return figures


def render(results: dict[str, dict[str, Figure]], headings: dict[str, str], events: int) -> str:
    """One column per backend; the targets marked met or MISSED."""
    rates = {n: {key: figure.rate for key, figure in figures.items()} for n, figures in results.items()}
    ratios = {n: r["ours"] / r["base"] for n, r in rates.items()}
    rebuild_ok = {
        n: f" {_met(r['rebuild'] >= REBUILD_TARGET)}" if n == "sqlite" else "" for n, r in rates.items()
    }
    rows = [
        ("FlowService commands/s (1 event each)", {n: f"{r['ours']:,.0f}" for n, r in rates.items()}),
        ("baseline commands/s (raw driver, 1 audit row)", {n: f"{r['base']:,.0f}" for n, r in rates.items()}),
        (
            f"ours/baseline (target >= {RATIO_TARGET:g})",
            {n: f"{ratio:.2f}x {_met(ratio >= RATIO_TARGET)}" for n, ratio in ratios.items()},
        ),
        (
            "  ms per command: ours / baseline",
            {n: f"{1e3 / r['ours']:.2f} / {1e3 / r['base']:.2f}" for n, r in rates.items()},
        ),
        (f"bulk load, {events:,} events (not compared)", {n: f"{r['fill']:,.0f}" for n, r in rates.items()}),
        (
            f"rebuild events/s (SQLite target >= {REBUILD_TARGET // 1000}k)",
            {n: f"{r['rebuild']:,.0f}{rebuild_ok[n]}" for n, r in rates.items()},
        ),
    ]
    width, cell = 48, 24
    lines = ["", " " * width + "".join(f"{headings[n]:>{cell}}" for n in results)]
    lines.append("-" * (width + cell * len(results)))
    lines += [f"{title:<{width}}" + "".join(f"{cells[n]:>{cell}}" for n in results) for title, cells in rows]
    lines += ["", "Targets:"]
    for n, ratio in ratios.items():
        goal = f"FlowService commands/s >= {RATIO_TARGET:g}x the baseline's"
        lines.append(f"  {headings[n]}: {goal}: {ratio:.2f}x, {_met(ratio >= RATIO_TARGET)}")
    if "sqlite" in rates:
        rate = rates["sqlite"]["rebuild"]
        goal = f"rebuild >= {REBUILD_TARGET:,} events/s"
        lines.append(f"  {headings['sqlite']}: {goal}: {rate:,.0f}, {_met(rate >= REBUILD_TARGET)}")
    return "\n".join(lines)


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main(argv: list[str] | None = None) -> int:
    global SQLITE_PAGE_SIZE
    args = _parser().parse_args(argv)
    SQLITE_PAGE_SIZE = args.sqlite_page_size
    events = 50_000 if args.quick else args.events
    flows = args.flows if args.flows is not None else (15 if args.quick else 150)
    pg_url = None if args.no_postgres else args.pg_url
    results: dict[str, dict[str, Figure]] = {}
    size = "" if SQLITE_PAGE_SIZE is None else f", page_size {SQLITE_PAGE_SIZE}"
    headings = {"sqlite": f"SQLite {sqlite3.sqlite_version}{size}"}
    with Scratch(pg_url, args.dir) as scratch:
        results["sqlite"] = run_backend(
            "sqlite", scratch.sqlite_path, flows=flows, rounds=args.rounds, events=events
        )
        if pg_url is not None:
            headings["postgresql"] = f"PostgreSQL {scratch.server_facts()['version'].split()[0]}"
            results["postgresql"] = run_backend(
                "postgresql", scratch.pg_database, flows=flows, rounds=args.rounds, events=events
            )
    print(render(results, headings, events))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--events", type=int, default=1_000_000, help="events in the store to rebuild (default 1,000,000)"
    )
    parser.add_argument("--quick", action="store_true", help="50,000 events to rebuild, 15 flows per round")
    parser.add_argument(
        "--flows", type=int, default=None, help="flows per round of the command workload (default 150)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of the command workload; the best is reported"
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("EVENTSTORE_BENCH_PG_URL", DEFAULT_PG_URL),
        help="an existing database to connect to; scratch databases are created beside it",
    )
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument(
        "--sqlite-page-size",
        type=int,
        default=None,
        help="page size of the scratch SQLite files, ours and the baseline's (default: SQLite's, 4096)",
    )
    parser.add_argument(
        "--dir", default=None, help="where to put the scratch SQLite files (default: a temp dir)"
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
