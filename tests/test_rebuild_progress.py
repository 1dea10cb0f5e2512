"""A rebuild's progress while writers append: the total grows with the log, done reaches it at the swap."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from eventstore import NewEvent, RecordedEvent, Transaction
from projections import FlowProjection, FlowQueries, FlowService, Progress, rebuild

from .conftest import Target
from .test_projections import DecisionsByActor, counts, decide

ROUNDS = 4
EACH = 3


def test_the_total_counts_what_writers_append_during_a_rebuild(target: Target) -> None:
    """A writer thread appends after each of the first reports: every later report counts those
    events in its total, so no report says done == total while some are still to be folded."""
    with target.open() as store, target.open() as other:
        decide(store, "a", 10)
        go, written = threading.Event(), threading.Event()
        appended = [0]

        def write() -> None:
            for _ in range(ROUNDS):
                assert go.wait(30)
                go.clear()
                other.append("w", [NewEvent("DecisionRecorded", {"actor": "w"}) for _ in range(EACH)])
                appended[0] += EACH
                written.set()

        writer = threading.Thread(target=write)
        writer.start()
        seen: list[tuple[Progress, int]] = []

        def progress(report: Progress) -> None:
            seen.append((report, appended[0]))  # what the log held past its start when it was taken
            if len(seen) <= ROUNDS:
                go.set()
                assert written.wait(30)
                written.clear()

        result = rebuild(store, DecisionsByActor(), batch_size=2, progress=progress)
        writer.join(30)
        for report, before in seen:
            assert report.total >= 10 + before, (report, before)
        assert [report.done < report.total for report, _ in seen[:ROUNDS]] == [True] * ROUNDS
        assert (result.done, result.total) == (10 + ROUNDS * EACH, 10 + ROUNDS * EACH)
        assert seen[-1][0] == result


class SteppingClock:
    """A clock that moves ``step`` on at every reading: work that reads it takes time, without a sleep."""

    def __init__(self, step: timedelta) -> None:
        self.now = datetime(2026, 12, 7, 12, tzinfo=UTC)
        self.step = step

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now


class Slow(DecisionsByActor):
    """Each event takes 50 ms of its store's clock (``clock``) to fold."""

    clock = SteppingClock(timedelta(0))

    def on_DecisionRecorded(self, tx: Transaction, event: RecordedEvent) -> None:
        Slow.clock.now += timedelta(milliseconds=50)
        super().on_DecisionRecorded(tx, event)


def test_a_log_smaller_than_a_batch_reports_progress_every_second_of_work(target: Target) -> None:
    """`eventstore rebuild` folds 10,000 events a batch: a smaller log reported only at its end."""
    Slow.clock = SteppingClock(timedelta(0))
    with target.open(clock=Slow.clock) as store:
        decide(store, "a", 60)  # 3 s of work
        seen: list[int] = []
        result = rebuild(store, Slow(), progress=lambda report: seen.append(report.done))
        assert result.done == 60 and seen[-1] == 60
        assert len(seen) >= 4 and seen == sorted(seen) and seen[0] <= 25  # about a second's events each
        assert counts(store, Slow()) == {"a": 60}


def test_the_flow_read_models_bulk_fill_reports_every_second_of_work_too(target: Target) -> None:
    with target.open(projections=[FlowProjection()], clock=SteppingClock(timedelta(seconds=0.3))) as store:
        flows = FlowService(store)
        for n in range(20):
            flows.start_flow(f"f{n}", controller_id="c", goal="g", owner_session_key="s")
        seen: list[int] = []
        rebuild(store, FlowProjection(), progress=lambda report: seen.append(report.done))
        assert len(seen) > 3 and seen == sorted(seen) and seen[0] < 20 and seen[-1] == 20
        assert FlowQueries(store).flows(limit=100).total == 20
