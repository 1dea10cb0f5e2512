"""The position counter edited by hand: a clear IntegrityViolation (or a verify problem), never a
TypeError, a driver's unique-key message, or ten seconds of retries reported as lost races."""

from __future__ import annotations

import pytest

from eventstore import EventStore, IntegrityViolation, NewEvent
from projections import FlowProjection

from .conftest import Target
from .test_exchange import run
from .test_tamper import sql

GONE = r"the position counter \(event_positions\) has no row: it was deleted"
BEHIND = (
    r"the position the append was given is already taken: "
    r"the position counter \(event_positions\) was set back"
)


@pytest.fixture
def filled(store: EventStore) -> EventStore:
    store.append("a", [NewEvent("T", {"i": i}) for i in range(5)])
    return store


class TestTheCounterRowDeleted:
    def test_an_append_is_an_integrity_violation_and_writes_nothing(self, filled: EventStore) -> None:
        sql(filled, "DELETE FROM event_positions")
        with pytest.raises(IntegrityViolation, match=GONE):
            filled.append("b", [NewEvent("T", {})])
        assert filled.revision("b") == 0

    def test_last_position_is_an_integrity_violation(self, filled: EventStore) -> None:
        sql(filled, "DELETE FROM event_positions")
        with pytest.raises(IntegrityViolation, match=GONE):
            filled.last_position()

    def test_opening_with_projections_is_an_integrity_violation(
        self, filled: EventStore, target: Target
    ) -> None:
        sql(filled, "DELETE FROM event_positions")
        with pytest.raises(IntegrityViolation, match=GONE):
            target.open(projections=[FlowProjection()])
        assert "error: the position counter (event_positions) has no row" in run(
            target, "history", "a", code=1
        )

    def test_verify_reports_it(self, filled: EventStore, target: Target) -> None:
        sql(filled, "DELETE FROM event_positions")
        (problem,) = filled.verify().problems
        assert problem.kind == "missing-events" and "has no row: it was deleted" in problem.detail
        assert "BROKEN missing-events: the position counter (event_positions) has no row" in run(
            target, "verify", code=2
        )


def test_an_append_after_the_counter_was_set_back_is_an_integrity_violation(filled: EventStore) -> None:
    sql(filled, "UPDATE event_positions SET last_position = 3")
    with pytest.raises(IntegrityViolation, match=BEHIND):
        filled.append("b", [NewEvent("T", {})])
    assert filled.revision("b") == 0
