"""The command loop under ``FlowService``: decide on the read model, append, retry on conflict.

``CommandLoop`` runs every command: it takes the append lock, reads the flow
from the inline read model inside the write transaction, lets the command
decide its events, and appends them with the revision it read. It also holds
the lease fencing every fenced command checks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventstore import (
    AppendResult,
    Event,
    EventStore,
    FlowNotFound,
    RevisionMismatch,
    Transaction,
    reconnecting,
)
from eventstore.checks import check_store, shown
from eventstore.errors import (
    ConnectionLost,
    EventStoreError,
    FlowPruned,
    InvalidInput,
    InvalidTransition,
    LeaseLost,
    ProjectionError,
    ReconnectFailed,
    StepNotFound,
)
from eventstore.flow_fold import FlowState, StepState
from eventstore.preparation import check_flow_id
from eventstore.tombstones import pruned_into

from .checkpoints import hold_appends
from .flows import FlowProjection
from .transitions import _active, _mapping

Decide = Callable[[Transaction, FlowState | None], Sequence[Event]]


def _lease(lease: Lease | None) -> Lease | None:
    if lease is not None and not isinstance(lease, Lease):
        raise InvalidInput(f"lease must be the Lease that acquire_lease returned, not {type(lease).__name__}")
    return lease


def _refuse_if_pruned(tx: Transaction, flow_id: str) -> None:
    """``FlowPruned`` if retention pruned the flow (or a restore has put it only partly back).

    Asked only when a command is refused or is a no-op (an append to such a flow
    raises ``FlowPruned`` by itself): the read model then holds none or only part
    of the flow's history, so any other answer decided on it would mislead.
    """
    archive_id = pruned_into(tx.connection, flow_id)
    if archive_id is not None:
        raise FlowPruned(flow_id, archive_id)


class _Stale(Exception):  # a signal between two methods, never raised to a caller
    """Internal: a command decided on a remembered state must be decided again from the rows."""


@dataclass(frozen=True, slots=True)
class Lease:
    """Proof of ownership of a flow, fenced by generation."""

    owner_token: str
    generation: int
    expires_at: datetime


class CommandLoop:
    """The command loop and the checks ``FlowService``'s commands share (its base; use ``FlowService``)."""

    def __init__(self, store: EventStore, *, retries: int = 5) -> None:
        check_store(store)
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
            shown_revision = shown(expected_revision)
            raise InvalidInput(f"expected_revision must be None or an int >= 0, not {shown_revision}")
        check_flow_id(flow_id)  # before any read: a lone surrogate is no driver's to encode
        meta = _mapping("metadata", metadata)
        if actor is not None:
            meta.setdefault("actor", actor)
        attempt, use_warm = 0, True
        while True:
            try:
                # The append lock first, as every append and rebuild takes it (on
                # SQLite the write transaction is that lock): the read-model rows
                # read below cannot change before this commits, and no lock-order
                # inversion with a rebuild's swap is possible. Taking it finds a
                # pooled connection the server ended, and begins again on a fresh one.
                with reconnecting.transaction(self.store, hold_appends) as tx:
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
            except ReconnectFailed as exc:  # dead, and no live fresh one: nothing ran
                exc.add_note(
                    f"the command on flow {flow_id!r} did not run: repeat it once the database is reachable"
                )
                raise
            except ConnectionLost as exc:  # past the transaction's first statement: not retried
                exc.add_note(
                    f"the command on flow {flow_id!r} may have committed before the connection "
                    "died: read the flow before you repeat it"
                )
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
        try:
            if flow is None and must_exist:
                raise FlowNotFound(flow_id)
            if expected_revision is not None and expected_revision != current:
                raise RevisionMismatch(flow_id, expected_revision, current)
            events = decide(tx, flow)
        except (FlowNotFound, StepNotFound, InvalidTransition, RevisionMismatch):
            _refuse_if_pruned(tx, flow_id)  # not after a storage error: its transaction may be dead
            raise
        if not events:
            if warm:
                raise _Stale  # a no-op reports the revision: read it from the rows
            _refuse_if_pruned(tx, flow_id)
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
