"""The flow vocabulary: the events of flows, steps, gates, leases and decisions.

Events for flows, steps, human approval gates, leases and agent decisions,
as pydantic models, and the shape a fork's snapshot must have. The one fold
that turns them into a flow's state is in ``eventstore.flow_fold``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import pydantic

from .checks import validation_message
from .events import Event, EventRegistry
from .flow_fold import EARLIEST_TIME, LATEST_TIME, aware_time

# -- flow ------------------------------------------------------------------


class FlowStarted(Event):
    controller_id: str
    goal: str
    owner_session_key: str
    requester_origin: str | None = None
    state: dict[str, Any] = pydantic.Field(default_factory=dict)
    parent_flow_id: str | None = None


class FlowAdvanced(Event):
    current_step: str | None = None
    state_patch: dict[str, Any] = pydantic.Field(default_factory=dict)
    """An RFC 7396 merge patch: a ``null`` value removes its key."""


class FlowWaiting(Event):
    waiting_for: str
    details: dict[str, Any] = pydantic.Field(default_factory=dict)


class FlowResumed(Event):
    by: str | None = None
    input: dict[str, Any] = pydantic.Field(default_factory=dict)


class FlowCancelRequested(Event):
    by: str
    reason: str = ""


class FlowCancelled(Event):
    reason: str = ""


class FlowFinished(Event):
    result: dict[str, Any] = pydantic.Field(default_factory=dict)


class FlowForked(Event):
    """A flow started as a copy of another flow at one of its revisions.

    ``origin_hash`` is the hash of the origin's event at ``origin_revision``,
    so the fork can be traced and checked against the origin's chain;
    ``snapshot`` is the origin's state there (``view_to_dict``).
    """

    origin_flow_id: str
    origin_revision: int
    origin_hash: str
    snapshot: dict[str, Any]

    @pydantic.field_validator("snapshot")
    @classmethod
    def _a_view(cls, snapshot: dict[str, Any]) -> dict[str, Any]:
        """The snapshot is a flow view as ``view_to_dict`` writes it; kept as given."""
        try:
            _ForkSnapshot.model_validate(snapshot)
        except pydantic.ValidationError as exc:
            raise ValueError(f"not a flow view ({validation_message(exc)})") from None
        return snapshot


class FlowFailed(Event):
    error: str
    details: dict[str, Any] = pydantic.Field(default_factory=dict)


# -- steps -----------------------------------------------------------------


Int32 = Annotated[int, pydantic.Field(ge=-(2**31), le=2**31 - 1)]
"""A number the read models keep in a 32-bit column: the same range on SQLite and PostgreSQL."""


class StepScheduled(Event):
    step_id: str
    name: str
    run_id: str
    task: dict[str, Any] = pydantic.Field(default_factory=dict)
    runtime: str | None = None
    position: Int32 = 0
    iteration: Int32 = 0
    child_session_key: str | None = None


class StepStarted(Event):
    step_id: str


class StepCompleted(Event):
    step_id: str
    result: dict[str, Any] = pydantic.Field(default_factory=dict)
    output: dict[str, Any] | None = None


class StepFailed(Event):
    step_id: str
    error: str
    details: dict[str, Any] = pydantic.Field(default_factory=dict)


class StepSkipped(Event):
    step_id: str
    reason: str = ""


class StepTimedOut(Event):
    step_id: str
    reason: str = ""


class StepRetried(Event):
    step_id: str
    retry_count: Int32
    error: str = ""


# -- human approval gates ----------------------------------------------------


class GateOption(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")
    value: str
    label: str


class GateOpened(Event):
    step_id: str
    prompt: str
    options: list[GateOption] = pydantic.Field(default_factory=list)
    timeout_seconds: float | None = None


class GateApproved(Event):
    step_id: str
    by: str
    feedback: str = ""
    selections: list[str] = pydantic.Field(default_factory=list)


class GateRejected(Event):
    step_id: str
    by: str
    feedback: str = ""


# -- leases and decisions ------------------------------------------------------


def _fold_time(value: Any) -> datetime:
    """A time as the fold reads it (``aware_time``): what it would not read is refused, not dropped."""
    moment = aware_time(value)
    if moment is None:
        raise ValueError(
            f"not an ISO 8601 time with a timezone, from {EARLIEST_TIME.date()} "
            f"to before {LATEST_TIME.date()} in UTC"
        )
    return moment


AwareTime = Annotated[datetime, pydantic.BeforeValidator(_fold_time)]
"""A time the read models keep on both backends: aware, within ``EARLIEST_TIME`` .. ``LATEST_TIME``."""


class LeaseAcquired(Event):
    owner_token: str
    expires_at: AwareTime
    generation: Int32


class LeaseReleased(Event):
    owner_token: str
    generation: Int32


class DecisionRecorded(Event):
    """Why an agent did what it did: the record an audit asks for."""

    actor: str
    decision: str
    rationale: str = ""
    inputs: dict[str, Any] = pydantic.Field(default_factory=dict)
    alternatives: list[Any] = pydantic.Field(default_factory=list)
    model: str | None = None
    tool: str | None = None
    confidence: float | None = None
    step_id: str | None = None


FLOW_EVENTS: tuple[type[Event], ...] = (
    FlowStarted,
    FlowForked,
    FlowAdvanced,
    FlowWaiting,
    FlowResumed,
    FlowCancelRequested,
    FlowCancelled,
    FlowFinished,
    FlowFailed,
    StepScheduled,
    StepStarted,
    StepCompleted,
    StepFailed,
    StepSkipped,
    StepTimedOut,
    StepRetried,
    GateOpened,
    GateApproved,
    GateRejected,
    LeaseAcquired,
    LeaseReleased,
    DecisionRecorded,
)


def flow_registry() -> EventRegistry:
    """A registry holding the flow vocabulary."""
    return EventRegistry(FLOW_EVENTS)


# -- the shape of a fork's snapshot, checked when a FlowForked is appended ------------------


def _aware(value: str) -> str:
    _fold_time(value)
    return value


_Time = Annotated[str, pydantic.AfterValidator(_aware)]


class _SnapshotFlow(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True)
    flow_id: str
    controller_id: str
    goal: str
    owner_session_key: str
    requester_origin: str | None = None
    parent_flow_id: str | None = None
    state: dict[str, Any]
    status: Literal["running", "waiting", "finished", "failed", "cancelled"] = "running"
    current_step: str | None = None
    wait: dict[str, Any] | None = None
    cancel_requested: bool = False
    result: Any = None
    error: dict[str, Any] | None = None
    revision: int = 0
    event_count: int = 0
    lease_owner: Any = None  # the fork starts without a lease: the origin's is not copied
    lease_generation: Any = 0
    lease_expires_at: Any = None
    created_at: _Time | None = None
    updated_at: _Time | None = None
    finished_at: _Time | None = None


class _SnapshotStep(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True)
    flow_id: str | None = None
    step_id: str
    name: str
    run_id: str
    task: dict[str, Any] = pydantic.Field(default_factory=dict)
    runtime: str | None = None
    position: Int32 = 0
    iteration: Int32 = 0
    child_session_key: str | None = None
    status: Literal["scheduled", "running", "completed", "failed", "skipped", "timed_out"] = "scheduled"
    attempts: Int32 = 0
    retry_count: Int32 = 0
    result: Any = None
    output: Any = None
    error: str | None = None
    reason: str | None = None
    gate_status: Literal["open", "approved", "rejected", "closed"] | None = None
    gate_prompt: str | None = None
    gate_options: list[dict[str, Any]] | None = None
    gate_timeout_seconds: float | None = None
    gate_by: str | None = None
    gate_feedback: str | None = None
    gate_selections: list[str] | None = None
    scheduled_at: _Time | None = None
    started_at: _Time | None = None
    finished_at: _Time | None = None
    updated_at: _Time | None = None
    revision: int = 0
    scheduled_revision: Int32 = 0


class _ForkSnapshot(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True)
    flow: _SnapshotFlow
    steps: dict[str, _SnapshotStep] = pydantic.Field(default_factory=dict)
