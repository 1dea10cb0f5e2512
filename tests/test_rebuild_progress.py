"""A rebuild's progress while writers append: the total grows with the log, done reaches it at the swap."""

from __future__ import annotations

import threading

from eventstore import NewEvent
from projections import Progress, rebuild

from .conftest import Target
from .test_projections import DecisionsByActor, decide

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
