"""Appends with ``ANY`` to one flow under contention: a lost race waits a little and tries again.

On PostgreSQL two appends that read the same head race for the next
revision and one of them loses; the store retries it after a short, random,
growing wait, for a time budget, so every writer gets through. SQLite's
writers take turns on the write lock and never race.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from eventstore import ConcurrencyError, EventStore, NewEvent, RevisionMismatch, retry
from eventstore.backends.base import Raced

from . import workers
from .conftest import Target
from .workers import SPAWN, Children

PROCESSES, APPENDS = 12, 30


def test_processes_appending_to_one_flow_with_any_all_get_through(target: Target) -> None:
    start = SPAWN.Barrier(PROCESSES)
    with target.open() as store, Children() as children:
        for p in range(PROCESSES):
            children.start(workers.append_any, target.url, target.options, f"p{p}", "hot", start, APPENDS)
        results = children.results()
        log = list(store.read_flow("hot"))
        assert [e.revision for e in log] == list(range(1, PROCESSES * APPENDS + 1))
        written = [event_id for appended in results for r in appended for event_id in r.event_ids]
        assert len(set(written)) == len(written) == PROCESSES * APPENDS
        assert sorted(e.event_id for e in log) == sorted(written)
        for appended in results:  # each writer's appends land in the order it made them
            assert [r.revision for r in appended] == sorted(r.revision for r in appended)
        assert store.verify().ok


class TestLostRaces:
    """The back-off itself, with the races staged and the waits recorded instead of slept."""

    @pytest.fixture
    def waits(self, monkeypatch: pytest.MonkeyPatch) -> list[float]:
        recorded: list[float] = []
        monkeypatch.setattr(retry, "pause", recorded.append)
        return recorded

    @staticmethod
    def lose(store: EventStore, monkeypatch: pytest.MonkeyPatch, races: float) -> None:
        """Make the store's next ``races`` appends lose their race."""
        real = store._backend.append_alone
        lost = 0

        def racing(batch: Any, clock: Any) -> Any:
            nonlocal lost
            if lost < races:
                lost += 1
                raise Raced(batch.flow_id, 0, 1)
            return real(batch, clock)

        monkeypatch.setattr(store._backend, "append_alone", racing)

    def test_more_races_lost_than_the_old_twenty_still_append(
        self, store: EventStore, monkeypatch: pytest.MonkeyPatch, waits: list[float]
    ) -> None:
        self.lose(store, monkeypatch, races=30)
        assert store.append("f", [NewEvent("A", {})]).revision == 1
        assert len(waits) == 30
        assert waits[0] <= retry.FIRST_WAIT
        assert all(0 <= wait <= retry.LONGEST_WAIT for wait in waits)
        assert len(set(waits)) == len(waits), "the waits are drawn at random"

    @pytest.mark.parametrize("clock", ["ticking", "frozen"])
    def test_a_flow_that_never_stops_changing_ends_in_concurrency_error(
        self, target: Target, monkeypatch: pytest.MonkeyPatch, waits: list[float], clock: str
    ) -> None:
        with target.open(clock=_clock(seconds_per_call=1 if clock == "ticking" else 0)) as store:
            self.lose(store, monkeypatch, races=float("inf"))
            with pytest.raises(ConcurrencyError, match=r"'f' kept changing: \d+ append attempts") as caught:
                store.append("f", [NewEvent("A", {})])
        assert isinstance(caught.value.__cause__, RevisionMismatch)
        budget = retry.RACE_BUDGET
        if clock == "ticking":  # the budget is kept on the store's clock ...
            assert 0 < len(waits) <= budget and sum(waits) < budget
        else:  # ... or, should that stand still, on the waits themselves
            assert sum(waits[:-1]) < budget <= sum(waits)


def _clock(*, seconds_per_call: float) -> Callable[[], datetime]:
    now = datetime(2030, 1, 1, tzinfo=UTC)

    def clock() -> datetime:
        nonlocal now
        now += timedelta(seconds=seconds_per_call)
        return now

    return clock
