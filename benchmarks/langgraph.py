"""Benchmark EventStoreSaver against LangGraph's own savers.

    PYTHONPATH=. python benchmarks/langgraph.py [--puts 1000] [--rounds 3] [--steps 10000]
        [--state-kb 32] [--lists 5] [--list-limit 100]
        [--pg-url postgresql://root@127.0.0.1:5432/test] [--no-postgres] [--no-size]

1. Throughput, async: every subject gets the same ``--puts`` checkpoints of an
   agent thread (a 2 KB message list that grows every 4th step, a 4 KB
   context that never changes, a step counter, a trigger channel), each saved
   with ``aput`` after its parent; then ``aget_tuple`` of the thread's latest
   checkpoint as many times. Subjects: EventStoreSaver on SQLite (its default
   ``synchronous=NORMAL``, and ``FULL``, the durability LangGraph's savers
   get from SQLite's default) and on PostgreSQL; ``AsyncSqliteSaver`` and
   ``AsyncPostgresSaver``. ``--rounds`` rounds in rotating order, a new
   thread each round; the best round is reported, every round printed.
   Then, on each round's thread, ``alist(config, limit=--list-limit)`` pages
   per second (``LISTS``: the thread's root namespace, as
   ``get_state_history`` asks; the whole thread; a metadata filter; ``before``
   the middle checkpoint), ``--lists`` calls of each.
2. Size: a real ``StateGraph`` that loops ``--steps`` supersteps over a state
   with a ``--state-kb`` document that never changes and a counter that
   changes every step, run on ``SqliteSaver`` and on EventStoreSaver (SQLite),
   and, for comparison, ``PostgresSaver`` and EventStoreSaver (PostgreSQL).
   Sizes are the database files after a WAL checkpoint, and the tables' total
   size on PostgreSQL (EventStoreSaver: the event log and the read model).

Figures are printed, never asserted on.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TypedDict

if __package__ in (
    None,
    "",
):  # run as a script: the checkout importable, and this file not taken for langgraph
    _here = Path(__file__).resolve().parent
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

import psycopg
from langgraph.checkpoint.base import BaseCheckpointSaver, Checkpoint, CheckpointMetadata
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph

from benchmarks.scratch import Scratch
from eventstore.integrations.langgraph import EventStoreSaver

DEFAULT_PG_URL = "postgresql://root@127.0.0.1:5432/test"

Step = tuple[Checkpoint, CheckpointMetadata, dict[str, str | int | float]]


# -- 1. throughput ---------------------------------------------------------------------


def agent_checkpoints(count: int) -> list[Step]:
    """``count`` checkpoints of one agent thread: what changed at each step, and the full state."""
    context = {"customer": "c-1042", "policy": "refunds within 30 days " * 150}
    messages: list[dict[str, str]] = []
    versions: dict[str, str] = {}
    steps: list[Step] = []
    for n in range(count):
        changed = ["step", "branch:to:agent"]
        if n % 4 == 0:
            messages = [*messages[-9:], {"role": "assistant", "content": f"step {n}: " + "x" * 180}]
            changed.append("messages")
        if n == 0:
            changed.append("context")
        for channel in changed:
            versions[channel] = f"{n + 1:032}.{0.5:016}"
        values = {"context": context, "messages": messages, "step": n, "branch:to:agent": None}
        checkpoint = Checkpoint(
            v=4,
            id=str(uuid6(clock_seq=n)),
            ts=f"2030-01-01T00:00:{n % 60:02}+00:00",
            channel_values=values,
            channel_versions=dict(versions),
            versions_seen={"agent": {"branch:to:agent": versions["branch:to:agent"]}},
            updated_channels=changed,
        )
        metadata = CheckpointMetadata(source="loop", step=n, parents={})
        new_versions: dict[str, str | int | float] = {c: versions[c] for c in changed}
        steps.append((checkpoint, metadata, new_versions))
    return steps


LISTS = {
    "thread+ns": lambda steps: ({"thread_id": "", "checkpoint_ns": ""}, {}),
    "thread": lambda steps: ({"thread_id": ""}, {}),
    "filter": lambda steps: ({"thread_id": "", "checkpoint_ns": ""}, {"filter": {"source": "loop"}}),
    "before": lambda steps: (
        {"thread_id": "", "checkpoint_ns": ""},
        {"before": {"configurable": {"checkpoint_id": steps[len(steps) // 2][0]["id"]}}},
    ),
}
"""``alist`` calls timed, by name: the config (its thread filled in) and the other arguments.

``thread+ns`` is what ``get_state_history`` asks; ``thread`` leaves the namespace
out (every namespace of the thread, newest first); ``filter`` matches every
checkpoint's metadata; ``before`` starts at the thread's middle checkpoint."""


async def timed_lists(
    saver: BaseCheckpointSaver[Any], thread: str, steps: list[Step], *, calls: int, limit: int
) -> dict[str, float]:
    """Pages per second of ``alist(..., limit=limit)`` for each of ``LISTS``."""
    rates = {}
    for name, make in LISTS.items():
        configurable, options = make(steps)
        config: Any = {"configurable": {**configurable, "thread_id": thread}}
        started = time.perf_counter()
        for _ in range(calls):
            page = [item async for item in saver.alist(config, limit=limit, **options)]
            assert len(page) == min(limit, len(steps) // 2 if name == "before" else len(steps))
        rates[name] = calls / (time.perf_counter() - started)
    return rates


async def timed_puts(saver: BaseCheckpointSaver[Any], thread: str, steps: list[Step]) -> tuple[float, float]:
    """Seconds for ``aput`` of every step, then for as many ``aget_tuple`` of the latest."""
    config: Any = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    started = time.perf_counter()
    for checkpoint, metadata, new_versions in steps:
        config = await saver.aput(config, checkpoint, metadata, new_versions)
    puts = time.perf_counter() - started
    latest: Any = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    started = time.perf_counter()
    for _ in steps:
        assert await saver.aget_tuple(latest) is not None
    return puts, time.perf_counter() - started


Opener = Callable[[AsyncExitStack], Awaitable[BaseCheckpointSaver[Any]]]


def throughput_subjects(scratch: Scratch, postgres: bool) -> dict[str, Opener]:
    async def ours_sqlite(stack: AsyncExitStack, synchronous: str = "NORMAL") -> BaseCheckpointSaver[Any]:
        url = f"sqlite:///{scratch.sqlite_path(f'ours-{synchronous.lower()}')}"
        return await stack.enter_async_context(EventStoreSaver.from_url(url, synchronous=synchronous))

    async def ours_sqlite_full(stack: AsyncExitStack) -> BaseCheckpointSaver[Any]:
        return await ours_sqlite(stack, "FULL")

    async def theirs_sqlite(stack: AsyncExitStack) -> BaseCheckpointSaver[Any]:
        saver = await stack.enter_async_context(
            AsyncSqliteSaver.from_conn_string(scratch.sqlite_path("theirs"))
        )
        await saver.setup()
        return saver

    subjects: dict[str, Opener] = {
        "EventStoreSaver, SQLite (NORMAL)": ours_sqlite,
        "EventStoreSaver, SQLite (FULL)": ours_sqlite_full,
        "AsyncSqliteSaver": theirs_sqlite,
    }
    if postgres:
        ours_url = scratch.pg_database("lg_ours")
        theirs_url = scratch.pg_database("lg_theirs").replace("postgresql+psycopg://", "postgresql://")

        async def ours_pg(stack: AsyncExitStack) -> BaseCheckpointSaver[Any]:
            return await stack.enter_async_context(EventStoreSaver.from_url(ours_url))

        async def theirs_pg(stack: AsyncExitStack) -> BaseCheckpointSaver[Any]:
            saver = await stack.enter_async_context(AsyncPostgresSaver.from_conn_string(theirs_url))
            await saver.setup()
            return saver

        subjects["EventStoreSaver, PostgreSQL"] = ours_pg
        subjects["AsyncPostgresSaver"] = theirs_pg
    return subjects


async def throughput(
    scratch: Scratch, *, puts: int, rounds: int, postgres: bool, lists: int, list_limit: int
) -> None:
    steps = agent_checkpoints(puts)
    subjects = throughput_subjects(scratch, postgres)
    names = list(subjects)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    listed: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    async with AsyncExitStack() as stack:
        savers = {name: await opener(stack) for name, opener in subjects.items()}
        for name, saver in savers.items():  # warm-up: connections, prepared statements, caches
            await timed_puts(saver, f"warm-{name}", steps[:50])
        for number in range(rounds):
            order = names[number % len(names) :] + names[: number % len(names)]
            for name in order:
                put_s, get_s = await timed_puts(savers[name], f"round-{number}", steps)
                results[name].append((puts / put_s, puts / get_s))
                if lists:
                    rates = await timed_lists(
                        savers[name], f"round-{number}", steps, calls=lists, limit=list_limit
                    )
                    listed[name].append(rates)
    print(f"\n{puts} checkpoints per round, {rounds} rounds; best round (every round):")
    print(f"  {'subject':<34} {'aput/s':>8} {'aget_tuple/s':>13}")
    for name in names:
        best_put = max(r[0] for r in results[name])
        best_get = max(r[1] for r in results[name])
        every = ", ".join(f"{p:.0f}/{g:.0f}" for p, g in results[name])
        print(f"  {name:<34} {best_put:>8.0f} {best_get:>13.0f}   ({every})")
    if not lists:
        return
    print(
        f"\nalist(limit={list_limit}) pages/s on those threads, {lists} calls of each per round;"
        " best round (every round):"
    )
    print(f"  {'subject':<34}" + "".join(f" {kind:>10}" for kind in LISTS))
    for name in names:
        best = "".join(f" {max(r[kind] for r in listed[name]):>10.0f}" for kind in LISTS)
        every = "; ".join("/".join(f"{r[kind]:.0f}" for kind in LISTS) for r in listed[name])
        print(f"  {name:<34}{best}   ({every})")


# -- 2. size -----------------------------------------------------------------------------


class LoopState(TypedDict):
    document: str
    step: int


def loop_graph(checkpointer: BaseCheckpointSaver[Any], steps: int) -> Any:
    def work(state: LoopState) -> dict[str, int]:
        return {"step": state["step"] + 1}

    graph = StateGraph(LoopState)
    graph.add_node("work", work)
    graph.add_edge(START, "work")
    graph.add_conditional_edges("work", lambda state: END if state["step"] >= steps else "work")
    return graph.compile(checkpointer=checkpointer)


def run_loop(checkpointer: BaseCheckpointSaver[Any], steps: int, state_kb: int) -> float:
    document = ("The customer's full case file, unchanged while the agent works. " * 16)[:1024] * state_kb
    config: Any = {"configurable": {"thread_id": "loop"}, "recursion_limit": steps + 10}
    started = time.perf_counter()
    loop_graph(checkpointer, steps).invoke({"document": document, "step": 0}, config)
    return time.perf_counter() - started


def sqlite_size(path: str) -> int:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in Path(path).parent.glob(Path(path).name + "*"))


def pg_size(url: str, tables: list[str]) -> int:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute("VACUUM")
        row = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r' "
            "AND c.relname = ANY(%s)",
            (tables,),
        ).fetchone()
    return int(row[0]) if row else 0


OURS_TABLES = [
    "flow_events",
    "event_positions",
    "langgraph_checkpoints",
    "langgraph_blobs",
    "langgraph_writes",
    "langgraph_threads",
]
THEIR_PG_TABLES = ["checkpoints", "checkpoint_blobs", "checkpoint_writes", "checkpoint_migrations"]


def sizes(scratch: Scratch, *, steps: int, state_kb: int, postgres: bool) -> None:
    rows = []
    theirs_path = scratch.sqlite_path("size-theirs")
    with SqliteSaver.from_conn_string(theirs_path) as theirs:
        seconds = run_loop(theirs, steps, state_kb)
    rows.append(("SqliteSaver", sqlite_size(theirs_path), seconds))
    ours_path = scratch.sqlite_path("size-ours")
    with EventStoreSaver.from_url(f"sqlite:///{ours_path}") as ours:
        seconds = run_loop(ours, steps, state_kb)
        assert ours.store.verify().ok
    rows.append(("EventStoreSaver, SQLite", sqlite_size(ours_path), seconds))
    if postgres:
        theirs_url = scratch.pg_database("size_theirs").replace("postgresql+psycopg://", "postgresql://")
        with PostgresSaver.from_conn_string(theirs_url) as pg_theirs:
            pg_theirs.setup()
            seconds = run_loop(pg_theirs, steps, state_kb)
        rows.append(("PostgresSaver", pg_size(theirs_url, THEIR_PG_TABLES), seconds))
        ours_url = scratch.pg_database("size_ours")
        with EventStoreSaver.from_url(ours_url) as pg_ours:
            seconds = run_loop(pg_ours, steps, state_kb)
        rows.append(("EventStoreSaver, PostgreSQL", pg_size(ours_url, OURS_TABLES), seconds))
    print(f"\n{steps} supersteps, a {state_kb} KB document that never changes and a counter that does:")
    print(f"  {'subject':<30} {'size':>10} {'per step':>10} {'run':>8}")
    for name, size, seconds in rows:
        print(f"  {name:<30} {size / 2**20:>7.1f} MB {size / steps / 1024:>7.1f} KB {seconds:>7.1f}s")
    print(f"  SQLite: SqliteSaver / EventStoreSaver = {rows[0][1] / rows[1][1]:.1f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--puts", type=int, default=1000, help="checkpoints per round (default 1000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--steps", type=int, default=10_000, help="supersteps of the size run (default 10000)"
    )
    parser.add_argument(
        "--state-kb", type=int, default=32, help="size of the unchanging document (default 32)"
    )
    parser.add_argument(
        "--lists", type=int, default=5, help="alist calls of each kind per round (default 5; 0: none)"
    )
    parser.add_argument("--list-limit", type=int, default=100, help="alist's limit (default 100)")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-size", action="store_true", help="skip the size run")
    parser.add_argument("--no-throughput", action="store_true", help="skip the throughput run")
    parser.add_argument("--scratch-dir", default=None, help="where scratch SQLite files go")
    args = parser.parse_args(argv)
    postgres = not args.no_postgres
    with Scratch(args.pg_url if postgres else None, args.scratch_dir) as scratch:
        if postgres:
            facts = scratch.server_facts()
            print(f"PostgreSQL {facts['version']}, synchronous_commit={facts['synchronous_commit']}")
        print(f"SQLite {sqlite3.sqlite_version}")
        if not args.no_throughput:
            asyncio.run(
                throughput(
                    scratch,
                    puts=args.puts,
                    rounds=args.rounds,
                    postgres=postgres,
                    lists=args.lists,
                    list_limit=args.list_limit,
                )
            )
        if not args.no_size:
            sizes(scratch, steps=args.steps, state_kb=args.state_kb, postgres=postgres)


if __name__ == "__main__":
    main()
