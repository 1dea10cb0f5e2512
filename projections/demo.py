"""The README's first command: an agent flow recorded, read back and verified.

Used by ``eventstore demo``; it only calls the public API, so it doubles as an
example of a whole flow.
"""

from __future__ import annotations

from eventstore import EventStore

from .service import FlowService


def record_refund_flow(store: EventStore, flow_id: str, *, session: str = "sess-7") -> None:
    """A refund agent: a lookup that needs a retry, a decision, a human approval, a finish."""
    flows = FlowService(store)
    flows.start_flow(
        flow_id,
        controller_id="refund-bot",
        goal="refund order #1042",
        owner_session_key=session,
        requester_origin="support-chat",
        state={"order": 1042},
        actor="agent:refund-bot",
    )
    lease = flows.acquire_lease(flow_id, owner_token="worker-1", ttl_seconds=300)
    flows.schedule_step(
        flow_id,
        step_id="lookup",
        name="lookup_order",
        run_id=f"{flow_id}/lookup",
        task={"tool": "orders.get", "order": 1042},
        position=1,
        lease=lease,
        actor="agent:refund-bot",
    )
    flows.start_step(flow_id, "lookup", lease=lease)
    flows.retry_step(flow_id, "lookup", error="orders API timed out", lease=lease)
    flows.start_step(flow_id, "lookup", lease=lease)
    flows.complete_step(flow_id, "lookup", result={"amount": 129.0, "damaged": True}, lease=lease)
    flows.record_decision(
        flow_id,
        actor="agent:refund-bot",
        decision="refund in full",
        rationale="item arrived damaged; photo evidence attached",
        inputs={"order": 1042, "photos": 2},
        alternatives=["replace item", "partial refund"],
        model="claude-sonnet",
        confidence=0.92,
        step_id="lookup",
    )
    flows.schedule_step(
        flow_id,
        step_id="refund",
        name="issue_refund",
        run_id=f"{flow_id}/refund",
        task={"tool": "payments.refund", "amount": 129.0},
        position=2,
        lease=lease,
        actor="agent:refund-bot",
    )
    flows.open_gate(
        flow_id,
        "refund",
        prompt="Refund $129.00 to the customer's card?",
        options=[{"value": "approve", "label": "Approve"}, {"value": "deny", "label": "Deny"}],
        actor="agent:refund-bot",
    )
    flows.approve_gate(flow_id, "refund", by="human:ann", feedback="photos check out", selections=["approve"])
    flows.start_step(flow_id, "refund", lease=lease)
    flows.complete_step(flow_id, "refund", result={"refund_id": "re_123"}, lease=lease)
    flows.advance(flow_id, current_step="refund", state_patch={"refunded": 129.0}, actor="agent:refund-bot")
    flows.finish(flow_id, result={"refunded": 129.0}, actor="agent:refund-bot")
    flows.release_lease(flow_id, lease)


def record_rejected_flow(store: EventStore, flow_id: str, *, session: str = "sess-7") -> None:
    """A second refund in the same session: the agent proposes, a person rejects, the flow fails."""
    flows = FlowService(store)
    flows.start_flow(
        flow_id,
        controller_id="refund-bot",
        goal="refund order #2077",
        owner_session_key=session,
        state={"order": 2077},
        actor="agent:refund-bot",
    )
    flows.schedule_step(
        flow_id,
        step_id="refund",
        name="issue_refund",
        run_id=f"{flow_id}/refund",
        task={"tool": "payments.refund", "amount": 840.0},
        position=1,
        actor="agent:refund-bot",
    )
    flows.record_decision(
        flow_id,
        actor="agent:refund-bot",
        decision="refund in full",
        rationale="customer reports the parcel never arrived",
        inputs={"order": 2077, "tracking": "delivered"},
        alternatives=["open a carrier claim"],
        model="claude-sonnet",
        confidence=0.55,
        step_id="refund",
    )
    flows.open_gate(
        flow_id,
        "refund",
        prompt="Refund $840.00? Tracking says delivered.",
        options=[{"value": "approve", "label": "Approve"}, {"value": "deny", "label": "Deny"}],
        actor="agent:refund-bot",
    )
    flows.reject_gate(flow_id, "refund", by="human:bob", feedback="tracking shows delivery; open a claim")
    flows.fail_step(flow_id, "refund", error="refund rejected by reviewer", actor="agent:refund-bot")
    flows.fail(flow_id, error="needs a carrier claim, not a refund", actor="agent:refund-bot")
