"""``FlowService``: revision-checked commands that append flow events atomically.

Each command reads the flow (and step) from the inline read model inside the
write transaction, checks that the transition is allowed, and appends its
events with the revision it read; the inline projection updates the read
models in the same transaction. A refused command writes nothing.

The command loop is ``command_loop.CommandLoop``, the step and gate commands
``step_commands.StepCommands`` (the bases of ``FlowService``), and the checks
the decisions use are in ``transitions``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from eventstore import AppendResult, Event, Transaction
from eventstore.errors import FlowClosed, FlowExists, InvalidInput, InvalidTransition, LeaseHeld
from eventstore.flow_fold import LATEST_TIME, FlowState
from eventstore.flows import (
    DecisionRecorded,
    FlowAdvanced,
    FlowCancelled,
    FlowCancelRequested,
    FlowFailed,
    FlowFinished,
    FlowResumed,
    FlowStarted,
    FlowWaiting,
    LeaseAcquired,
    LeaseReleased,
)

from .command_loop import Lease, _lease
from .step_commands import StepCommands, _unserialisable
from .transitions import MAX_NAME_LENGTH, _active, _listed, _make, _mapping, _same_ending, _who

__all__ = ["MAX_NAME_LENGTH", "FlowService", "Lease"]

_MAX_TTL = 366 * 24 * 3600  # a lease of more than a year is a bug, not a lease


class FlowService(StepCommands):
    """Commands over flows, steps, gates, leases and decisions."""

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
        if by is not None:
            _who("by", by)

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
        _who("by", by)

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
                try:
                    same = flow.status == status and _same_ending(flow, event)
                except (ValueError, RecursionError) as exc:
                    raise _unserialisable(event, exc) from exc
                if same:
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

    # -- leases --------------------------------------------------------------------
    def acquire_lease(
        self, flow_id: str, *, owner_token: str, ttl_seconds: float, metadata: Mapping[str, Any] | None = None
    ) -> Lease:
        """Take or renew the flow's lease. A new owner gets the next generation."""
        _who("owner_token", owner_token)
        if (
            isinstance(ttl_seconds, bool)
            or not isinstance(ttl_seconds, int | float)
            or not 0 < ttl_seconds <= _MAX_TTL
        ):
            raise InvalidInput(
                f"a lease needs ttl_seconds above 0 and at most {_MAX_TTL:,}, not {ttl_seconds!r}"
            )
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
            if ttl_seconds >= (LATEST_TIME - now).total_seconds():  # also spares now + ttl an OverflowError
                raise InvalidInput(
                    f"a lease from {now.isoformat()} for {ttl_seconds:g} s would end after the last time "
                    f"a store records ({LATEST_TIME.isoformat()}): check the store's clock"
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
        _who("actor", actor)
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
