"""``FlowService``'s step and approval-gate commands: schedule, start, end and retry steps; decide gates."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pydantic

from eventstore import AppendResult, Event, Transaction
from eventstore.checks import check_text, shown, validation_message
from eventstore.errors import (
    FlowClosed,
    GateNotOpen,
    InvalidEvent,
    InvalidInput,
    InvalidTransition,
    SelectionNotAllowed,
)
from eventstore.flow_fold import FlowState, StepState
from eventstore.flows import (
    GateApproved,
    GateOpened,
    GateOption,
    GateRejected,
    StepCompleted,
    StepFailed,
    StepRetried,
    StepScheduled,
    StepSkipped,
    StepStarted,
    StepTimedOut,
)

from .command_loop import CommandLoop, Lease, _lease
from .transitions import (
    MAX_NAME_LENGTH,
    _as_stored,
    _Ending,
    _gate_is_open,
    _listed,
    _make,
    _mapping,
    _open_step,
    _who,
)


def _key(field: str, value: Any) -> str:
    """A step or run id to look up: text every backend stores and compares alike, as the event holds it.

    Checked before anything is read: pydantic would take bytes for text in the event while the
    lookup used the bytes, so the decision and the event would concern different steps.
    """
    check_text(field, value)
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidInput(
            f"{field} is {len(value)} characters long; names and keys take at most {MAX_NAME_LENGTH}"
        )
    return str(value)


def _unserialisable(event: Event, exc: Exception) -> InvalidEvent:
    """The error for an event pydantic cannot serialise (a circular or too deep value), as an append gives."""
    return InvalidEvent(f"{event.event_type} cannot be serialised: {exc}")


class StepCommands(CommandLoop):
    """The commands over steps and approval gates (a base of ``FlowService``; use ``FlowService``)."""

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
        step_id, run_id = _key("step_id", step_id), _key("run_id", run_id)
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
        step_id = _key("step_id", step_id)

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
                try:
                    stored = _as_stored(event)
                except (ValueError, RecursionError) as exc:
                    raise _unserialisable(event, exc) from exc
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
        step_id = _key("step_id", step_id)
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
        step_id = _key("step_id", step_id)
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
        step_id = _key("step_id", step_id)
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
                f"timeout_seconds must be None or a number of seconds > 0, not {shown(timeout_seconds)}"
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
        _who("by", by)
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
        _who("by", by)

        def decide(flow: FlowState, step: StepState) -> list[Event]:
            _gate_is_open(flow, step)
            return [_make(GateRejected, step_id=step_id, by=by, feedback=feedback)]

        return self._step_command(flow_id, step_id, decide, None, by, metadata, fenced=False)
