"""A rebuild that fails: what it leaves behind, and what the caller is told."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import pytest
import sqlalchemy as sa

from eventstore import EventStore, RecordedEvent, Transaction
from eventstore.errors import ConcurrencyError, EventStoreError, ProjectionError, ProjectionFailed, StoreBusy
from projections import CatchUpRunner, Progress, rebuild

from .conftest import Target
from .test_projections import DecisionsByActor, FailingOnce, counts, decide


def _tamper(store: EventStore) -> CatchUpRunner:
    """Three decisions of 'a' folded, then the count set to 99: a rebuild that swaps puts 3 back."""
    decide(store, "a", 3)
    runner = CatchUpRunner(store, DecisionsByActor())
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE decisions_by_actor SET decisions = 99")
    return runner


def _fresh_tables(store: EventStore) -> list[str]:
    """The ``__rebuild`` tables there are, and the ones recorded as owned."""
    with store.engine.connect() as conn:
        owned = conn.exec_driver_sql("SELECT table_name FROM projection_tables").scalars().all()
        names = [*sa.inspect(conn).get_table_names(), *owned]
    return [name for name in names if name.endswith("__rebuild")]


class TestTheFinalReport:
    def test_a_callback_raising_on_it_is_told_the_rebuild_committed(self, store: EventStore) -> None:
        runner = _tamper(store)
        seen: list[Progress] = []

        def progress(report: Progress) -> None:
            seen.append(report)
            if len(seen) == 2:  # a batch of the 3 events, then the final report, after the swap
                raise RuntimeError("progress bar closed")

        with pytest.raises(ProjectionError, match=r"committed, and its new tables are live") as raised:
            rebuild(store, DecisionsByActor(), batch_size=10, progress=progress)
        assert isinstance(raised.value.__cause__, RuntimeError)
        assert (seen[-1].done, seen[-1].total) == (3, 3)
        assert counts(store, runner.projection) == {"a": 3}  # the rebuilt tables are live
        assert _fresh_tables(store) == []
        assert rebuild(store, DecisionsByActor()).done == 3  # and its claim was given up


class Interrupted(Exception):
    pass


class FailsAtTwo(FailingOnce):
    fail_at: ClassVar[int | None] = 2


def _interrupt(kind: type[BaseException]) -> Callable[[Progress], None]:
    def progress(report: Progress) -> None:
        raise kind("stop")

    return progress


class TestAFailedRebuild:
    @pytest.mark.parametrize(
        ("projection", "progress", "raised"),
        [
            (DecisionsByActor, _interrupt(Interrupted), Interrupted),
            (DecisionsByActor, _interrupt(KeyboardInterrupt), KeyboardInterrupt),
            (FailsAtTwo, None, ProjectionFailed),
        ],
        ids=["callback", "interrupt", "handler"],
    )
    def test_leaves_no_fresh_tables_and_the_live_ones_served(
        self,
        store: EventStore,
        projection: type[DecisionsByActor],
        progress: Callable[[Progress], None] | None,
        raised: type[BaseException],
    ) -> None:
        runner = _tamper(store)
        with pytest.raises(raised):
            rebuild(store, projection(), batch_size=1, progress=progress)
        assert _fresh_tables(store) == []
        assert counts(store, runner.projection) == {"a": 99}  # untouched
        decide(store, "a")
        assert runner.run_until_caught_up() == 1
        assert counts(store, runner.projection) == {"a": 100}

    def test_in_the_swap_leaves_no_fresh_tables(self, store: EventStore) -> None:
        runner = _tamper(store)
        with pytest.raises(ProjectionFailed, match="at event 4"):
            rebuild(store, _late_failure(RuntimeError), batch_size=10, progress=_decide_once(store))
        assert _fresh_tables(store) == []
        assert counts(store, runner.projection) == {"a": 99}


class FailsLate(DecisionsByActor):
    """Raises ``error`` at event 4, appended while the rebuild runs: the swap folds it."""

    error: type[Exception] = RuntimeError
    calls: ClassVar[list[int]] = []

    def on_DecisionRecorded(self, tx: Transaction, event: RecordedEvent) -> None:
        if event.position == 4:
            FailsLate.calls.append(event.position)
            raise self.error("the handler's own")
        super().on_DecisionRecorded(tx, event)


def _late_failure(error: type[Exception]) -> FailsLate:
    FailsLate.calls.clear()
    projection = FailsLate()
    projection.error = error
    return projection


def _decide_once(store: EventStore) -> Callable[[Progress], None]:
    def progress(report: Progress) -> None:
        if report.done == 3 and store.last_position() == 3:
            decide(store, "a")  # after the fold of the log as it was: left to the swap

    return progress


@pytest.mark.parametrize("error", [StoreBusy, ConcurrencyError])
def test_a_handlers_own_conflict_in_the_swap_is_not_retried(
    target: Target, error: type[EventStoreError]
) -> None:
    """Only the database's refusals (a deadlock, a lock timeout) are tried again: the handler's
    own StoreBusy or ConcurrencyError comes out at once, as it would from any other fold."""
    with target.open() as store:
        runner = _tamper(store)
        with pytest.raises(error, match="the handler's own"):
            rebuild(store, _late_failure(error), batch_size=10, progress=_decide_once(store))
        assert FailsLate.calls == [4]
        assert _fresh_tables(store) == []
        assert counts(store, runner.projection) == {"a": 99}


def test_a_sqlite_rebuild_the_store_is_busy_for_fails_with_its_own_error(tmp_path: Path) -> None:
    """Another process holds SQLite's write lock from mid-rebuild on: the rebuild's StoreBusy is
    what the caller sees. No cleanup waits a busy_timeout more (its ``__rebuild`` tables are left
    for the next rebuild), and the claim it could not give back is a note, not the error raised."""
    path = tmp_path / "busy.db"
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    with EventStore.open(f"sqlite:///{path}", busy_timeout=0.05, clock=lambda: now[0]) as store:
        decide(store, "a", 3)
        runner = CatchUpRunner(store, DecisionsByActor())
        blocker = sqlite3.connect(path, isolation_level=None)

        def progress(report: Progress) -> None:
            if not blocker.in_transaction:
                blocker.execute("BEGIN IMMEDIATE")  # taken after the first batch, and kept

        with pytest.raises(StoreBusy) as raised:
            rebuild(store, DecisionsByActor(), batch_size=1, progress=progress)
        blocker.rollback()
        blocker.close()
        assert "_rebuild" in [entry.name for entry in raised.traceback]  # the fold's, not a later wait's
        notes = "\n".join(getattr(raised.value, "__notes__", []))
        assert "__rebuild tables were left" in notes and "claim" in notes
        assert _fresh_tables(store)  # left for the next rebuild
        now[0] += timedelta(minutes=3)  # the claim it kept expires
        assert rebuild(store, DecisionsByActor()).done == 3
        assert _fresh_tables(store) == []
        assert counts(store, runner.projection) == {"a": 3}
