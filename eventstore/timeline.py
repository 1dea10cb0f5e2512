"""A flow's history as a timeline: each step's events grouped into one span.

A step's ``StepScheduled``, ``StepStarted``, retries, gate events and its
ending read as one ``StepSpan``, placed where the step began; every other
event stands alone. The spans' status, attempts and gate come from the one
fold (``eventstore.flows``), so they agree with the read models.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from .events import RecordedEvent
from .flow_fold import STEP_EVENT_TYPES, FlowState, FlowView


@dataclass(frozen=True, slots=True)
class StepSpan:
    """One step's events and what they came to."""

    step_id: str
    name: str
    events: tuple[RecordedEvent, ...]
    status: str
    attempts: int
    retries: int
    error: str | None  # the last failure or retry error, or a skip or timeout reason
    gate_status: str | None
    gate_by: str | None
    gate_decisions: tuple[tuple[str, str], ...] = ()
    """Each decision on the step's gate in order, ``(status, by)``: a rejection before a
    reopened gate's approval stays here, where ``gate_status`` has only the last."""
    actor: str | None = None
    """Who scheduled the step, else who opened its gate, else who recorded another of its
    events (a gate's decider is in ``gate_decisions``); None when no event names one."""

    @property
    def first_revision(self) -> int:
        return self.events[0].revision

    @property
    def last_revision(self) -> int:
        return self.events[-1].revision

    @property
    def began_at(self) -> datetime:
        return self.events[0].recorded_at

    @property
    def ended_at(self) -> datetime:
        return self.events[-1].recorded_at

    @property
    def seconds(self) -> float:
        return (self.ended_at - self.began_at).total_seconds()


TimelineItem = RecordedEvent | StepSpan


@dataclass(frozen=True, slots=True)
class Timeline:
    """The items in the order the flow reached them, and the flow as the events leave it."""

    items: tuple[TimelineItem, ...]
    flow: FlowState | None


def timeline(events: Iterable[RecordedEvent]) -> Timeline:
    """Group a flow's events (read from revision 1, in order) into step spans and single events."""
    view = FlowView()
    order: list[RecordedEvent | str] = []
    grouped: dict[str, list[RecordedEvent]] = {}
    for event in events:
        view.apply(event)
        step_id = event.data.get("step_id") if event.type in STEP_EVENT_TYPES else None
        if not isinstance(step_id, str):
            order.append(event)
            continue
        if step_id not in grouped:
            grouped[step_id] = []
            order.append(step_id)
        grouped[step_id].append(event)
    items = tuple(item if isinstance(item, RecordedEvent) else _span(view, grouped[item]) for item in order)
    return Timeline(items, view.flow)


def _span(view: FlowView, events: list[RecordedEvent]) -> StepSpan:
    step_id = str(events[0].data["step_id"])
    state = view.steps.get(step_id)
    name = str(events[0].data.get("name", "")) if events[0].type == "StepScheduled" else ""
    return StepSpan(
        step_id=step_id,
        name=state.name if state is not None else name,
        events=tuple(events),
        status=state.status if state is not None else "unknown",
        attempts=state.attempts if state is not None else 0,
        retries=sum(1 for event in events if event.type == "StepRetried"),
        error=(state.error or state.reason) if state is not None else None,
        gate_status=state.gate_status if state is not None else None,
        gate_by=state.gate_by if state is not None else None,
        gate_decisions=tuple(
            (_DECIDED[event.type], str(event.data.get("by", "")))
            for event in events
            if event.type in _DECIDED
        ),
        actor=_actor(events),
    )


_DECIDED = {"GateApproved": "approved", "GateRejected": "rejected"}


def _actor(events: list[RecordedEvent]) -> str | None:
    """The actor of the step's ``StepScheduled``, else its ``GateOpened``, else its first event
    (not a gate decision) that names one."""
    named = [e for e in events if e.type not in _DECIDED and isinstance(e.metadata.get("actor"), str)]
    for kind in ("StepScheduled", "GateOpened"):
        for event in named:
            if event.type == kind:
                return str(event.metadata["actor"])
    return str(named[0].metadata["actor"]) if named else None
