"""A CatchUpRunner SIGKILLed mid-batch resumes from its checkpoint: every event applied exactly once.

Each round appends more events, then a child runs the runner in small
batches and is killed at a random moment. After every kill the counting
projection must hold exactly the events up to the checkpoint's position,
each applied once; at the end a runner that finishes must leave it equal
to a from-scratch fold of the whole log.
"""

from __future__ import annotations

import random

import pytest

from eventstore import NewEvent, utc_now
from projections import CatchUpRunner
from projections.checkpoints import REBUILD_LEASE

from . import kill_workers
from .conftest import Target
from .kill_workers import AppliedOnce, applied_counts, kill_during

EVENTS_PER_ROUND = 600
BATCH = 20
LATEST_KILL = 0.5  # seconds; a round's catch-up takes about that on SQLite


def kill_rounds(target: Target, rounds: int) -> None:
    rng = random.Random()
    with target.open() as store:
        runner = CatchUpRunner(store, AppliedOnce(), batch_size=BATCH)  # tables made on an empty log
        cut = 0
        for k in range(rounds):
            for start in range(0, EVENTS_PER_ROUND, 200):
                store.append(f"flow-{k}-{start}", [NewEvent("Counted", {"n": n}) for n in range(200)])
            delay = 0.0 if k == 0 else rng.uniform(0.0, LATEST_KILL)
            cut += not kill_during(kill_workers.catch_up, (target.url, target.options, BATCH), delay)
            position = runner.position()
            counts = applied_counts(store, runner.projection)
            assert counts == dict.fromkeys(range(1, position + 1), 1), f"round {k}, killed after {delay} s"
        assert cut, "no kill landed before the runner caught up: the test proves nothing"
        assert runner.run_until_caught_up() == store.last_position() - position
        assert runner.position() == store.last_position()
        assert applied_counts(store, runner.projection) == dict.fromkeys(
            range(1, store.last_position() + 1), 1
        )


@pytest.mark.parametrize("rounds", [4, pytest.param(20, marks=pytest.mark.slow)])
def test_a_killed_runner_applies_every_event_exactly_once(target: Target, rounds: int) -> None:
    kill_rounds(target, rounds)


def test_a_runner_killed_while_building_its_tables_is_built_by_the_next(target: Target) -> None:
    """The first runner on a log with events rebuilds the projection; killed, the next one does it.

    The next runner's clock is past the killed build's lease (test_rebuild_takeover.py
    takes the claim over while it runs).
    """
    with target.open() as store:
        for start in range(0, 2000, 200):
            store.append(f"flow-{start}", [NewEvent("Counted", {"n": n}) for n in range(200)])
    for delay in (0.0, random.uniform(0.0, LATEST_KILL)):
        kill_during(kill_workers.catch_up_from_scratch, (target.url, target.options, BATCH), delay)
    later = utc_now() + REBUILD_LEASE * 2
    with target.open(clock=lambda: later) as store:
        runner = CatchUpRunner(store, AppliedOnce(), batch_size=BATCH)
        runner.run_until_caught_up()
        assert runner.position() == store.last_position() == 2000
        assert applied_counts(store, runner.projection) == dict.fromkeys(range(1, 2001), 1)
