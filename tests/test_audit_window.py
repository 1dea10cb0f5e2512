"""An audit trail bounded in time reads the window it asks for, and whatever the clock did, misses nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import EventStore, NewEvent
from eventstore.audit import audit_trail
from eventstore.schema import AUDIT_EVENT_TYPES

from .conftest import Target
from .read_work import call_work
from .test_audit import explain

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
TYPES = ["DecisionRecorded", "GateOpened", "StepFailed", "StepStarted", "Noted"]


class Clock:
    """The store's clock, set by the test: it may step back, as a real one does."""

    def __init__(self) -> None:
        self.now = EPOCH

    def __call__(self) -> datetime:
        return self.now


def _append(store: EventStore, clock: Clock, flow: str, minutes: int, kind: str) -> None:
    clock.now = EPOCH + timedelta(minutes=minutes)
    store.append(flow, [NewEvent(kind, {"actor": "agent:a", "decision": "d", "step_id": "s", "error": "e"})])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    writes=st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 60), st.sampled_from(TYPES)), max_size=25
    ),
    since=st.none() | st.integers(0, 60),
    until=st.none() | st.integers(0, 60),
)
def test_a_trail_in_a_window_is_every_audited_event_recorded_in_it(
    target: Target, writes: list[tuple[str, int, str]], since: int | None, until: int | None
) -> None:
    """Times in any order (a clock stepping back); compared with a filter of the whole log."""
    if since is not None and until is not None and since > until:
        since, until = until, since
    clock = Clock()
    with target.open(clock=clock) as store:
        start = store.last_position()
        for flow, minutes, kind in writes:
            _append(store, clock, f"{flow}{start}", minutes, kind)
        low = None if since is None else EPOCH + timedelta(minutes=since)
        high = None if until is None else EPOCH + timedelta(minutes=until)
        expected = [
            event.position
            for event in store.read_all()
            if event.type in AUDIT_EVENT_TYPES
            and (low is None or event.recorded_at >= low)
            and (high is None or event.recorded_at < high)
        ]
        assert [entry.position for entry in audit_trail(store, since=low, until=high)] == expected
        if low is not None and high is not None:  # windows that meet at a time show each event once
            middle = low + (high - low) / 2
            halves = [
                *audit_trail(store, since=low, until=middle),
                *audit_trail(store, since=middle, until=high),
            ]
            assert sorted(entry.position for entry in halves) == expected


def _log(path: Path, before: int) -> tuple[EventStore, datetime]:
    """``before`` audited events, then 20 in the last minute; the store and that minute."""
    clock = Clock()
    store = EventStore.open(f"sqlite:///{path}", clock=clock)
    for n in range(before):
        _append(store, clock, f"old{n % 7}", n // 100, "DecisionRecorded")
    for _ in range(20):
        _append(store, clock, "new", 10_000, "DecisionRecorded")
    return store, EPOCH + timedelta(minutes=10_000)


def test_a_recent_window_is_read_without_what_came_before_it(tmp_path: Path) -> None:
    """Counted in SQLite's VM steps: it read every audited event before the window, a page at a time."""
    work = []
    for before in (200, 2000):
        store, recent = _log(tmp_path / f"{before}.db", before)
        with store:

            def last_minute(store: EventStore = store, recent: datetime = recent) -> list[str]:
                return [entry.flow_id for entry in audit_trail(store, since=recent)]

            assert last_minute() == ["new"] * 20
            work.append(call_work(store, ["flow_events"], last_minute))
    assert 0 < work[1] < work[0] * 1.5, work


def test_postgresql_reads_a_short_window_by_the_time_index(
    pg_target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No probe there: from its statistics (autovacuum's ANALYZE) the planner takes the index."""
    clock = Clock()
    with pg_target.open(clock=clock) as store:
        for n in range(2000):
            _append(store, clock, f"old{n % 7}", n // 100, "DecisionRecorded")
        _append(store, clock, "new", 10_000, "DecisionRecorded")
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE flow_events")
        plans = explain(store, monkeypatch)
        recent = EPOCH + timedelta(minutes=10_000)
        assert [entry.flow_id for entry in audit_trail(store, since=recent)] == ["new"]
        assert any("ix_flow_events_audit_time" in plan for plan in plans), plans
