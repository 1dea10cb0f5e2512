"""Stuck-work recovery: end the steps a dead worker left running, so their flows can be resumed.

A worker holds a flow's lease while it runs the flow's steps and renews it
as it goes. If it dies, the lease expires with steps still ``running``.
``sweep_expired_leases`` finds those steps (``FlowQueries.expired_steps``)
and ends each through the ordinary ``FlowService`` command, so the command
re-checks everything under the append lock, appends with the revision it
read, and the read models change in the same transaction:

* a step that reached a terminal state meanwhile is refused (``StepClosed``)
  and left alone: a terminal step is never touched;
* a lease renewed meanwhile (the worker was only slow) makes the command
  ``LeaseLost``: the step is left to its worker;
* a command that keeps losing races (``RevisionMismatch``) is re-read and
  skipped; the next sweep tries it again if it is still stuck.

The flow itself stays open. ``FlowQueries.interrupted`` lists such flows;
a worker resumes one by acquiring its lease (the next generation, which
fences the dead worker off) and scheduling what is left.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from eventstore import AppendResult, FlowNotFound, RevisionMismatch
from eventstore.errors import FlowClosed, InvalidTransition, LeaseLost, StepClosed, StepNotFound
from eventstore.flow_fold import StepState

from .flow_queries import FlowQueries
from .service import FlowService

OnExpired = Literal["time_out", "fail", "retry"]
SWEEPER = "eventstore:sweeper"
"""The actor recorded on the events the sweeper appends."""
DEFAULT_REASON = "lease expired: the worker stopped renewing it"


@dataclass(slots=True)
class SweepReport:
    """What a sweep did: the (flow, step) pairs it ended, and those it left alone and why."""

    swept: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)


def sweep_expired_leases(
    service: FlowService,
    *,
    now: datetime | None = None,
    on_expired: OnExpired = "time_out",
    reason: str = DEFAULT_REASON,
    batch_size: int = 500,
    between_batches: Callable[[], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SweepReport:
    """End every step still running under a lease that expired at or before ``now``.

    ``on_expired`` picks the event: ``time_out`` (``StepTimedOut``, the
    default), ``fail`` (``StepFailed``) or ``retry`` (``StepRetried``: the
    step goes back to scheduled for the next worker). ``now`` defaults to the
    store's clock, which the commands also judge the lease by.
    """
    queries = FlowQueries(service.store)
    moment = now if now is not None else service.store.clock()
    report = SweepReport()
    after: tuple[str, str] | None = None
    while True:
        batch = queries.expired_steps(now=moment, after=after, limit=batch_size)
        for step in batch:
            why = _end(service, queries, step, on_expired, reason)
            if why is None:
                report.swept.append((step.flow_id, step.step_id))
            else:
                report.skipped.append((step.flow_id, step.step_id, why))
        if len(batch) < batch_size or (should_stop is not None and should_stop()):
            return report
        after = (batch[-1].flow_id, batch[-1].step_id)
        if between_batches is not None:
            between_batches()


def _end(
    service: FlowService, queries: FlowQueries, step: StepState, on_expired: OnExpired, reason: str
) -> str | None:
    """End one step; None if this call ended it, else why it was left alone."""
    flow_id, step_id = step.flow_id, step.step_id
    metadata = {"recovery": "lease-expired"}
    try:
        result: AppendResult
        if on_expired == "time_out":
            result = service.time_out_step(flow_id, step_id, reason=reason, actor=SWEEPER, metadata=metadata)
        elif on_expired == "fail":
            result = service.fail_step(flow_id, step_id, error=reason, actor=SWEEPER, metadata=metadata)
        else:
            result = service.retry_step(flow_id, step_id, error=reason, actor=SWEEPER, metadata=metadata)
    except StepClosed as closed:
        return f"the step ended meanwhile ({closed.status})"
    except FlowClosed as closed:
        return f"the flow ended meanwhile ({closed.status})"
    except LeaseLost:
        return "the lease was renewed or taken over meanwhile"
    except InvalidTransition as refused:
        return f"refused: {refused}"
    except (FlowNotFound, StepNotFound):
        return "the flow or step is gone"
    except RevisionMismatch:
        try:
            now = queries.step(flow_id, step_id)
        except StepNotFound:
            return "the flow or step is gone"
        return (
            f"the step ended meanwhile ({now.status})"
            if now.terminal
            else "contended; the next sweep retries"
        )
    return None if result.event_ids else "the step ended meanwhile (the same way)"
