"""Many writers at once, in threads and in processes, against a real database.

Positions are handed out in commit order from one counter, so a reader that
resumes after the last position it saw sees every event exactly once and
never finds a gap; expected revisions make read-then-append safe.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from uuid import UUID

import pytest

from eventstore import AppendResult, EventStore, NewEvent, RecordedEvent, RevisionMismatch

from . import workers
from .conftest import Target
from .workers import SPAWN, Children

SHARED_FLOWS = ["shared-0", "shared-1", "shared-2"]


def tail_while_writing(store: EventStore, children: Children) -> list[RecordedEvent]:
    """Poll ``read_all`` after the last position seen until every child is done and read."""
    seen: list[RecordedEvent] = []
    finished = False
    while not finished:
        finished = children.wait(timeout=0.02)  # checked before the read, so the last read is complete
        for event in store.read_all(after_position=seen[-1].position if seen else 0):
            assert not seen or event.position > seen[-1].position
            seen.append(event)
    return seen


def where_written(results: Iterable[AppendResult]) -> dict[int, tuple[str, UUID]]:
    """Position -> (flow, event id), as the writers' AppendResults report them."""
    return {
        position: (result.flow_id, event_id)
        for result in results
        for position, event_id in zip(result.positions, result.event_ids, strict=True)
    }


def assert_each_flow_is_contiguous(seen: list[RecordedEvent]) -> None:
    revisions: dict[str, list[int]] = defaultdict(list)
    for event in seen:
        revisions[event.flow_id].append(event.revision)
    for flow, found in revisions.items():
        assert found == list(range(1, len(found) + 1)), flow


class TestConcurrentWriters:
    @pytest.mark.parametrize("appends", [60, pytest.param(600, marks=pytest.mark.slow)])
    def test_a_tailing_reader_sees_every_event_once_in_order(self, target: Target, appends: int) -> None:
        start = SPAWN.Barrier(3)
        with target.open() as store, Children() as children:
            for p in range(3):
                children.start(
                    workers.write_mixed, target.url, target.options, f"p{p}", start, appends, SHARED_FLOWS, 2
                )
            seen = tail_while_writing(store, children)
            by_position = where_written(r for results in children.results() for r in results)
            assert [e.position for e in seen] == list(range(1, len(by_position) + 1))
            assert {e.position: (e.flow_id, e.event_id) for e in seen} == by_position
            assert_each_flow_is_contiguous(seen)
            assert store.last_position() == len(seen)
            assert store.verify().ok

    def test_read_then_append_with_expected_revision_loses_no_update(self, target: Target) -> None:
        outcomes = self._race(target, processes=3, rounds=40, lockstep=False)
        won = [(read, got) for read, got in outcomes if got is not None]
        assert [(read, got) for read, got in won if got != read + 1] == [], "wins over unread revisions"
        assert sorted(got for _, got in won) == list(range(1, len(won) + 1))
        taken = {got for _, got in won}
        assert [read for read, got in outcomes if got is None and read + 1 not in taken] == [], (
            "each loss lost to a win of the revision it wanted"
        )

    def test_in_lockstep_exactly_one_process_wins_each_round(self, target: Target) -> None:
        outcomes = self._race(target, processes=3, rounds=20, lockstep=True)
        assert sorted(outcomes, key=lambda o: (o[0], o[1] is None)) == [
            outcome for read in range(20) for outcome in [(read, read + 1), (read, None), (read, None)]
        ]

    @staticmethod
    def _race(target: Target, *, processes: int, rounds: int, lockstep: bool) -> list[tuple[int, int | None]]:
        """Every process's ``read_then_append`` outcomes, after checking the flow they left."""
        sync = SPAWN.Barrier(processes)
        with target.open() as store, Children() as children:
            for _ in range(processes):
                children.start(
                    workers.read_then_append, target.url, target.options, "hot", sync, rounds, lockstep
                )
            outcomes = [outcome for results in children.results() for outcome in results]
            successes = sum(got is not None for _, got in outcomes)
            assert len(outcomes) == processes * rounds
            assert store.revision("hot") == successes
            assert [e.revision for e in store.read_flow("hot")] == list(range(1, successes + 1))
            assert store.verify().ok
        return outcomes


class TestSQLiteWriters:
    """Colliding SQLite writers wait for the write lock; none sees "database is locked"."""

    def test_processes_writing_at_once_never_see_a_locked_database(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'events.db'}"
        EventStore.open(url).close()
        self._write_at_once(url, processes=4)

    def test_processes_creating_a_new_database_at_once_never_see_it_locked(self, tmp_path: Path) -> None:
        self._write_at_once(f"sqlite:///{tmp_path / 'events.db'}", processes=4)

    def test_processes_switching_new_files_to_wal_at_once_wait_for_each_other(self, tmp_path: Path) -> None:
        """SQLite refuses the switch at once, without its busy wait, to a process whose rival holds the
        file's shared lock (about 2 switches in 100 here, with a write after each)."""
        processes, rounds = 4, 60
        start = SPAWN.Barrier(processes)
        with Children() as children:
            for _ in range(processes):
                children.start(workers.claim_new_files_while_others_write, str(tmp_path), rounds, start)
            assert children.results() == [rounds] * processes

    @staticmethod
    def _write_at_once(url: str, *, processes: int) -> None:
        start = SPAWN.Barrier(processes)
        with Children() as children:
            for p in range(processes):
                children.start(workers.write_mixed, url, {}, f"p{p}", start, 40, SHARED_FLOWS, 2)
            total = sum(len(r.positions) for results in children.results() for r in results)
        with EventStore.open(url) as store:
            assert store.last_position() == total
            assert store.verify().ok


class TestIdempotentRace:
    """The same batch appended twice at once is written once; both callers get its result."""

    @pytest.mark.parametrize("stores", ["one store", "two stores"])
    def test_racing_retries_of_one_batch_write_it_once(self, target: Target, stores: str) -> None:
        rounds, size = 15, 3
        with target.open() as first, target.open() as second:
            pair = [first, first] if stores == "one store" else [first, second]
            for r in range(rounds):
                batch = [NewEvent("Retried", {"round": r, "n": n}) for n in range(size)]
                a, b = workers.race_same_batch(pair, f"flow-{r}", batch)
                assert not isinstance(a, RevisionMismatch) and a == b
                assert a.event_ids == tuple(e.event_id for e in batch)
                assert [e.event_id for e in first.read_flow(f"flow-{r}")] == list(a.event_ids)
            assert first.last_position() == rounds * size
            assert first.verify().ok
