"""Child processes that drive ``FlowService`` for the flow concurrency and crash tests.

Each child opens its own store with the inline flow read models from
``(url, options)`` and reports what the database accepted: the event ids of
every accepted command, so the parent can hold the log to exactly those.
Entry points are module-level functions so that they pickle; ``Children``
and ``SPAWN`` in ``workers`` start them.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from eventstore import AppendResult, EventStore, RecordedEvent, RevisionMismatch, Transaction
from eventstore.errors import InvalidTransition
from projections import FlowProjection, FlowQueries, FlowService

from .workers import BARRIER_TIMEOUT

SERVICE_RETRIES = 50  # implicit-revision commands re-decide on a lost race; six writers race hard


def open_flow_store(url: str, options: dict[str, Any], *extra: Any) -> EventStore:
    projections = [FlowProjection(), *extra]
    return EventStore.open(url, **options, projections=projections)


@dataclass
class Tally:
    """What one worker's commands did: accepted event ids per flow, and refusals."""

    accepted: dict[str, list[str]] = field(default_factory=dict)
    progress: dict[str, int] = field(default_factory=dict)
    """The last ``progress`` value this worker's accepted advances set, per flow."""
    steps: list[tuple[str, str]] = field(default_factory=list)
    mismatches: int = 0
    lockstep_wins: int = 0
    lockstep_mismatches: int = 0

    def took(self, result: AppendResult) -> AppendResult:
        self.accepted.setdefault(result.flow_id, []).extend(str(i) for i in result.event_ids)
        return result

    def merge(self, other: Tally) -> None:
        for flow, ids in other.accepted.items():
            self.accepted.setdefault(flow, []).extend(ids)
        self.steps += other.steps
        self.mismatches += other.mismatches
        self.lockstep_wins += other.lockstep_wins
        self.lockstep_mismatches += other.lockstep_mismatches


# -- concurrent commands on shared flows ----------------------------------------------
def drive_flows(
    url: str,
    options: dict[str, Any],
    name: str,
    sync: Any,
    flows: list[str],
    rounds: int,
    lockstep_rounds: int,
    threads: int,
) -> tuple[Tally, dict[str, dict[str, int]]]:
    """``threads`` threads run step lifecycles and advances on the shared flows, then race in lockstep.

    Returns the merged tally and, per thread key, the last progress value set on each flow.
    """
    with open_flow_store(url, options) as store:
        service = FlowService(store, retries=SERVICE_RETRIES)
        keys = [f"{name}.{t}" for t in range(threads)]
        with ThreadPoolExecutor(threads) as pool:
            futures = [
                pool.submit(_drive_thread, service, key, sync, flows, rounds, lockstep_rounds) for key in keys
            ]
            tallies = [future.result() for future in futures]
    merged = Tally()
    for tally in tallies:
        merged.merge(tally)
    return merged, {key: tally.progress for key, tally in zip(keys, tallies, strict=True)}


def _drive_thread(
    service: FlowService, key: str, sync: Any, flows: list[str], rounds: int, lockstep_rounds: int
) -> Tally:
    try:
        sync.wait(BARRIER_TIMEOUT)
        tally = Tally()
        rng = random.Random(key)
        for i in range(rounds):
            flow = rng.choice(flows)
            lifecycle(service, tally, flow, f"{key}.s{i}", retry=rng.random() < 0.3)
            advance(service, tally, rng.choice(flows), key, explicit=rng.random() < 0.5)
        for _ in range(lockstep_rounds):
            sync.wait(BARRIER_TIMEOUT)  # every worker's last append is done
            revision = FlowQueries(service.store).flow(flows[0]).revision
            sync.wait(BARRIER_TIMEOUT)  # every worker read the same revision
            if advance(service, tally, flows[0], key, explicit=True, revision=revision):
                tally.lockstep_wins += 1
            else:
                tally.lockstep_mismatches += 1
        return tally
    except BaseException:
        sync.abort()  # siblings waiting at the barrier fail at once instead of timing out
        raise


def lifecycle(service: FlowService, tally: Tally, flow: str, step_id: str, *, retry: bool) -> None:
    """Schedule, start, (retry and restart), record a decision on, and complete one step."""
    took = tally.took
    run_id = f"run-{step_id}"
    took(service.schedule_step(flow, step_id=step_id, name="work", run_id=run_id, task={"k": step_id}))
    took(service.start_step(flow, step_id))
    if retry:
        took(service.retry_step(flow, step_id, error="flaky"))
        took(service.start_step(flow, step_id))
    took(service.record_decision(flow, actor=step_id, decision="go", rationale="test", step_id=step_id))
    took(service.complete_step(flow, step_id, result={"by": step_id}))
    tally.steps.append((flow, step_id))


def advance(
    service: FlowService, tally: Tally, flow: str, key: str, *, explicit: bool, revision: int | None = None
) -> bool:
    """Set this worker's progress on the flow (``explicit``: expecting the revision read); True if taken."""
    value = tally.progress.get(flow, 0) + 1
    if explicit and revision is None:
        revision = FlowQueries(service.store).flow(flow).revision
    try:
        tally.took(
            service.advance(
                flow, state_patch={"progress": {key: value}}, expected_revision=revision if explicit else None
            )
        )
    except RevisionMismatch:
        assert explicit, "a command without an expected revision must re-decide, not fail"
        tally.mismatches += 1
        return False
    tally.progress[flow] = value
    return True


# -- two processes scheduling the same run -----------------------------------------------
def schedule_same_runs(
    url: str, options: dict[str, Any], name: str, flow: str, sync: Any, rounds: int
) -> list[tuple[int, str]]:
    """Each round: schedule run ``run-<round>`` (under a step id of our own), then start its step.

    Returns, per round, (events the schedule wrote, "started" or "refused").
    """
    outcomes = []
    try:
        with open_flow_store(url, options) as store:
            service = FlowService(store, retries=SERVICE_RETRIES)
            queries = FlowQueries(store)
            sync.wait(BARRIER_TIMEOUT)
            for round_ in range(rounds):
                run_id = f"run-{round_}"
                sync.wait(BARRIER_TIMEOUT)
                step_id = f"{name}-{round_}"
                scheduled = service.schedule_step(flow, step_id=step_id, name="race", run_id=run_id)
                sync.wait(BARRIER_TIMEOUT)
                step_id = queries.step_by_run(flow, run_id).step_id
                sync.wait(BARRIER_TIMEOUT)
                try:
                    service.start_step(flow, step_id)
                    started = "started"
                except InvalidTransition:
                    started = "refused"
                outcomes.append((len(scheduled.event_ids), started))
    except BaseException:
        sync.abort()
        raise
    return outcomes


# -- a command loop to kill ----------------------------------------------------------------
class Stall:
    """An inline projection that, once armed, reports and then hangs inside the append transaction.

    It runs after ``FlowProjection``: the transaction has written its log
    rows and read-model rows, holds the write lock, and has not committed.
    """

    name = "stall"

    def __init__(self, signal: Connection) -> None:
        self.signal = signal
        self.armed = False

    def prepare(self, store: EventStore) -> None:
        """Nothing to create."""

    def apply(self, tx: Transaction, events: Sequence[RecordedEvent]) -> None:
        if self.armed:
            self.signal.send("stalled")
            time.sleep(BARRIER_TIMEOUT)  # hang until the parent kills us


def command_loop(
    url: str, options: dict[str, Any], flows: list[str], tag: str, signal: Connection, *, stall: bool
) -> None:
    """Run step lifecycles with gates and advances on ``flows`` until killed.

    Sends "ready" after the first full lifecycle. With ``stall``, the next
    command after that hangs inside its transaction (after "stalled").
    """
    staller = Stall(signal)
    with open_flow_store(url, options, staller) as store:
        service = FlowService(store, retries=SERVICE_RETRIES)
        for i in itertools.count():
            flow = flows[i % len(flows)]
            step_id = f"{tag}.s{i}"
            service.schedule_step(flow, step_id=step_id, name="work", run_id=f"run-{step_id}", position=i)
            service.start_step(flow, step_id)
            service.open_gate(flow, step_id, prompt="ok?", options=[{"value": "y", "label": "yes"}])
            service.approve_gate(flow, step_id, by="human", selections=["y"])
            service.record_decision(flow, actor=tag, decision="complete", step_id=step_id)
            service.complete_step(flow, step_id, result={"i": i})
            service.advance(flow, current_step=step_id, state_patch={"done": {tag: i}})
            if i == 0:
                signal.send("ready")
                staller.armed = stall
