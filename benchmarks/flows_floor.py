"""How fast could a FlowService command be on SQLite? Its own statements, replayed with no Python around them.

    PYTHONPATH=. python benchmarks/flows_floor.py [--flows 150]

1. ``FlowService`` drives ``--flows`` whole flows of ``benchmarks/flows.py``
   (34 commands each) on a SQLite file (WAL, ``synchronous=NORMAL``); every
   statement the writer connection runs is recorded with its parameters.
2. The recorded statements (BEGIN IMMEDIATE and the commits included) are
   replayed in order, each prepared once, on a plain ``sqlite3`` connection
   to a copy of the file as it was before those flows: as recorded, and
   without one feature a command pays for at a time (the log's type index,
   the gapless position counter, the sessions read model), then without
   all three.
3. The baseline of ``benchmarks/flows.py`` (row updates with a revision
   check and an audit row, hand-written on ``sqlite3``) drives the same
   flows on a file of its own.

Microseconds per command, best of the rounds (each round a new set of
flows); compare within a run. Figures are printed, never asserted on.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.flows import COMMANDS_PER_FLOW, Baseline, Ours, flow_commands
from benchmarks.scratch import Scratch

Call = tuple[str, str, Any]  # method (execute, executemany, commit), SQL, parameters


class _Recording:
    """A sqlite3 connection (or cursor) that notes each statement and its parameters, then runs it."""

    def __init__(self, target: Any, calls: list[Call]) -> None:
        self._target, self._calls = target, calls

    def execute(self, sql: str, parameters: Any = ()) -> Any:
        self._calls.append(("execute", sql, parameters))
        return _Recording(self._target.execute(sql, parameters), self._calls)

    def executemany(self, sql: str, rows: Any) -> Any:
        rows = list(rows)
        self._calls.append(("executemany", sql, rows))
        return _Recording(self._target.executemany(sql, rows), self._calls)

    def cursor(self) -> Any:
        return _Recording(self._target.cursor(), self._calls)

    def commit(self) -> None:
        self._calls.append(("commit", "", None))
        self._target.commit()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._target)


@contextmanager
def recording(store: Any, calls: list[Call]) -> Iterator[None]:
    """Note every statement the store's SQLite writer runs (a private attribute: this is a diagnostic)."""
    fairy = store._backend._writer.connection
    record, raw = fairy._connection_record, fairy.dbapi_connection
    fairy.dbapi_connection = record.dbapi_connection = _Recording(raw, calls)  # driver_connection reads both
    try:
        yield
    finally:
        fairy.dbapi_connection = record.dbapi_connection = raw


Variant = tuple[tuple[str, ...], tuple[str, ...]]  # DDL run on the copy first, statements left out
VARIANTS: dict[str, Variant] = {
    "replayed statements": ((), ()),
    "  without the type index": (("DROP INDEX ix_flow_events_type_position",), ()),
    "  without the position counter": ((), ("UPDATE event_positions",)),
    "  without the sessions row": ((), ("INSERT INTO sessions",)),
    "  without all three": (
        ("DROP INDEX ix_flow_events_type_position",),
        ("UPDATE event_positions", "INSERT INTO sessions"),
    ),
}
"""What each replay changes: the features a command pays for, one at a time."""


def replay(path: str, calls: list[Call], variant: Variant = ((), ())) -> float:
    """Seconds to run ``calls`` in order on a plain connection to ``path``, statements prepared once."""
    ddl, skipped = variant
    conn = sqlite3.connect(path, isolation_level=None, cached_statements=512)
    try:
        conn.execute("PRAGMA synchronous = NORMAL")
        for statement in ddl:
            conn.execute(statement)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        started = time.perf_counter()
        for method, sql, parameters in calls:
            if skipped and sql.startswith(skipped):
                continue
            if method == "execute":
                conn.execute(sql, parameters).fetchall()
            elif method == "executemany":
                conn.executemany(sql, parameters)
            else:
                conn.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--flows", type=int, default=150, help="flows per round (default 150)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    commands = args.flows * COMMANDS_PER_FLOW
    figures: dict[str, list[float]] = {"FlowService": [], **{name: [] for name in VARIANTS}, "baseline": []}
    with Scratch(None, None) as scratch:
        ours_path = scratch.sqlite_path("ours")
        copies = {name: scratch.sqlite_path(f"replay-{n}") for n, name in enumerate(VARIANTS)}
        ours, baseline = Ours(ours_path), Baseline(scratch.sqlite_path("baseline"))
        numbers = iter(range(10**6))
        for subject, prefix in ((ours, "warm"), (baseline, "warm")):
            for op in subject.prepare([c for _ in range(2) for c in flow_commands(next(numbers), prefix)]):
                subject.apply(op)
        try:
            for _ in range(args.rounds):
                number = next(numbers)
                flows = [c for n in range(args.flows) for c in flow_commands(number * 1000 + n, "floor")]
                ours.store._backend._writer.connection.dbapi_connection.execute(
                    "PRAGMA wal_checkpoint(TRUNCATE)"
                )
                for copy in copies.values():  # the file as it is before this round's flows
                    for suffix in ("", "-wal", "-shm"):
                        if Path(ours_path + suffix).exists():
                            shutil.copyfile(ours_path + suffix, copy + suffix)
                calls: list[Call] = []
                ops = ours.prepare(flows)
                with recording(ours.store, calls):
                    started = time.perf_counter()
                    for op in ops:
                        ours.apply(op)
                    figures["FlowService"].append(time.perf_counter() - started)
                for name, variant in VARIANTS.items():
                    figures[name].append(replay(copies[name], calls, variant))
                base_ops = baseline.prepare(flows)
                started = time.perf_counter()
                for op in base_ops:
                    baseline.apply(op)
                figures["baseline"].append(time.perf_counter() - started)
        finally:
            ours.close()
            baseline.close()
    base = min(figures["baseline"])
    print(f"\nSQLite {sqlite3.sqlite_version}, {args.flows} flows x {COMMANDS_PER_FLOW} commands per round")
    print(f"  {'':<34} {'us/command':>10} {'baseline/this':>14}   rounds")
    for name, seconds in figures.items():
        best = min(seconds)
        rounds = " / ".join(f"{s / commands * 1e6:.0f}" for s in seconds)
        print(f"  {name:<34} {best / commands * 1e6:>10.0f} {base / best:>13.2f}x   ({rounds})")


if __name__ == "__main__":
    main()
