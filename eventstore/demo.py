"""A small agent flow for the README's first command: record, read back, verify."""

from __future__ import annotations

from .events import Event
from .store import EventStore


class FlowStarted(Event):
    goal: str
    owner_session_key: str


class StepCompleted(Event):
    step_id: str
    result: dict[str, object]


class DecisionRecorded(Event):
    actor: str
    decision: str
    rationale: str
    confidence: float


class GateApproved(Event):
    step_id: str
    by: str
    feedback: str


class FlowFinished(Event):
    result: dict[str, object]


def record_demo_flow(store: EventStore, flow_id: str) -> int:
    """Append a five-event refund flow, each event with its actor; return its revision."""
    agent = {"actor": "agent:refund-bot", "session_id": "sess-7", "correlation_id": flow_id}
    store.append(
        flow_id,
        [FlowStarted(goal="refund order #1042", owner_session_key="sess-7")],
        expected_revision=0,
        metadata=agent,
    )
    store.append(
        flow_id,
        [
            StepCompleted(step_id="lookup", result={"order": 1042, "amount": 129.0}),
            DecisionRecorded(
                actor="agent:refund-bot",
                decision="refund in full",
                rationale="item arrived damaged; photo evidence attached",
                confidence=0.92,
            ),
        ],
        expected_revision=1,
        metadata=agent,
    )
    store.append(
        flow_id,
        [GateApproved(step_id="refund", by="human:ann", feedback="ok, refund")],
        expected_revision=3,
        metadata={**agent, "actor": "human:ann"},
    )
    return store.append(
        flow_id, [FlowFinished(result={"refunded": 129.0})], expected_revision=4, metadata=agent
    ).revision
