"""``audit --why`` of a gate decision with no causation id shows the gate opening it answered."""

from __future__ import annotations

import orjson

from eventstore.audit import gate_opening
from projections import FlowProjection

from .conftest import Target
from .test_audit_tamper import approved_by_carol, cli


def test_the_gate_opening_led_to_an_approval_without_a_causation_id(target: Target) -> None:
    with target.open(projections=[FlowProjection()]) as store:
        approved_by_carol(store)
        opened = gate_opening(store, next(iter(store.read_flow("inv-1", from_revision=4))))
    assert opened is not None and (opened.type, opened.revision) == ("GateOpened", 3)
    out, _ = cli(target, "audit", "--why", "inv-1@4")
    assert "nothing recorded (no causation_id)" not in out
    assert "the gate it answered" in out and "inv-1@3  GateOpened  agent:bot" in out
    explained = orjson.loads(cli(target, "audit", "--why", "inv-1@4", "--json")[0])
    assert [cause["revision"] for cause in explained["causes"]] == [3]
    assert explained["gate_opening"] == str(opened.event_id)


def test_an_event_without_a_causation_id_or_a_gate_still_has_nothing_recorded(target: Target) -> None:
    with target.open(projections=[FlowProjection()]) as store:
        approved_by_carol(store)
    out, _ = cli(target, "audit", "--why", "inv-1@3")
    assert "what led to it: nothing recorded (no causation_id)" in out
    assert orjson.loads(cli(target, "audit", "--why", "inv-1@3", "--json")[0])["gate_opening"] is None
