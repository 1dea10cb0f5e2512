"""``FlowService``: revision-checked commands that append flow events atomically.

Each command reads the flow (and step) from the inline read model inside the
write transaction, checks that the transition is allowed, and appends its
events with the revision it read; the inline projection updates the read
models in the same transaction. A refused command writes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pydantic

from eventstore import AppendResult, Event, EventStore, FlowNotFound, RevisionMismatch, Transaction
from eventstore.checks import validation_message
from eventstore.errors import (
    EventStoreError,
    FlowClosed,
    FlowExists,
    GateNotOpen,
    InvalidInput,
    InvalidTransition,
    LeaseHeld,
    LeaseLost,
    ProjectionError,
    SelectionNotAllowed,
    StepClosed,
    StepNotFound,
)
from eventstore.flows import (
    DecisionRecorded,
    FlowAdvanced,
    FlowCancelled,
    FlowCancelRequested,
    FlowFailed,
    FlowFinished,
    FlowResumed,
    FlowStarted,
    FlowState,
    FlowWaiting,
    GateApproved,
    GateOpened,
    GateOption,
    GateRejected,
    LeaseAcquired,
    LeaseReleased,
    StepCompleted,
    StepFailed,
    StepRetried,
    StepScheduled,
    StepSkipped,
    StepStarted,
    StepState,
    StepTimedOut,
)
from eventstore.preparation import check_flow_id

from .base import hold_appends
from .flows import FlowProjection

Decide = Callable[[Transaction, FlowState | None], Sequence[Event]]
_MAX_TTL = 366 * 24 * 3600  # a lease of more than a year is a bug, not a lease

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


def _lease(lease: Lease | None) -> Lease | None:
    if lease is not None and not isinstance(lease, Lease):
        raise InvalidInput(f"lease must be the Lease that acquire_lease returned, not {type(lease).__name__}")
    return lease


class _Stale(Exception):  # a signal between two methods, never raised to a caller
    """Internal: a command decided on a remembered state must be decided again from the rows."""


@dataclass(frozen=True, slots=True)
class _Ending:
    """How a step ends: its status, what makes a repeat identical, the verb for errors."""

    status: str
    same: Callable[[StepState], bool]
    verb: str


@dataclass(frozen=True, slots=True)
class Lease:
    """Proof of ownership of a flow, fenced by generation."""

    owner_token: str
    generation: int
    expires_at: datetime


class FlowService:
    """Commands over flows, steps, gates, leases and decisions."""

    def __init__(self, store: EventStore, *, retries: int = 5) -> None:
        found = [p for p in store.projections if isinstance(p, FlowProjection)]
        if not found:
            raise ProjectionError(
                "FlowService needs the flow read models: open the store with projections=[FlowProjection()]"
            )
        if type(retries) is not int or retries < 1:
            raise InvalidInput(f"retries must be an int >= 1, not {retries!r}")
        self.store = store
        self.projection = found[0]
        self.retries = retries

    # -- the command loop ------------------------------------------------------
    def _run(
        self,
        flow_id: str,
        decide: Decide,
        *,
        expected_revision: int | None,
        actor: str | None,
        metadata: Mapping[str, Any] | None,
        must_exist: bool = True,
    ) -> AppendResult:
        if expected_revision is not None and (type(expected_revision) is not int or expected_revision < 0):
            raise InvalidInput(f"expected_revision must be None or an int >= 0, not {expected_revision!r}")
        check_flow_id(flow_id)  # before any read: a lone surrogate is no driver's to encode
        meta = _mapping("metadata", metadata)
        if actor is not None:
            meta.setdefault("actor", actor)
        attempt, use_warm = 0, True
        while True:
            try:
                with self.store.transaction() as tx:
                    # The append lock first, as every append and rebuild takes it (on
                    # SQLite the write transaction is that lock): the read-model rows
                    # read below cannot change before this commits, and no lock-order
                    # inversion with a rebuild's swap is possible.
                    hold_appends(tx.connection)
                    if attempt:
                        self._catch_up(tx, flow_id)
                    # The first try may start from the state this process last committed;
                    # the append's revision check proves it current. Anything else (a
                    # refusal, a no-op, a conflict) is decided again from the rows, and
                    # that second look is not one of the caller's retries.
                    warm = use_warm and not attempt and self.projection.warm(tx, flow_id)
                    try:
                        result = self._attempt(tx, flow_id, decide, expected_revision, meta, must_exist, warm)
                    except EventStoreError as exc:
                        if warm:
                            raise _Stale from exc
                        raise
                self.projection.keep_warm(tx, flow_id)
                return result
            except _Stale:
                use_warm = False
            except RevisionMismatch:
                attempt += 1
                if expected_revision is not None or attempt >= self.retries:
                    raise

    def _attempt(
        self,
        tx: Transaction,
        flow_id: str,
        decide: Decide,
        expected_revision: int | None,
        metadata: dict[str, Any],
        must_exist: bool,
        warm: bool,
    ) -> AppendResult:
        flow = self.projection.load_flow(tx, flow_id)
        current = flow.revision if flow is not None else 0
        if flow is None and (current := tx.revision(flow_id)):
            # The log has events the read model has no flow for: a start by a writer without
            # the projection (fold it now), or events before any start.
            self._catch_up(tx, flow_id)
            flow = self.projection.load_flow(tx, flow_id)
        if flow is None and must_exist:
            raise FlowNotFound(flow_id)
        if expected_revision is not None and expected_revision != current:
            raise RevisionMismatch(flow_id, expected_revision, current)
        events = decide(tx, flow)
        if not events:
            if warm:
                raise _Stale  # a no-op reports the revision: read it from the rows
            return AppendResult(flow_id, current, (), ())
        return tx.append(flow_id, events, expected_revision=current, metadata=metadata)

    def _catch_up(self, tx: Transaction, flow_id: str) -> None:
        """Bring the flow's read model up to the log before deciding again.

        Runs under the append lock (taken by ``_run``): no append can commit
        between reading the read model and the log, which would fold events twice.
        """
        flow = self.projection.load_flow(tx, flow_id)
        behind = flow.revision if flow is not None else 0
        if tx.revision(flow_id) > behind:
            self.projection.apply(tx, list(self.store.read_flow(flow_id, from_revision=behind + 1)))

    def _step(self, tx: Transaction, flow: FlowState, step_id: str) -> StepState:
        step = self.projection.load_step(tx, flow.flow_id, step_id)
        if step is None:
            raise StepNotFound(flow.flow_id, step_id)
        return step

    def _now(self) -> datetime:
        return self.store.clock()

    # -- flows -------------------------------------------------------------------
    def start_flow(
        self,
        flow_id: str,
        *,
        controller_id: str,
        goal: str,
        owner_session_key: str,
        requester_origin: str | None = None,
        state: Mapping[str, Any] | None = None,
        parent_flow_id: str | None = None,
        actor: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AppendResult:
        event = _make(
            FlowStarted,
            controller_id=controller_id,
            goal=goal,
            owner_session_key=owner_session_key,
            requester_origin=requester_origin,
            state=_mapping("state", state),
            parent_flow_id=parent_flow_id,
        )

        def decide(tx: Transaction, flow: FlowState | None) -> list[Event]:
            if flow is not None:
                raise FlowExists(flow_id, "was already started", status=flow.status)
            return [event]

        return self._run(
            flow_id, decide, expected_revision=None, actor=actor, metadata=metadata, must_exist=False
        )

    def advance(
        self,
        flow_id: str,
        *,
        current_step: str | None = None,
        state_patch: Mapping[str, Any] | None = None,
        expected_revision: int | None = None,
        actor: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AppendResult:
        event = _make(
            FlowAdvanced, current_step=current_step, state_patch=_mapping("state_patch", state_patch)
        )
        return self._flow_command(
            flow_id, lambda flow: [event], "advance", expected_revision, actor, metadata
        )

    def wait(
        self,
        flow_id: str,
        *,
        waiting_for: str,
        details: Mapping[str, Any] | None = None,
        expected_revision: int | None = None,
        actor: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AppendResult:
        def decide(flow: FlowState) -> list[Event]:
            if flow.status == "waiting":
                raise InvalidTransition(flow_id, "is already waiting", status=flow.status)
            return [_make(FlowWaiting, waiting_for=waiting_for, details=_mapping("details", details))]

        return self._flow_command(flow_id, decide, "wait", expected_revision, actor, metadata)

    def resume(
        self,
        flow_id: str,
        *,
        by: str | None = None,
        input: Mapping[str, Any] | None = None,
        expected_revision: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AppendResult:
        def decide(flow: FlowState) -> list[Event]:
            if flow.status != "waiting":
                raise InvalidTransition(
                    flow_id, f"cannot resume: it is {flow.status}, not waiting", status=flow.status
                )
            return [_make(FlowResumed, by=by, input=_mapping("input", input))]

        return self._flow_command(flow_id, decide, "resume", expected_revision, by, metadata)

    def request_cancel(
        self, flow_id: str, *, by: str, reason: str = "", metadata: Mapping[str, Any] | None = None
    ) -> AppendResult:
        def decide(flow: FlowState) -> list[Event]:
            return [] if flow.cancel_requested else [_make(FlowCancelRequested, by=by, reason=reason)]

        return self._flow_command(flow_id, decide, "request cancellation of", None, by, metadata)

    def cancel(
        self,
        flow_id: str,
        *,
        reason: str = "",
        actor: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AppendResult:
        return self._end(flow_id, "cancelled", _make(FlowCancelled, reason=reason), actor, metadata)

    def finish(
        self,
        flow_id: str,
        *,
        result: Mapping[str, Any] | None = None,
        actor: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AppendResult:
        return self._end(
            flow_id, "finished", _make(FlowFinished, result=_mapping("result", result)), actor, metadata
        )

    def fail(
        self,
        flow_id: str,
        *,
        error: str,
        details: Mapping[str, Any] | None = None,
        actor: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AppendResult:
        return self._end(
            flow_id,
            "failed",
            _make(FlowFailed, error=error, details=_mapping("details", details)),
            actor,
            metadata,
        )

    def _end(
        self, flow_id: str, status: str, event: Event, actor: str | None, metadata: Mapping[str, Any] | None
    ) -> AppendResult:
        def decide(tx: Transaction, flow: FlowState | None) -> list[Event]:
            assert flow is not None  # _run checks existence
            if flow.terminal:
                if flow.status == status and _same_ending(flow, event):
                    return []
                if flow.status == status:
                    raise FlowClosed(flow_id, f"is already {status}, with a different outcome", status=status)
                raise FlowClosed(
                    flow_id, f"is already {flow.status}; it cannot become {status}", status=flow.status
                )
            return [event]

        return self._run(flow_id, decide, expected_revision=None, actor=actor, metadata=metadata)

    def _flow_command(
        self,
        flow_id: str,
        decide: Callable[[FlowState], list[Event]],
        verb: str,
        expected_revision: int | None,
        actor: str | None,
        metadata: Mapping[str, Any] | None,
    ) -> AppendResult:
        def checked(tx: Transaction, flow: FlowState | None) -> list[Event]:
            assert flow is not None  # _run checks existence
            if flow.terminal:
                raise FlowClosed(flow_id, f"is {flow.status}; cannot {verb} it", status=flow.status)
            return decide(flow)

        return self._run(
            flow_id, checked, expected_revision=expected_revision, actor=actor, metadata=metadata
        )

    # -- steps -------------------------------------------------------------------
    def schedule_step(
        self,
        flow_id: str,
        *,
        step_id: str,
        name: str,
        run_id: str,
        task: Mapping[str, Any] | None = None,
        runtime: str | None = None,
        position: int = 0,
        iteration: int = 0,
        child_session_key: str | None = None,
        lease: Lease | None = None,
        actor: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AppendResult:
        """Schedule a step; scheduling the same run id again returns without writing."""
        event = _make(
            StepScheduled,
            step_id=step_id,
            name=name,
            run_id=run_id,
            task=_mapping("task", task),
            runtime=runtime,
            position=position,
            iteration=iteration,
            child_session_key=child_session_key,
        )

        def decide(tx: Transaction, flow: FlowState | None) -> list[Event]:
            assert flow is not None  # _run checks existence
            if self.projection.find_run(tx, flow_id, run_id) is not None:
                return []
            if flow.terminal:
                raise FlowClosed(flow_id, f"is {flow.status}; cannot schedule steps", status=flow.status)
            self._check_lease(flow, lease)
            if self.projection.load_step(tx, flow_id, step_id) is not None:
                raise InvalidTransition(flow_id, "step id is already used by another run", step_id=step_id)
            return [event]

        lease = _lease(lease)
        if lease is not None and actor is None:
            actor = lease.owner_token
        return self._run(flow_id, decide, expected_revision=None, actor=actor, metadata=metadata)

    def _step_command(
        self,
        flow_id: str,
        step_id: str,
        decide: Callable[[FlowState, StepState], list[Event]],
        lease: Lease | None,
        actor: str | None,
        metadata: Mapping[str, Any] | None,
        *,
        fenced: bool = True,
    ) -> AppendResult:
        def checked(tx: Transaction, flow: FlowState | None) -> list[Event]:
            assert flow is not None  # _run checks existence
            step = self._step(tx, flow, step_id)
            if fenced:
                self._check_lease(flow, lease)
            return decide(flow, step)

        lease = _lease(lease)
        if lease is not None and actor is None:
            actor = lease.owner_token
        return self._run(flow_id, checked, expected_revision=None, actor=actor, metadata=metadata)

    def start_step(
        self,
        flow_id: str,
        step_id: str,
        *,
        lease: Lease | None = None,
        actor: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AppendResult:
        def decide(flow: FlowState, step: StepState) -> list[Event]:
            _open_step(flow, step, "start")
            if step.status != "scheduled":
                raise InvalidTransition(
                    flow.flow_id, f"cannot start a {step.status} step", step_id=step_id, status=step.status
                )
            return [_make(StepStarted, step_id=step_id)]

        return self._step_command(flow_id, step_id, decide, lease, actor, metadata)

    def complete_step(
        self,
        flow_id: str,
        step_id: str,
        *,
        result: Mapping[str, Any] | None = None,
        output: Mapping[str, Any] | None = None,
        lease: Lease | None = None,
        actor: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AppendResult:
        result_dict = _mapping("result", result)
        output_dict = _mapping("output", output) if output is not None else None

        def decide(flow: FlowState, step: StepState) -> list[Event]:
            event = _make(StepCompleted, step_id=step_id, result=result_dict, output=output_dict)
            if step.status == "completed":
                stored = _as_stored(event)
                if (step.result, step.output) == (stored["result"], stored["output"]):
                    return []
            _open_step(flow, step, "complete")
            if step.gate_status == "open":
                raise GateNotOpen(
                    flow.flow_id, "its approval gate is still waiting for a decision", step_id=step_id
                )
            return [event]

        return self._step_command(flow_id, step_id, decide, lease, actor, metadata)

    def fail_step(
        self,
        flow_id: str,
        step_id: str,
        *,
        error: str,
        details: Mapping[str, Any] | None = None,
        lease: Lease | None = None,
        actor: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AppendResult:
        event = _make(StepFailed, step_id=step_id, error=error, details=_mapping("details", details))
        ending = _Ending("failed", lambda step: step.error == error, "fail")
        return self._end_step(flow_id, step_id, event, ending, lease, actor, metadata)

    def skip_step(
        self,
        flow_id: str,
        step_id: str,
        *,
        reason: str = "",
        lease: Lease | None = None,
        actor: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AppendResult:
        event = _make(StepSkipped, step_id=step_id, reason=reason)
        ending = _Ending("skipped", lambda step: step.reason == reason, "skip")
        return self._end_step(flow_id, step_id, event, ending, lease, actor, metadata)

    def time_out_step(
        self,
        flow_id: str,
        step_id: str,
        *,
        reason: str = "",
        lease: Lease | None = None,
        actor: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AppendResult:
        event = _make(StepTimedOut, step_id=step_id, reason=reason)
        ending = _Ending("timed_out", lambda step: step.reason == reason, "time out")
        return self._end_step(flow_id, step_id, event, ending, lease, actor, metadata)

    def _end_step(
        self,
        flow_id: str,
        step_id: str,
        event: Event,
        ending: _Ending,
        lease: Lease | None,
        actor: str | None,
        metadata: Mapping[str, Any] | None,
    ) -> AppendResult:
        """End a step. Repeating the identical ending is a no-op; changing a terminal step is refused."""

        def decide(flow: FlowState, step: StepState) -> list[Event]:
            if step.status == ending.status and ending.same(step):
                return []
            _open_step(flow, step, ending.verb)
            return [event]

        return self._step_command(flow_id, step_id, decide, lease, actor, metadata)

    def retry_step(
        self,
        flow_id: str,
        step_id: str,
        *,
        error: str = "",
        lease: Lease | None = None,
        actor: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AppendResult:
        """A running attempt failed and will be retried: the step goes back to scheduled."""

        def decide(flow: FlowState, step: StepState) -> list[Event]:
            _open_step(flow, step, "retry")
            if step.status != "running":
                raise InvalidTransition(
                    flow.flow_id,
                    f"only a running step can be retried, not a {step.status} one",
                    step_id=step_id,
                    status=step.status,
                )
            return [_make(StepRetried, step_id=step_id, retry_count=step.retry_count + 1, error=error)]

        return self._step_command(flow_id, step_id, decide, lease, actor, metadata)

    # -- approval gates ------------------------------------------------------------
    def open_gate(
        self,
        flow_id: str,
        step_id: str,
        *,
        prompt: str,
        options: Sequence[Mapping[str, str]] = (),
        timeout_seconds: float | None = None,
        actor: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AppendResult:
        if timeout_seconds is not None and (
            isinstance(timeout_seconds, bool)
            or not isinstance(timeout_seconds, int | float)
            or not 0 < timeout_seconds < math.inf
        ):
            raise InvalidInput(
                f"timeout_seconds must be None or a number of seconds > 0, not {timeout_seconds!r}"
            )
        try:
            parsed = [GateOption.model_validate(option) for option in _listed("options", options)]
        except pydantic.ValidationError as exc:
            raise InvalidInput(
                f"gate options must be {{value, label}} objects: {validation_message(exc)}"
            ) from exc

        def decide(flow: FlowState, step: StepState) -> list[Event]:
            _open_step(flow, step, "open a gate on")
            if step.gate_status == "open":
                raise InvalidTransition(flow.flow_id, "already has an open gate", step_id=step_id)
            return [
                _make(
                    GateOpened,
                    step_id=step_id,
                    prompt=prompt,
                    options=parsed,
                    timeout_seconds=timeout_seconds,
                )
            ]

        return self._step_command(flow_id, step_id, decide, None, actor, metadata, fenced=False)

    def approve_gate(
        self,
        flow_id: str,
        step_id: str,
        *,
        by: str,
        feedback: str = "",
        selections: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
    ) -> AppendResult:
        chosen = _listed("selections", selections)

        def decide(flow: FlowState, step: StepState) -> list[Event]:
            _gate_is_open(flow, step)
            allowed = [option["value"] for option in step.gate_options or []]
            if any(value not in allowed for value in chosen):
                raise SelectionNotAllowed(flow.flow_id, step_id, chosen, allowed)
            return [_make(GateApproved, step_id=step_id, by=by, feedback=feedback, selections=chosen)]

        return self._step_command(flow_id, step_id, decide, None, by, metadata, fenced=False)

    def reject_gate(
        self,
        flow_id: str,
        step_id: str,
        *,
        by: str,
        feedback: str = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> AppendResult:
        def decide(flow: FlowState, step: StepState) -> list[Event]:
            _gate_is_open(flow, step)
            return [_make(GateRejected, step_id=step_id, by=by, feedback=feedback)]

        return self._step_command(flow_id, step_id, decide, None, by, metadata, fenced=False)

    # -- leases --------------------------------------------------------------------
    def acquire_lease(
        self, flow_id: str, *, owner_token: str, ttl_seconds: float, metadata: Mapping[str, Any] | None = None
    ) -> Lease:
        """Take or renew the flow's lease. A new owner gets the next generation."""
        if not owner_token or not isinstance(ttl_seconds, int | float) or not 0 < ttl_seconds <= _MAX_TTL:
            raise InvalidInput(f"a lease needs an owner token and ttl_seconds between 0 and {_MAX_TTL:,}")
        acquired: list[Lease] = []

        def decide(tx: Transaction, flow: FlowState | None) -> list[Event]:
            assert flow is not None  # _run checks existence
            if flow.terminal:
                raise FlowClosed(flow_id, f"is {flow.status}; it cannot be leased", status=flow.status)
            now = self._now()
            if flow.lease_owner not in (None, owner_token) and _active(flow, now):
                raise LeaseHeld(flow_id, f"is leased by {flow.lease_owner!r} until {flow.lease_expires_at}")
            generation = (
                flow.lease_generation if flow.lease_owner == owner_token else flow.lease_generation + 1
            )
            lease = Lease(owner_token, generation, now + timedelta(seconds=ttl_seconds))
            acquired[:] = [lease]
            return [
                _make(
                    LeaseAcquired, owner_token=owner_token, expires_at=lease.expires_at, generation=generation
                )
            ]

        self._run(flow_id, decide, expected_revision=None, actor=owner_token, metadata=metadata)
        return acquired[0]

    def release_lease(
        self, flow_id: str, lease: Lease, *, metadata: Mapping[str, Any] | None = None
    ) -> AppendResult:
        if _lease(lease) is None:
            raise InvalidInput("release_lease needs the Lease that acquire_lease returned")

        def decide(tx: Transaction, flow: FlowState | None) -> list[Event]:
            assert flow is not None  # _run checks existence
            self._check_lease(flow, lease)
            return [_make(LeaseReleased, owner_token=lease.owner_token, generation=lease.generation)]

        return self._run(flow_id, decide, expected_revision=None, actor=lease.owner_token, metadata=metadata)

    def _check_lease(self, flow: FlowState, lease: Lease | None) -> None:
        """Fencing: a stale generation is refused, and so is a command without the lease while one is held."""
        if lease is None:
            if flow.lease_owner is not None and _active(flow, self._now()):
                raise LeaseLost(
                    flow.flow_id,
                    owner=None,
                    generation=None,
                    holder=flow.lease_owner,
                    current=flow.lease_generation,
                )
            return
        if lease.owner_token != flow.lease_owner or lease.generation != flow.lease_generation:
            raise LeaseLost(
                flow.flow_id,
                owner=lease.owner_token,
                generation=lease.generation,
                holder=flow.lease_owner,
                current=flow.lease_generation,
            )

    # -- decisions -------------------------------------------------------------------
    def record_decision(
        self,
        flow_id: str,
        *,
        actor: str,
        decision: str,
        rationale: str = "",
        inputs: Mapping[str, Any] | None = None,
        alternatives: Sequence[Any] = (),
        model: str | None = None,
        tool: str | None = None,
        confidence: float | None = None,
        step_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AppendResult:
        """Record why an agent did what it did. Allowed in any state of the flow."""
        event = _make(
            DecisionRecorded,
            actor=actor,
            decision=decision,
            rationale=rationale,
            inputs=_mapping("inputs", inputs),
            alternatives=_listed("alternatives", alternatives),
            model=model,
            tool=tool,
            confidence=confidence,
            step_id=step_id,
        )
        return self._run(
            flow_id, lambda tx, flow: [event], expected_revision=None, actor=actor, metadata=metadata
        )


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
