"""How fast could a PostgreSQL put be? EventStoreSaver's own statements, replayed with no Python around them.

    PYTHONPATH=. python benchmarks/langgraph_floor.py [--puts 1500] [--pg-url postgresql://root@127.0.0.1:5432/test]

1. ``EventStoreSaver.put`` saves ``--puts`` checkpoints of the agent thread of
   ``benchmarks/langgraph.py`` (after 50 to warm up); every statement it sends
   is recorded at the driver.
2. The recorded statements are replayed in order on a raw psycopg connection,
   each on a copy of the database as it was before those puts: as recorded;
   without the thread row's upsert; the log's append alone; and as recorded
   with ``synchronous_commit=off`` (what the commit's WAL flush costs).
3. ``PostgresSaver.put`` saves the same checkpoints on a database of its own.

Everything is synchronous, on one connection, in microseconds per put; the
replays run in two rounds (each half of the puts), so compare within a run.
Figures are printed, never asserted on.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # as a script: the checkout importable, this file not taken for langgraph
    _here = Path(__file__).resolve().parent
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

import psycopg
from langgraph.checkpoint.postgres import PostgresSaver

from benchmarks.langgraph import DEFAULT_PG_URL, Step, agent_checkpoints
from benchmarks.scratch import Scratch
from eventstore.integrations.langgraph import EventStoreSaver

WARM_UP = 50
Recorded = list[tuple[Any, Any]]  # (query, params) as the saver sent them


def _fused(query: Any) -> str | None:
    text = str(query)
    return text if "appended AS" in text else None


def _without_thread(query: Any) -> Any:
    text = _fused(query)
    return query if text is None else text[: text.index(", p0_thread AS")] + "\nSELECT position FROM appended"


def _append_only(query: Any) -> Any:
    text = _fused(query)
    return query if text is None else text[: text.index(", p0_saved AS")] + "\nSELECT position FROM appended"


VARIANTS: dict[str, tuple[Callable[[Any], Any], str | None]] = {
    "replayed as recorded": (lambda query: query, None),
    "  without the thread row upsert": (_without_thread, None),
    "  the log append alone": (_append_only, None),
    "  as recorded, synchronous_commit=off": (lambda query: query, "SET synchronous_commit = off"),
}
"""Replays: how each statement is rewritten, and a setting for the session first."""


def warm_up(url: str, steps: list[Step]) -> Any:
    """Save the first checkpoints (a thread that exists, tables that are warm); the config to go on from."""
    config: Any = {"configurable": {"thread_id": "floor", "checkpoint_ns": ""}}
    with EventStoreSaver.from_url(url) as saver:
        for checkpoint, metadata, versions in steps[:WARM_UP]:
            config = saver.put(config, checkpoint, metadata, versions)
    return config


def record_puts(url: str, steps: list[Step], config: Any) -> tuple[float, Recorded]:
    """Microseconds per ``EventStoreSaver.put`` of the steps after the warm-up, and what they sent."""
    recorded: Recorded = []
    execute = psycopg.Cursor.execute

    def recording(cursor: Any, query: Any, params: Any = None, **options: Any) -> Any:
        recorded.append((query, params))
        return execute(cursor, query, params, **options)

    with EventStoreSaver.from_url(url) as saver:
        psycopg.Cursor.execute = recording  # type: ignore[method-assign]
        try:
            started = time.perf_counter()
            for checkpoint, metadata, versions in steps[WARM_UP:]:
                config = saver.put(config, checkpoint, metadata, versions)
            seconds = time.perf_counter() - started
        finally:
            psycopg.Cursor.execute = execute  # type: ignore[method-assign]
    return seconds / (len(steps) - WARM_UP) * 1e6, recorded


def replay(url: str, statements: Recorded, rewrite: Callable[[Any], Any], setting: str | None) -> float:
    """Seconds to run ``statements`` (rewritten) in order on raw psycopg, autocommit."""
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        if setting is not None:
            conn.execute(setting)
        cursor = conn.cursor()
        started = time.perf_counter()
        for query, params in statements:
            cursor.execute(rewrite(query), params)
            if cursor.description is not None:
                cursor.fetchall()
        return time.perf_counter() - started


def theirs(url: str, steps: list[Step]) -> float:
    """Microseconds per ``PostgresSaver.put`` of the same checkpoints."""
    config: Any = {"configurable": {"thread_id": "floor", "checkpoint_ns": ""}}
    with PostgresSaver.from_conn_string(url.replace("postgresql+psycopg://", "postgresql://")) as saver:
        saver.setup()
        for checkpoint, metadata, versions in steps[:WARM_UP]:
            config = saver.put(config, checkpoint, metadata, versions)
        started = time.perf_counter()
        for checkpoint, metadata, versions in steps[WARM_UP:]:
            config = saver.put(config, checkpoint, metadata, versions)
        return (time.perf_counter() - started) / (len(steps) - WARM_UP) * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--puts", type=int, default=1500)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    args = parser.parse_args(argv)
    steps = agent_checkpoints(args.puts + WARM_UP)
    with Scratch(args.pg_url, None) as scratch:
        facts = scratch.server_facts()
        print(f"PostgreSQL {facts['version']}, synchronous_commit={facts['synchronous_commit']}")
        ours_url = scratch.pg_database("floor_ours")
        config = warm_up(ours_url, steps)
        copies = {
            name: scratch.pg_database(f"floor_{n}", template=ours_url) for n, name in enumerate(VARIANTS)
        }
        ours, statements = record_puts(ours_url, steps, config)
        halves = (statements[: len(statements) // 2], statements[len(statements) // 2 :])
        rounds: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for half in halves:
            for name, (rewrite, setting) in VARIANTS.items():
                seconds = replay(copies[name], half, rewrite, setting)
                rounds[name].append(seconds / (args.puts / 2) * 1e6)
        peer = theirs(scratch.pg_database("floor_theirs"), steps)
    print(f"\n{args.puts} puts after {WARM_UP} to warm up; microseconds per put (sync, one connection):")
    print(f"  {'EventStoreSaver.put':<40} {ours:>7.0f}")
    for name, figures in rounds.items():
        print(f"  {name:<40} {min(figures):>7.0f}   ({' / '.join(f'{f:.0f}' for f in figures)})")
    print(f"  {'PostgresSaver.put':<40} {peer:>7.0f}")


if __name__ == "__main__":
    main()
