"""A limited audit trail reads about as many rows as it returns, not a page of every flow it merges."""

from __future__ import annotations

from pathlib import Path

from eventstore import EventStore
from eventstore.audit import audit_trail
from projections import FlowProjection, FlowService

from .read_work import call_work


def test_a_limited_session_trail_does_not_grow_with_what_comes_after_its_limit(tmp_path: Path) -> None:
    """Counted in SQLite's VM steps (``read_work``): the work of every statement the trail ran."""
    with EventStore.open(f"sqlite:///{tmp_path / 'audit.db'}", projections=[FlowProjection()]) as store:
        flows = FlowService(store)

        def decide(times: int) -> None:
            for flow in ("a", "b", "c"):
                for n in range(times):
                    flows.record_decision(flow, actor="agent:bot", decision=f"d{n}")

        def first_two() -> None:
            entries = list(audit_trail(store, session="s", limit=2))
            assert [(entry.flow_id, entry.decision) for entry in entries] == [("a", "d0"), ("a", "d1")]

        for flow in ("a", "b", "c"):
            flows.start_flow(flow, controller_id="bot", goal="g", owner_session_key="s")
        decide(3)
        before = call_work(store, ["flow_events"], first_two)
        decide(100)  # after the first two of every flow: a limit of 2 never needs them
        after = call_work(store, ["flow_events"], first_two)
        assert after < before * 1.5, (before, after)
