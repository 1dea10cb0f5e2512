"""A flow's state and its one fold.

``fold`` is the single function that turns a flow's events (the vocabulary in
``eventstore.flows``) into its state. The inline read models, rebuilds and
time travel all fold with it, so they cannot drift apart. Also here: a flow
and its steps as plain JSON, the form snapshots, forks and diffs keep.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from .checks import shown
from .errors import InvalidInput
from .events import FoldInput, RecordedEvent
from .integrity import format_time

if TYPE_CHECKING:
    from .snapshots import Steps

# -- state -----------------------------------------------------------------

FOLD_VERSION = 6  # 6: a state_patch's object under a key that held no object drops its nulls (RFC 7396)
# 5: a flow's owner is the first JSON string of the store's owner_session (else "");
# a null field of FlowStarted is "", not "None"; any FlowForked starts a flow, even with no snapshot flow
# 4: a time outside EARLIEST_TIME..LATEST_TIME is no time (not one every zone can show)
# 3: steps keep the revision they were scheduled at; FlowForked folds whatever it holds
# 2: a flow starts once; a later FlowStarted or FlowForked in its stream restarts nothing
"""Bumped whenever ``fold`` changes what it produces: snapshots made by another
version are ignored, and the flow projection's version follows it."""

FLOW_TERMINAL = frozenset({"finished", "failed", "cancelled"})
FLOW_STATUSES = ("running", "waiting", "finished", "failed", "cancelled")
STEP_STATUSES = ("scheduled", "running", "completed", "failed", "skipped", "timed_out")
STEP_TERMINAL = frozenset({"completed", "failed", "skipped", "timed_out"})
GATE_STATUSES = ("open", "approved", "rejected", "closed")


@dataclass(slots=True)
class StepState:
    """One step of a flow, as the fold leaves it (mutable working state)."""

    flow_id: str
    step_id: str
    name: str
    run_id: str
    task: dict[str, Any]
    runtime: str | None
    position: int
    iteration: int
    child_session_key: str | None
    status: str = "scheduled"
    attempts: int = 0
    retry_count: int = 0
    result: dict[str, Any] | None = None
    output: dict[str, Any] | None = None
    error: str | None = None
    reason: str | None = None
    gate_status: str | None = None
    gate_prompt: str | None = None
    gate_options: list[dict[str, str]] | None = None
    gate_timeout_seconds: float | None = None
    gate_by: str | None = None
    gate_feedback: str | None = None
    gate_selections: list[str] | None = None
    scheduled_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None
    revision: int = 0
    scheduled_revision: int = 0
    """The flow revision of its ``StepScheduled``: which of two steps scheduled at once came first."""

    @property
    def terminal(self) -> bool:
        return self.status in STEP_TERMINAL


@dataclass(slots=True)
class FlowState:
    """A flow, as the fold leaves it (mutable working state)."""

    flow_id: str
    controller_id: str
    goal: str
    owner_session_key: str
    requester_origin: str | None
    parent_flow_id: str | None
    state: dict[str, Any]
    status: str = "running"
    current_step: str | None = None
    wait: dict[str, Any] | None = None
    cancel_requested: bool = False
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    revision: int = 0
    event_count: int = 0
    lease_owner: str | None = None
    lease_generation: int = 0
    lease_expires_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def terminal(self) -> bool:
        return self.status in FLOW_TERMINAL


def _steps(states: Iterable[StepState] = ()) -> Steps:
    from .snapshots import Steps  # it builds on this module's states

    return Steps(states)


@dataclass(slots=True)
class FlowView:
    """A flow and all its steps: what replay and time travel fold into.

    ``steps`` maps step ids to states in scheduling order; read from a
    snapshot, it loads a part of them only when one is asked for
    (``eventstore.snapshots.Steps``).
    """

    flow: FlowState | None = None
    steps: Steps = field(default_factory=_steps)

    def apply(self, event: RecordedEvent | FoldInput) -> None:
        step_id = event.data.get("step_id") if event.type in STEP_EVENT_TYPES else None
        step = self.steps.get(step_id) if isinstance(step_id, str) else None
        started = self.flow is None
        self.flow, step = fold(self.flow, step, event)
        if step is not None:
            self.steps[step.step_id] = step
        if event.type == "FlowForked" and started and self.flow is not None:
            self.steps = _steps(forked_steps(event))

    def copy(self) -> FlowView:
        return copy.deepcopy(self)


STEP_EVENT_TYPES = frozenset(
    {
        "StepScheduled",
        "StepStarted",
        "StepCompleted",
        "StepFailed",
        "StepSkipped",
        "StepTimedOut",
        "StepRetried",
        "GateOpened",
        "GateApproved",
        "GateRejected",
    }
)


def _int(value: Any, default: int) -> int:
    """An int from event data, or ``default``: the fold must never fail on what the log holds."""
    if type(value) is int:
        return value
    if value is None:  # an absent field: no exception to raise and catch
        return default
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return default


def _int32(value: Any) -> int:
    """An int a 32-bit column holds, from event data, or 0: SQLite and PostgreSQL then store it alike."""
    number = _int(value, 0)
    return number if -(2**31) <= number < 2**31 else 0


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _opt_str(value: Any) -> str | None:
    return value if value is None or type(value) is str else str(value)


def _str(value: Any) -> str:
    return "" if value is None else value if type(value) is str else str(value)


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


EARLIEST_TIME = datetime(1, 1, 2, tzinfo=UTC)
LATEST_TIME = datetime(9999, 12, 31, tzinfo=UTC)
"""The times event data may carry lie from ``EARLIEST_TIME`` up to (not including) ``LATEST_TIME``.

A day inside the years 1 to 9999 at either end, so that the time is a
``datetime`` in every time zone: in UTC, as the read models store it, and in
whatever time zone a PostgreSQL session reads it back in.
"""


def aware_time(value: Any) -> datetime | None:
    """An aware datetime from event data (ISO 8601 text with a UTC offset) in the times' range, or None.

    The vocabulary accepts the times this reads, and only those; anything
    else the log holds (written by a store without the flow projection) is
    not a time to the fold.
    """
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
    elif isinstance(value, datetime):
        moment = value
    else:
        return None
    if moment.utcoffset() is None or not EARLIEST_TIME <= moment < LATEST_TIME:
        return None
    return moment


def _json_copy(value: Any) -> Any:
    """A deep copy of JSON data (an event's data is plain JSON), several times faster than deepcopy.

    The fold copies what it keeps from an event, so that patching a flow's
    state later never changes an event someone else holds.
    """
    if isinstance(value, dict | list):
        return orjson.loads(orjson.dumps(value))
    return value


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7396 JSON merge patch of ``patch`` onto ``target``, in place; both must be mappings."""
    if not isinstance(target, dict) or not isinstance(patch, Mapping):
        raise InvalidInput(f"merge_patch takes two mappings, not {shown(target)} and {shown(patch)}")
    return _merged(target, patch)


def _merged(target: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):  # merged into an object, or into {} (its nulls removed too)
            current = target.get(key)
            target[key] = _merged(current if isinstance(current, dict) else {}, value)
        else:
            target[key] = _json_copy(value)
    return target


def fold(
    flow: FlowState | None, step: StepState | None, event: RecordedEvent | FoldInput
) -> tuple[FlowState | None, StepState | None]:
    """Apply one event to a flow and (for step events) its step, in place.

    Events of types outside the vocabulary still count: they advance the
    flow's revision and event count. Events before ``FlowStarted`` are ignored;
    a second ``FlowStarted`` (or ``FlowForked``) in a started flow's stream,
    which only a writer bypassing ``FlowService`` can append, counts like
    any other event and changes nothing else.
    The fold never fails on what the log holds: a field missing from an old or
    hand-written event falls back to an empty value (stores with the flow
    projection validate vocabulary events when they are appended).
    """
    data = event.data
    at = event.recorded_at
    kind = event.type
    if flow is not None:
        pass  # a flow starts once: a later start in its stream only counts, as any other event
    elif kind == "FlowForked":
        flow = _forked_flow(event)
    elif kind == "FlowStarted":
        flow = FlowState(
            flow_id=event.flow_id,
            controller_id=_str(data.get("controller_id")),
            goal=_str(data.get("goal")),
            owner_session_key=owner_of(data),
            requester_origin=_opt_str(data.get("requester_origin")),
            parent_flow_id=_opt_str(data.get("parent_flow_id")),
            state=_json_copy(_dict(data.get("state"))),
            created_at=at,
        )
    if flow is None:
        return None, None
    flow.revision = event.revision
    flow.event_count += 1
    flow.updated_at = at
    handler = _FLOW_HANDLERS.get(kind)
    if handler is not None:
        handler(flow, data, at)
        return flow, None
    step_handler = _STEP_HANDLERS.get(kind)
    if step_handler is None:
        return flow, None
    if kind == "StepScheduled" and isinstance(data.get("step_id"), str):
        step = StepState(
            flow_id=flow.flow_id,
            step_id=data["step_id"],
            name=str(data.get("name", "")),
            run_id=str(data.get("run_id", "")),
            task=_json_copy(_dict(data.get("task"))),
            runtime=_opt_str(data.get("runtime")),
            position=_int32(data.get("position")),
            iteration=_int32(data.get("iteration")),
            child_session_key=_opt_str(data.get("child_session_key")),
            scheduled_at=at,
            scheduled_revision=event.revision,
        )
    if step is None:
        return flow, None
    step.revision = event.revision
    step.updated_at = at
    step_handler(step, data, at)
    return flow, step


def _advanced(flow: FlowState, data: dict[str, Any], at: datetime) -> None:
    if data.get("current_step") is not None:
        flow.current_step = str(data["current_step"])
    _merged(flow.state, _dict(data.get("state_patch")))


def _waiting(flow: FlowState, data: dict[str, Any], at: datetime) -> None:
    flow.status = "waiting"
    flow.wait = {"waiting_for": data.get("waiting_for", ""), "details": data.get("details") or {}}


def _resumed(flow: FlowState, data: dict[str, Any], at: datetime) -> None:
    flow.status = "running"
    flow.wait = None


def _cancel_requested(flow: FlowState, data: dict[str, Any], at: datetime) -> None:
    flow.cancel_requested = True


def _ended(status: str) -> Any:
    def handler(flow: FlowState, data: dict[str, Any], at: datetime) -> None:
        flow.status = status
        flow.wait = None
        flow.finished_at = at
        if status == "finished":
            flow.result = data.get("result") or {}
        elif status == "failed":
            flow.error = {"error": data.get("error", ""), "details": data.get("details") or {}}
        else:
            flow.error = {"error": "cancelled", "details": {"reason": data.get("reason", "")}}

    return handler


def _lease_acquired(flow: FlowState, data: dict[str, Any], at: datetime) -> None:
    flow.lease_owner = _opt_str(data.get("owner_token"))
    flow.lease_generation = _int32(data.get("generation"))
    expires = data.get("expires_at")
    flow.lease_expires_at = aware_time(expires)


def _lease_released(flow: FlowState, data: dict[str, Any], at: datetime) -> None:
    flow.lease_owner = None
    flow.lease_expires_at = None


def _noop(flow: FlowState, data: dict[str, Any], at: datetime) -> None:
    return None


_FLOW_HANDLERS = {
    "FlowStarted": _noop,
    "FlowForked": _noop,
    "FlowAdvanced": _advanced,
    "FlowWaiting": _waiting,
    "FlowResumed": _resumed,
    "FlowCancelRequested": _cancel_requested,
    "FlowCancelled": _ended("cancelled"),
    "FlowFinished": _ended("finished"),
    "FlowFailed": _ended("failed"),
    "LeaseAcquired": _lease_acquired,
    "LeaseReleased": _lease_released,
    "DecisionRecorded": _noop,
}


def _step_started(step: StepState, data: dict[str, Any], at: datetime) -> None:
    step.status = "running"
    step.attempts += 1
    step.started_at = at


def _step_ended(status: str) -> Any:
    def handler(step: StepState, data: dict[str, Any], at: datetime) -> None:
        step.status = status
        step.finished_at = at
        if status == "completed":
            step.result = data.get("result") or {}
            step.output = data.get("output")
        elif status == "failed":
            step.error = str(data.get("error", ""))
        else:
            step.reason = str(data.get("reason", ""))
        if step.gate_status == "open":
            step.gate_status = "closed"

    return handler


def _step_retried(step: StepState, data: dict[str, Any], at: datetime) -> None:
    step.status = "scheduled"
    step.retry_count = _int32(_int(data.get("retry_count"), step.retry_count + 1))
    step.error = _opt_str(data.get("error") or None)


def _gate_opened(step: StepState, data: dict[str, Any], at: datetime) -> None:
    step.gate_status = "open"
    step.gate_prompt = str(data.get("prompt", ""))
    step.gate_options = [dict(o) for o in _list(data.get("options")) if isinstance(o, dict)]
    step.gate_timeout_seconds = _float(data.get("timeout_seconds"))
    step.gate_by = step.gate_feedback = None
    step.gate_selections = None


def _gate_decided(status: str) -> Any:
    def handler(step: StepState, data: dict[str, Any], at: datetime) -> None:
        step.gate_status = status
        step.gate_by = str(data.get("by", ""))
        step.gate_feedback = str(data.get("feedback", ""))
        step.gate_selections = [str(value) for value in _list(data.get("selections"))]

    return handler


_STEP_HANDLERS = {
    "StepScheduled": lambda step, data, at: None,
    "StepStarted": _step_started,
    "StepCompleted": _step_ended("completed"),
    "StepFailed": _step_ended("failed"),
    "StepSkipped": _step_ended("skipped"),
    "StepTimedOut": _step_ended("timed_out"),
    "StepRetried": _step_retried,
    "GateOpened": _gate_opened,
    "GateApproved": _gate_decided("approved"),
    "GateRejected": _gate_decided("rejected"),
}


# -- views as JSON (snapshots, forks, diffs) -----------------------------------

_TIME_FIELDS = frozenset(
    {"lease_expires_at", "created_at", "updated_at", "finished_at", "scheduled_at", "started_at"}
)


def _state_to_dict(state: FlowState | StepState) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in state.__dataclass_fields__:
        value = getattr(state, name)
        out[name] = format_time(value) if isinstance(value, datetime) else _json_copy(value)
    return out


def _times(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with its times as datetimes: a step has 29 fields, of which only these can be times."""
    out = dict(fields)
    for name in _TIME_FIELDS:
        value = out.get(name)
        if isinstance(value, str):
            out[name] = datetime.fromisoformat(value)
    return out


def view_to_dict(view: FlowView) -> dict[str, Any]:
    """A flow and its steps as plain JSON (times as canonical UTC text)."""
    return {
        "flow": None if view.flow is None else _state_to_dict(view.flow),
        "steps": {step_id: _state_to_dict(step) for step_id, step in sorted(view.steps.read_items())},
    }


def view_from_dict(data: dict[str, Any]) -> FlowView:
    """The inverse of ``view_to_dict``."""
    flow = data.get("flow")
    return FlowView(
        flow=None if flow is None else flow_from_dict(flow),
        steps=_steps(step_from_dict(step) for step in data.get("steps", {}).values()),
    )


def flow_from_dict(data: dict[str, Any]) -> FlowState:
    """A flow state from its plain JSON form (``view_to_dict``'s)."""
    return FlowState(**_times(data))


def step_from_dict(data: dict[str, Any]) -> StepState:
    """A step state from its plain JSON form (``view_to_dict``'s)."""
    return StepState(**_times(data))


def step_to_dict(step: StepState) -> dict[str, Any]:
    """A step state as plain JSON (times as canonical UTC text)."""
    return _state_to_dict(step)


def flow_to_dict(flow: FlowState) -> dict[str, Any]:
    """A flow state as plain JSON (times as canonical UTC text)."""
    return _state_to_dict(flow)


def copy_step(step: StepState) -> StepState:
    """A deep copy of a step state, several times faster than ``copy.deepcopy``.

    Its other fields are strings, numbers and times, which no one changes in
    place; only the containers are copied, their JSON deeply, anything else
    a caller put there by ``copy.deepcopy``.
    """
    clone = copy.copy(step)
    for name in _STEP_CONTAINERS:
        value = getattr(step, name)
        if value is not None:
            setattr(clone, name, _deep(value))
    return clone


_STEP_CONTAINERS = ("task", "result", "output", "gate_options", "gate_selections")


def _deep(value: Any) -> Any:
    if type(value) is dict:
        return {key: _deep(item) for key, item in value.items()}
    if type(value) is list:
        return [_deep(item) for item in value]
    if value is None or type(value) in (str, int, float, bool):
        return value
    return copy.deepcopy(value)


def owner_of(data: dict[str, Any]) -> str:
    """The session that owns the flow a ``FlowStarted`` or ``FlowForked`` with ``data`` starts: "" for none.

    The same rule as the store's ``schema.owner_session`` (which the audit and
    export session filters use): the first of ``owner_session_key`` and
    ``snapshot.flow.owner_session_key`` that is a JSON string.
    """
    origin = _dict(_dict(data.get("snapshot")).get("flow"))
    for value in (data.get("owner_session_key"), origin.get("owner_session_key")):
        if isinstance(value, str):
            return value
    return ""


def _forked_flow(event: RecordedEvent | FoldInput) -> FlowState:
    """The flow a ``FlowForked`` starts: its snapshot's flow, whatever it holds, as a fold can store it.

    A snapshot without a flow still starts one (with empty fields), as the
    store's session filters count it as the flow's start.
    """
    origin = _dict(_dict(event.data.get("snapshot")).get("flow"))
    status = origin.get("status")
    return FlowState(
        flow_id=event.flow_id,
        controller_id=_str(origin.get("controller_id")),
        goal=_str(origin.get("goal")),
        owner_session_key=owner_of(event.data),
        requester_origin=_opt_str(origin.get("requester_origin")),
        parent_flow_id=_opt_str(event.data.get("origin_flow_id")),
        state=_json_copy(_dict(origin.get("state"))),
        status=status if status in FLOW_STATUSES else "running",
        current_step=_opt_str(origin.get("current_step")),
        wait=_json_copy(origin.get("wait")),
        cancel_requested=origin.get("cancel_requested") is True,
        result=_json_copy(origin.get("result")),
        error=_json_copy(origin.get("error")),
        created_at=event.recorded_at,
        finished_at=aware_time(origin.get("finished_at")),
    )


def forked_steps(event: RecordedEvent | FoldInput) -> list[StepState]:
    """The steps a ``FlowForked`` event copies from its origin, as steps of the fork.

    Like ``_forked_flow``, it takes what the snapshot holds: a missing or
    malformed field becomes what a fresh step would have.
    """
    out = []
    for key, step in _dict(_dict(event.data.get("snapshot")).get("steps")).items():
        if not isinstance(step, dict):
            continue
        step_id, status, gate = step.get("step_id"), step.get("status"), step.get("gate_status")
        options, selections = step.get("gate_options"), step.get("gate_selections")
        if options is not None:
            options = [dict(o) for o in _list(options) if isinstance(o, dict)]
        out.append(
            StepState(
                flow_id=event.flow_id,
                step_id=step_id if isinstance(step_id, str) else key,
                name=_str(step.get("name")),
                run_id=_str(step.get("run_id")),
                task=_json_copy(_dict(step.get("task"))),
                runtime=_opt_str(step.get("runtime")),
                position=_int32(step.get("position")),
                iteration=_int32(step.get("iteration")),
                child_session_key=_opt_str(step.get("child_session_key")),
                status=status if status in STEP_STATUSES else "scheduled",
                attempts=_int32(step.get("attempts")),
                retry_count=_int32(step.get("retry_count")),
                result=_json_copy(step.get("result")),
                output=_json_copy(step.get("output")),
                error=_opt_str(step.get("error")),
                reason=_opt_str(step.get("reason")),
                gate_status=gate if gate in GATE_STATUSES else None,
                gate_prompt=_opt_str(step.get("gate_prompt")),
                gate_options=options,
                gate_timeout_seconds=_float(step.get("gate_timeout_seconds")),
                gate_by=_opt_str(step.get("gate_by")),
                gate_feedback=_opt_str(step.get("gate_feedback")),
                gate_selections=None if selections is None else [str(v) for v in _list(selections)],
                scheduled_at=aware_time(step.get("scheduled_at")),
                started_at=aware_time(step.get("started_at")),
                finished_at=aware_time(step.get("finished_at")),
                updated_at=aware_time(step.get("updated_at")),
                revision=event.revision,
                scheduled_revision=_int32(step.get("scheduled_revision")),
            )
        )
    return out
