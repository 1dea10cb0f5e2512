"""Benchmark eventstore against the eventsourcing library's recorders and raw drivers.

    python3 dev.py bench                      # the full run (about 10 minutes on 2 cores)
    python3 dev.py bench --quick              # every workload ~20x smaller: a smoke run
    PYTHONPATH=. python benchmarks/run.py --events 200000 --no-postgres

Workloads, on SQLite (file, WAL, synchronous=NORMAL) and PostgreSQL:
single-event appends with an explicit expected revision (10 flows round-robin,
one transaction each); 100-event batch appends; read_all with decoding over
a store of --events events; on PostgreSQL, --writers processes appending
single events to their own flows. Figures are printed, never asserted on.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import report
from benchmarks.esrecorders import Recorders
from benchmarks.harness import Figure, Subject, measure_appends, measure_fill, measure_read, measure_writers
from benchmarks.ours import Ours, create_schema
from benchmarks.raw import RawPostgres, RawSQLite
from benchmarks.scratch import Scratch
from benchmarks.workload import BATCH_FLOWS, FLOWS_PER_WORKLOAD, SINGLE_FLOWS, Planner, make_samples

DEFAULT_PG_URL = "postgresql://root@127.0.0.1:5432/test"
QUICK_FACTOR = 20


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    events = args.events // QUICK_FACTOR if args.quick else args.events
    seconds = max(0.2, args.seconds / QUICK_FACTOR) if args.quick else args.seconds
    warmup = max(0.1, seconds / 6)
    pg_url = None if args.no_postgres else args.pg_url
    results: report.Results = {}
    with Scratch(pg_url, args.dir) as scratch:
        headings = {"sqlite": f"SQLite {sqlite3.sqlite_version} (file, WAL, synchronous=NORMAL)"}
        facts = [
            f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {_memory()}",
            f"sqlalchemy {version('sqlalchemy')}, eventsourcing {version('eventsourcing')}, "
            f"psycopg {version('psycopg')}, orjson {version('orjson')}",
        ]
        if pg_url is not None:
            pg = scratch.server_facts()
            durability = f"synchronous_commit={pg['synchronous_commit']}, fsync={pg['fsync']}"
            headings["postgresql"] = f"PostgreSQL {pg['version']} ({durability})"
        print("\n".join(facts), flush=True)
        print(
            f"{events:,} events to read; appends: best of {args.rounds} interleaved rounds "
            f"of about {seconds:g} s; {args.writers} writers for {seconds:g} s\n",
            flush=True,
        )

        bench = Bench(
            results, seconds=seconds, warmup=warmup, rounds=args.rounds, events=events, writers=args.writers
        )
        bench.backend(
            "sqlite",
            scratch.sqlite_path,
            [
                ("ours", Ours.open, None),
                ("es", Recorders.open, None),
                ("raw", RawSQLite.open, None),
            ],
        )
        if pg_url is not None:
            bench.backend(
                "postgresql",
                scratch.pg_database,
                [
                    ("ours", Ours.open, Ours.writer),
                    ("es", Recorders.open, Recorders.writer),
                    ("raw", RawPostgres.open, RawPostgres.writer),
                ],
            )

    print(
        report.render(
            results,
            titles=report.workload_titles(events, args.writers),
            headings=headings,
            raw_names={"sqlite": "raw sqlite3", "postgresql": "raw psycopg"},
        )
    )
    return 0


class Bench:
    """Runs every workload for every subject of one backend, and files the figures."""

    def __init__(
        self,
        results: report.Results,
        *,
        seconds: float,
        warmup: float,
        rounds: int,
        events: int,
        writers: int,
    ) -> None:
        self.results = results
        self.rounds = rounds
        self.seconds = seconds
        self.warmup = warmup
        self.events = events
        self.writers = writers
        self.samples = make_samples()

    def backend(
        self,
        name: str,
        new_target: Callable[[str], str],
        subjects: list[tuple[str, Callable[[str], Subject], Callable[..., Subject] | None]],
    ) -> None:
        figures = self.results.setdefault(name, {})
        # Write stores for the append workloads, all open at once so the rounds can interleave.
        targets = {key: self._store(name, key, "w", new_target) for key, _opener, _writer in subjects}
        opened = {key: opener(targets[key]) for key, opener, _writer in subjects}
        try:
            for workload, first_flow, size in (("single", SINGLE_FLOWS, 1), ("batch", BATCH_FLOWS, 100)):
                planners = {
                    key: Planner(self.samples, first_flow=first_flow, flows=FLOWS_PER_WORKLOAD, size=size)
                    for key in opened
                }
                figures[workload] = measure_appends(
                    opened,
                    planners,
                    size=size,
                    seconds=self.seconds,
                    warmup=self.warmup,
                    rounds=self.rounds,
                    log=lambda key, label, measured, w=workload: _log(name, label, w, measured),
                )
        finally:
            for subject in opened.values():
                subject.close()
        for key, _opener, writer in subjects:
            if writer is not None:
                cap = int(figures["single"][key].rate * self.seconds * 2) + 200
                figure = measure_writers(
                    writer, targets[key], writers=self.writers, seconds=self.seconds, cap=cap
                )
                figures.setdefault("writers", {})[key] = figure
                _log(name, opened[key].label, "writers", [figure])
        # Read stores holding exactly `events` events, one subject at a time.
        for key, opener, _writer in subjects:
            subject = opener(self._store(name, key, "r", new_target))
            try:
                fill = measure_fill(subject, self.events)
                _log(name, subject.label, "bulk load (not compared)", [fill])
                figures.setdefault("read", {})[key] = figure = measure_read(subject, self.events)
                _log(name, subject.label, "read", [figure])
            finally:
                subject.close()

    @staticmethod
    def _store(backend: str, key: str, use: str, new_target: Callable[[str], str]) -> str:
        target = new_target(f"{backend[:2]}_{key}_{use}")
        if key == "raw":  # the raw drivers insert into eventstore's own tables
            create_schema(target)
        return target


def _log(backend: str, label: str, workload: str, figures: list[Figure]) -> None:
    rates = [f.rate for f in figures]
    rounds = f"  (rounds: {', '.join(f'{r:,.0f}' for r in rates)})" if len(rates) > 1 else ""
    print(f"  {backend:<10} {label:<14} {workload:<26} {max(rates):>12,.0f} events/s{rounds}", flush=True)


def _memory() -> str:
    try:
        with open("/proc/meminfo") as meminfo:
            kib = int(meminfo.readline().split()[1])
    except (OSError, ValueError, IndexError):
        return "memory unknown"
    return f"{kib / 2**20:.0f} GiB RAM"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--events", type=int, default=1_000_000, help="events in the read stores (default 1,000,000)"
    )
    parser.add_argument("--quick", action="store_true", help=f"scale every workload down {QUICK_FACTOR}x")
    parser.add_argument(
        "--seconds", type=float, default=1.5, help="timed seconds per round of an append workload"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds per append workload; the best is reported"
    )
    parser.add_argument("--writers", type=int, default=8, help="concurrent writer processes on PostgreSQL")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("EVENTSTORE_BENCH_PG_URL", DEFAULT_PG_URL),
        help="an existing database to connect to; scratch databases are created beside it",
    )
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument(
        "--dir", default=None, help="where to put the scratch SQLite files (default: a temp dir)"
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
