"""Who held a flow from retention, when, and who let it go are in its audit trail and the actor's."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from eventstore import EventStore
from eventstore.audit import HoldEntry, audit_trail
from eventstore.retention import hold, release
from projections import FlowProjection, FlowService

from .conftest import Target
from .test_audit_tamper import cli


@pytest.fixture
def held(target: Target) -> Iterator[EventStore]:
    with target.open(projections=[FlowProjection()]) as store:
        flows = FlowService(store)
        for flow_id, session in (("f1", "s1"), ("f2", "s2")):
            flows.start_flow(flow_id, controller_id="bot", goal="g", owner_session_key=session)
        flows.record_decision("f1", actor="agent:bot", decision="keep")
        hold(store, "f1", reason="litigation 7", by="legal@x")
        hold(store, "f2", reason="other case", by="legal@y")
        release(store, "f1", by="legal@x", reason="settled")
        yield store


def holds(entries: Iterator[object]) -> list[tuple[str, str | None, str | None, str]]:
    return [(e.action, e.held_flow_id, e.actor, e.reason) for e in entries if isinstance(e, HoldEntry)]


def test_an_actor_trail_shows_the_holds_it_placed_and_released(held: EventStore) -> None:
    assert holds(audit_trail(held, actor="legal@x")) == [
        ("held", "f1", "legal@x", "litigation 7"),
        ("released", "f1", "legal@x", "settled"),
    ]


def test_a_flow_and_its_session_show_its_holds_in_log_order(held: EventStore) -> None:
    trail = list(audit_trail(held, flow_id="f1"))
    assert [entry.type for entry in trail] == ["DecisionRecorded", "LegalHoldPlaced", "LegalHoldReleased"]
    assert [entry.type for entry in audit_trail(held, session="s1")] == [entry.type for entry in trail]
    assert holds(audit_trail(held, flow_id="f2")) == [("held", "f2", "legal@y", "other case")]


def test_types_choose_holds_in_or_out(held: EventStore) -> None:
    assert [e.type for e in audit_trail(held, types=["LegalHoldReleased"])] == ["LegalHoldReleased"]
    assert holds(audit_trail(held, flow_id="f1", types=["DecisionRecorded"])) == []
    assert len(list(audit_trail(held, flow_id="f1", limit=2))) == 2


def test_the_command_prints_held_and_released(held: EventStore, target: Target) -> None:
    out, err = cli(target, "audit", "--actor", "legal@x")
    lines = out.splitlines()
    assert "HELD" in lines[0] and 'flow f1: "litigation 7"' in lines[0]
    assert "RELEASED" in lines[1] and 'flow f1: "settled"' in lines[1]
    assert "2 entries: 2 holds" in err
    out, _ = cli(target, "audit", "--type", "hold")
    assert len(out.splitlines()) == 3
