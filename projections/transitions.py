"""The argument checks and transition checks behind ``FlowService``'s decisions.

Each command builds its events with ``_make`` (a bad value is the caller's
``InvalidInput``) and decides with the checks here: is the step still open,
is its gate open, is the lease active, is an ending a harmless repeat.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import pydantic

from eventstore import Event
from eventstore.checks import check_nonempty_text, validation_message
from eventstore.errors import FlowClosed, GateNotOpen, InvalidInput, StepClosed
from eventstore.flow_fold import FlowState, StepState
from eventstore.flows import FlowCancelled, FlowFailed, FlowFinished

EventT = TypeVar("EventT", bound=Event)


MAX_NAME_LENGTH = 500
"""The longest name or key (step, run, session, owner, ...) a command takes, in characters: the read
models index them, and PostgreSQL's index entries hold about 2.7 kB."""
_NAMES = frozenset(
    {
        "controller_id",
        "owner_session_key",
        "requester_origin",
        "parent_flow_id",
        "current_step",
        "step_id",
        "name",
        "run_id",
        "runtime",
        "child_session_key",
        "by",
        "owner_token",
    }
)


def _make(event_class: type[EventT], /, **fields: Any) -> EventT:
    """Build a vocabulary event; bad field values are the caller's ``InvalidInput``."""
    for field, value in fields.items():
        if field in _NAMES and isinstance(value, str) and len(value) > MAX_NAME_LENGTH:
            raise InvalidInput(
                f"{field} is {len(value)} characters long; names and keys take at most {MAX_NAME_LENGTH}"
            )
    try:
        return event_class(**fields)
    except pydantic.ValidationError as exc:
        raise InvalidInput(f"invalid {event_class.event_type}: {validation_message(exc)}") from exc


def _who(name: str, value: Any) -> str:
    """Who decides or holds (``by``, a decision's ``actor``, ``owner_token``): named, as text, checked
    before anything is read. The audit trail shows who approved what, and cannot be asked for ''."""
    return check_nonempty_text(name, value)


def _mapping(name: str, value: Mapping[str, Any] | None) -> dict[str, Any]:
    """An optional mapping argument as a dict; anything else is the caller's ``InvalidInput``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{name} must be a mapping (a JSON object), not {type(value).__name__}")
    return dict(value)


def _listed(name: str, value: Sequence[Any]) -> list[Any]:
    """A list argument; a string is refused rather than taken for its letters."""
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence | set | frozenset):
        raise InvalidInput(f"{name} must be a list, not {type(value).__name__}")
    return list(value)


@dataclass(frozen=True, slots=True)
class _Ending:
    """How a step ends: its status, what makes a repeat identical, the verb for errors."""

    status: str
    same: Callable[[StepState], bool]
    verb: str


def _active(flow: FlowState, now: datetime) -> bool:
    return flow.lease_expires_at is not None and flow.lease_expires_at > now


def _open_step(flow: FlowState, step: StepState, verb: str) -> None:
    if step.terminal:
        raise StepClosed(
            flow.flow_id, f"is {step.status}; cannot {verb} it", step_id=step.step_id, status=step.status
        )
    if flow.terminal:
        raise FlowClosed(flow.flow_id, f"is {flow.status}; cannot {verb} its steps", status=flow.status)


def _gate_is_open(flow: FlowState, step: StepState) -> None:
    if flow.terminal:
        raise FlowClosed(flow.flow_id, f"is {flow.status}; its gates cannot be decided", status=flow.status)
    if step.gate_status != "open":
        state = step.gate_status or "never opened"
        raise GateNotOpen(flow.flow_id, f"has no open gate (gate is {state})", step_id=step.step_id)


def _as_stored(event: Event) -> dict[str, Any]:
    """The event's data as the log keeps it (tuples as lists, times as text, ...): what a read
    model holds, so what a repeat is compared with."""
    data: dict[str, Any] = event.model_dump(mode="json")
    return data


def _same_ending(flow: FlowState, event: Event) -> bool:
    """Is ``event`` the same ending the flow already has (a harmless repeat)?"""
    data = _as_stored(event)
    if isinstance(event, FlowFinished):
        return bool(flow.result == data["result"])
    if isinstance(event, FlowFailed):
        return flow.error == {"error": data["error"], "details": data["details"]}
    if isinstance(event, FlowCancelled):
        return flow.error == {"error": "cancelled", "details": {"reason": data["reason"]}}
    return False
