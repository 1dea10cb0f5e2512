"""Timing: warm up, size the run from the warm-up rate, then time it with perf_counter.

Inputs are prepared before the clock starts; only the subject's ``apply``
(one append each) or a full ``read_all`` is timed. Nothing here asserts on
a timing: the figures are printed and that is all.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from .workload import WRITER_FLOWS, WRITER_STRIDE, Planner, Step, fill_plan, make_samples

WRITER_FLOW_COUNT = 10


class Subject(Protocol):
    label: str

    def prepare(self, steps: Iterable[Step]) -> list[Any]: ...
    def apply(self, op: Any) -> None: ...
    def fill(self, steps: Iterable[Step]) -> None: ...
    def read_all(self, limit: int | None = None) -> int: ...
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Figure:
    """A measured rate: ``events`` in ``seconds``."""

    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def measure_appends(
    subjects: dict[str, Subject],
    planners: dict[str, Planner],
    *,
    size: int,
    seconds: float,
    warmup: float,
    rounds: int,
    log: Callable[[str, str, list[Figure]], None],
) -> dict[str, Figure]:
    """Appends of ``size`` events, each subject in turn for ``rounds`` rounds of about ``seconds``.

    Interleaving the subjects spreads any background load over all of them;
    each subject's figure is its best round, its other rounds are logged.
    """
    rates = {key: _warm_up(subject, planners[key], warmup) for key, subject in subjects.items()}
    keys = list(subjects)
    measured: dict[str, list[Figure]] = {key: [] for key in keys}
    for turn in range(rounds):
        for key in keys[turn % len(keys) :] + keys[: turn % len(keys)]:
            count = max(10, round(rates[key] * seconds))
            ops = subjects[key].prepare(planners[key].take(count))
            measured[key].append(Figure(count * size, _run(subjects[key].apply, ops)))
    for key in keys:
        log(key, subjects[key].label, measured[key])
    return {key: max(figures, key=lambda f: f.rate) for key, figures in measured.items()}


def _warm_up(subject: Subject, planner: Planner, warmup: float) -> float:
    """Run appends for about ``warmup`` seconds; their rate, in appends per second."""
    ops_done, spent, chunk = 0, 0.0, 4
    while spent < warmup or ops_done < 8:
        ops = subject.prepare(planner.take(chunk))
        spent += _run(subject.apply, ops)
        ops_done += chunk
        chunk = min(chunk * 2, 2000)
    return ops_done / spent


def _run(apply: Callable[[Any], None], ops: list[Any]) -> float:
    start = time.perf_counter()
    for op in ops:
        apply(op)
    return time.perf_counter() - start


def measure_fill(subject: Subject, total: int) -> Figure:
    start = time.perf_counter()
    subject.fill(fill_plan(make_samples(), total))
    return Figure(total, time.perf_counter() - start)


def measure_read(subject: Subject, total: int) -> Figure:
    """One full ``read_all`` pass, after reading the first 2% as a warm-up."""
    subject.read_all(limit=max(1000, total // 50))
    start = time.perf_counter()
    count = subject.read_all()
    elapsed = time.perf_counter() - start
    if count != total:
        raise RuntimeError(f"{subject.label} read {count} events, expected {total}")
    return Figure(count, elapsed)


Opener = Callable[[str, int], Subject]


def measure_writers(opener: Opener, target: str, *, writers: int, seconds: float, cap: int) -> Figure:
    """``writers`` processes, each appending single events to its own flows for ``seconds``.

    Each prepares up to ``cap`` appends and warms up before a shared start;
    the figure is all their events over the longest writer's time.
    """
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(writers + 1)
    results = context.Queue()
    procs = [
        context.Process(target=_writer, args=(opener, target, w, seconds, cap, barrier, results))
        for w in range(writers)
    ]
    for proc in procs:
        proc.start()
    try:
        barrier.wait(timeout=300)
        outcomes = [results.get(timeout=seconds + 300) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=60)
    failures = [o for o in outcomes if isinstance(o, str)]
    if failures:
        raise RuntimeError(f"a writer failed: {failures[0]}")
    counts = [o[0] for o in outcomes]
    if any(o[0] >= cap for o in outcomes):
        print(f"    note: a writer used all {cap} prepared appends before the time was up", flush=True)
    return Figure(sum(counts), max(o[1] for o in outcomes))


def _writer(
    opener: Opener, target: str, worker: int, seconds: float, cap: int, barrier: Any, results: Any
) -> None:
    try:
        subject = opener(target, worker)
        planner = Planner(
            make_samples(), first_flow=WRITER_FLOWS + worker * WRITER_STRIDE, flows=WRITER_FLOW_COUNT, size=1
        )
        for op in subject.prepare(planner.take(20)):
            subject.apply(op)
        ops = subject.prepare(planner.take(cap))
    except BaseException as exc:
        barrier.abort()
        results.put(f"{type(exc).__name__}: {exc}")
        raise
    barrier.wait(timeout=300)
    apply = subject.apply
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    try:
        for op in ops:
            apply(op)
            done += 1
            if time.perf_counter() >= deadline:
                break
        results.put((done, time.perf_counter() - start))
    except BaseException as exc:
        results.put(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        subject.close()


def on_both_backends(
    name: str, measure: Callable[[Any, str], dict[str, float]], pg_url: str | None
) -> dict[str, dict[str, float]]:
    """``measure(store, label)`` on a scratch SQLite file, then (unless ``pg_url`` is None) PostgreSQL."""
    from eventstore import EventStore

    from .scratch import Scratch

    results: dict[str, dict[str, float]] = {}
    with Scratch(pg_url, None) as scratch:
        with EventStore.open(f"sqlite:///{scratch.sqlite_path(name)}") as store:
            results["SQLite"] = measure(store, "sqlite")
        if pg_url is not None:
            with EventStore.open(scratch.pg_database(name), create=True) as store:
                results["PostgreSQL"] = measure(store, "postgresql")
    return results


def print_table(
    results: dict[str, dict[str, float]], rows: list[tuple[str, str, str]], *, label: int, column: int
) -> None:
    """One line per (title, key, format) row, one column per backend."""
    names = list(results)
    print(f"{'':{label}}" + "".join(f"{n:>{column}}" for n in names))
    for title, key, fmt in rows:
        print(f"{title:{label}}" + "".join(f"{fmt.format(results[n][key]):>{column}}" for n in names))
