"""A gate decision's opening, looked up for many decisions in one read, is what a look at the
whole log finds for each: the step's last ``GateOpened`` before it, else its fork origin's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import EventStore, NewEvent, RecordedEvent
from eventstore.audit import audit_trail, gate_opening, gate_openings
from eventstore.causation import _OPENINGS
from eventstore.statements import compiled_sql

from .conftest import Target

STEPS = ["s", "t", "ü'\" %(x)s"]  # quotes and a driver's placeholder must be data, not SQL

Op = tuple[str, int, Any]

ops = st.lists(
    st.tuples(
        st.sampled_from(["open", "approve", "reject", "fork"]),
        st.integers(0, 3),  # which of the flows written so far (modulo), or a new one
        st.sampled_from([*STEPS, None, 7]),  # a decision naming no step, or not as text
    ),
    max_size=30,
)


def _write(store: EventStore, prefix: str, script: list[Op]) -> list[str]:
    flows: list[str] = []
    for kind, which, step in script:
        if not flows or which == 3:
            flows.append(f"{prefix}-{len(flows)}")
        flow = flows[which % len(flows)]
        data = {} if step is None else {"step_id": step}
        if kind == "fork":
            head = list(store.read_flow(flow))
            if not head:
                continue
            point = head[-1]
            fork = f"{flow}>{len(flows)}"
            origin = {"origin_flow_id": flow, "origin_revision": point.revision, "origin_hash": point.hash}
            store.append(fork, [NewEvent("FlowForked", {**origin, "snapshot": {}})], expected_revision=0)
            flows.append(fork)
        elif kind == "open":
            store.append(flow, [NewEvent("GateOpened", {**data, "prompt": f"p{store.last_position()}"})])
        else:
            approval = "GateApproved" if kind == "approve" else "GateRejected"
            store.append(flow, [NewEvent(approval, {**data, "by": "human:ann"})])
    return flows


def _expected(log: list[RecordedEvent], decision: RecordedEvent) -> RecordedEvent | None:
    step = decision.data.get("step_id")
    if not isinstance(step, str):
        return None
    flow, before, seen = decision.flow_id, decision.position, {decision.flow_id}
    while True:
        mine = [e for e in log if e.flow_id == flow]
        found = [
            e
            for e in mine
            if e.type == "GateOpened" and e.position < before and e.data.get("step_id") == step
        ]
        if found:
            return found[-1]
        first = mine[0]
        if first.type != "FlowForked" or first.data["origin_flow_id"] in seen:
            return None
        flow = first.data["origin_flow_id"]
        seen.add(flow)
        before = (
            next(e.position for e in log if e.flow_id == flow and e.revision == first.data["origin_revision"])
            + 1
        )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=ops)
def test_many_decisions_find_the_openings_a_whole_log_look_finds(target: Target, script: list[Op]) -> None:
    with target.open() as store:
        start = store.last_position()
        flows = _write(store, f"g{start}", script)
        log = [e for e in store.read_all(after_position=start) if e.flow_id in flows]
        decisions = [e for e in log if e.type in ("GateApproved", "GateRejected")]
        expected = {d.position: _expected(log, d) for d in decisions}
        found = gate_openings(store, decisions)
        assert found == {position: opening for position, opening in expected.items() if opening is not None}
        assert gate_openings(store, log) == found  # the openings and forks are no decisions
        assert {d.position: gate_opening(store, d) for d in decisions} == expected
        for flow in {e.flow_id for e in log}:  # a trail shows each decision with its opening
            shown = {
                e.position: e.opened_revision
                for e in audit_trail(store, flow_id=flow)
                if e.type != "GateOpened"
            }
            opened = {p: None if o is None else o.revision for p, o in expected.items() if p in shown}
            assert {p: r for p, r in shown.items() if p in opened} == opened


def test_a_page_of_decisions_is_looked_up_at_once(target: Target) -> None:
    """Three hundred decisions, each its own step's, some answered more than once."""
    with target.open() as store:
        for n in range(100):
            store.append("many", [NewEvent("GateOpened", {"step_id": f"s{n}", "prompt": f"first {n}"})])
        for n in range(100):
            store.append("many", [NewEvent("GateRejected", {"step_id": f"s{n}", "by": "human:bo"})])
            store.append("many", [NewEvent("GateOpened", {"step_id": f"s{n}", "prompt": f"again {n}"})])
            store.append("many", [NewEvent("GateApproved", {"step_id": f"s{n}", "by": "human:bo"})])
        decisions = [e for e in store.read_flow("many") if e.type != "GateOpened"]
        found = gate_openings(store, decisions)
        assert gate_openings(store, []) == {}
    prompts = [found[d.position].data["prompt"] for d in decisions]
    assert prompts == [f"{word} {n}" for n in range(100) for word in ("first", "again")]


def test_each_lookup_reads_the_audit_index_by_flow_on_sqlite(tmp_path: Path) -> None:
    """The one read of many openings looks each up in the index, not in a scan of the log."""
    with EventStore.open(f"sqlite:///{tmp_path / 'plan.db'}") as store:
        store.append("f", [NewEvent("GateOpened", {"step_id": "s", "prompt": "p"})])
        with store.reading() as conn:
            sql, values = compiled_sql(conn.dialect, _OPENINGS[True], {"wanted": '[["f", 9, "s"]]'})
            plan = [row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, values)]
    assert any("USING INDEX ix_flow_events_audit " in step + " " for step in plan), plan
    assert not any(step.startswith("SCAN") and "flow_events" in step for step in plan), plan
