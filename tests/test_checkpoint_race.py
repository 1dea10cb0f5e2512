"""Checkpoint takers racing: exactly one of them says it signed the checkpoint it stored."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier

from eventstore import EventStore, NewEvent
from eventstore import checkpoints as cp

from .checkpoint_workers import checkpoint_by_cli
from .conftest import Target
from .workers import BARRIER_TIMEOUT, SPAWN, Children

KEY = cp.generate_key()
TAKERS = 4


def grow(store: EventStore, flow: str, count: int) -> None:
    for start in range(0, count, 100):
        store.append(flow, [NewEvent("Step", {"n": n}) for n in range(start, start + 100)])


def test_of_threads_racing_only_the_one_that_stored_it_reports_new(target: Target) -> None:
    with target.open() as store:
        for flow in ("a", "b"):
            grow(store, flow, 600)
            start = Barrier(TAKERS)

            def take(_: int, start: Barrier = start) -> cp.Checkpoint:
                with target.open() as own:
                    start.wait(BARRIER_TIMEOUT)
                    return cp.take_checkpoint(own, KEY)

            with ThreadPoolExecutor(TAKERS) as pool:
                taken = list(pool.map(take, range(TAKERS)))
            assert [c.new for c in taken].count(True) == 1
            assert {c.tree_size for c in taken} == {store.last_position()}
        assert len(cp.list_checkpoints(store)) == 2


def test_of_cli_processes_racing_only_the_one_that_stored_it_says_new(target: Target, tmp_path: Path) -> None:
    key = tmp_path / "log.pem"
    cp.save_key_pair(KEY, key)
    with target.open() as store:
        grow(store, "a", 2000)
        start = SPAWN.Barrier(TAKERS)
        with Children() as children:
            for _ in range(TAKERS):
                children.start(checkpoint_by_cli, target.url, target.options, str(key), start)
            answers = children.results()
        assert [answer["new"] for answer in answers].count(True) == 1
        assert {answer["tree_size"] for answer in answers} == {2000}
        assert len(cp.list_checkpoints(store)) == 1
