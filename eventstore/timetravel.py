"""Time travel over a flow's history: replay, state at a point, diffs, forks, what-ifs.

Everything here folds with ``eventstore.flows.fold``, the fold the flow read
models use, so a replayed state and the read model cannot disagree.

Long flows are not folded from revision 1 each time: ``state_at`` keeps a
snapshot every ``snapshot_every`` revisions in ``flow_snapshots``. A
snapshot is used only if it was made by the current fold
(``FOLD_VERSION``), its state hashes to what was stored with it, and the
event it was taken at still has the hash the snapshot recorded; otherwise
it is ignored (and replaced), so a stale or tampered snapshot cannot change
an answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from .errors import FlowNotFound, InvalidInput
from .events import AppendResult, RecordedEvent
from .flows import FOLD_VERSION, FlowForked, FlowView, view_from_dict, view_to_dict
from .integrity import digest, format_time
from .schema import flow_events, flow_snapshots
from .serialization import canonical
from .store import EventStore

DEFAULT_SNAPSHOT_EVERY = 1000


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between two states, JSON-Patch style."""

    op: str  # "add", "remove" or "replace"
    path: str  # a JSON Pointer, e.g. /flow/state/order
    old: Any = None
    new: Any = None


@dataclass(frozen=True, slots=True)
class Diff:
    """What changed between two points, and the events in between (when on one flow)."""

    changes: list[Change]
    events: list[RecordedEvent]


def replay(
    store: EventStore, flow_id: str, *, from_revision: int = 1
) -> Iterator[tuple[RecordedEvent, FlowView]]:
    """``(event, state after it)`` for each event of the flow from ``from_revision`` on.

    Each state is a copy the caller may keep.
    """
    if type(from_revision) is not int or from_revision < 1:
        raise InvalidInput(f"from_revision must be an int >= 1, not {from_revision!r}")
    view = state_at(store, flow_id, revision=from_revision - 1) if from_revision > 1 else FlowView()
    for event in store.read_flow(flow_id, from_revision=from_revision):
        view.apply(event)
        yield event, view.copy()


def state_at(
    store: EventStore,
    flow_id: str,
    *,
    revision: int | None = None,
    at: datetime | None = None,
    snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
) -> FlowView:
    """The flow and its steps as of ``revision`` (or the last event at or before time ``at``).

    With neither, the latest state. Revision 0 (or a time before the flow
    began) is the empty view. A revision past the flow's end is an error.
    """
    head = store.revision(flow_id)
    if head == 0:
        raise FlowNotFound(flow_id)
    target = _target_revision(store, flow_id, head, revision, at)
    if target == 0:
        return FlowView()
    view, done = _nearest_snapshot(store, flow_id, target)
    pending: list[tuple[int, str, dict[str, Any]]] = []
    for event in store.read_flow(flow_id, from_revision=done + 1, to_revision=target):
        view.apply(event)
        if snapshot_every > 0 and event.revision % snapshot_every == 0:
            pending.append((event.revision, event.hash, view_to_dict(view)))
    if pending:
        _save_snapshots(store, flow_id, pending)
    return view


def diff_states(before: FlowView, after: FlowView) -> list[Change]:
    """The changes that turn ``before`` into ``after``."""
    changes: list[Change] = []
    _diff(view_to_dict(before), view_to_dict(after), "", changes)
    return changes


def diff(store: EventStore, flow_id: str, a: int | datetime, b: int | datetime) -> Diff:
    """What changed in a flow between two revisions (or times), and the events that did it."""
    first = _point(store, flow_id, a)
    second = _point(store, flow_id, b)
    low, high = sorted((first, second))
    events = list(store.read_flow(flow_id, from_revision=low + 1, to_revision=high)) if high > low else []
    changes = diff_states(state_at(store, flow_id, revision=first), state_at(store, flow_id, revision=second))
    return Diff(changes, events)


def diff_flows(store: EventStore, flow_a: str, flow_b: str) -> list[Change]:
    """How two flows (say, a fork and its origin) differ now, ignoring their ids and timestamps."""
    before = view_to_dict(state_at(store, flow_a))
    after = view_to_dict(state_at(store, flow_b))
    changes: list[Change] = []
    _diff(_comparable(before), _comparable(after), "", changes)
    return changes


def fork(
    store: EventStore,
    flow_id: str,
    *,
    at_revision: int,
    new_flow_id: str,
    metadata: dict[str, Any] | None = None,
) -> AppendResult:
    """Start ``new_flow_id`` as a copy of ``flow_id`` at ``at_revision``; the original is untouched.

    The fork's first event, ``FlowForked``, names the origin flow, revision
    and that event's hash, and carries the state it starts from.
    """
    view = state_at(store, flow_id, revision=at_revision)
    if at_revision == 0 or view.flow is None:
        raise InvalidInput(f"flow {flow_id!r} has no state at revision {at_revision} to fork from")
    (origin,) = store.read_flow(flow_id, from_revision=at_revision, to_revision=at_revision)
    event = FlowForked(
        origin_flow_id=flow_id,
        origin_revision=at_revision,
        origin_hash=origin.hash,
        snapshot=view_to_dict(view),
    )
    return store.append(new_flow_id, [event], expected_revision=0, metadata=metadata)


def what_if(
    store: EventStore,
    flow_id: str,
    *,
    without_revisions: Iterable[int] = (),
    without_types: Iterable[str] = (),
    until: int | None = None,
) -> FlowView:
    """The state the flow would be in without some of its events. The log is not touched."""
    skip_revisions = set(without_revisions)
    skip_types = set(without_types)
    view = FlowView()
    for event in store.read_flow(flow_id, to_revision=until):
        if event.revision not in skip_revisions and event.type not in skip_types:
            view.apply(event)
    if view.flow is None and store.revision(flow_id) == 0:
        raise FlowNotFound(flow_id)
    return view


# -- internals -----------------------------------------------------------------


def _point(store: EventStore, flow_id: str, point: int | datetime) -> int:
    head = store.revision(flow_id)
    if head == 0:
        raise FlowNotFound(flow_id)
    if isinstance(point, datetime):
        return _target_revision(store, flow_id, head, None, point)
    return _target_revision(store, flow_id, head, point, None)


def _target_revision(
    store: EventStore, flow_id: str, head: int, revision: int | None, at: datetime | None
) -> int:
    if revision is not None and at is not None:
        raise InvalidInput("give a revision or a time, not both")
    if revision is not None:
        if type(revision) is not int or not 0 <= revision <= head:
            raise InvalidInput(f"flow {flow_id!r} has revisions 0 to {head}, not {revision!r}")
        return revision
    if at is None:
        return head
    if not isinstance(at, datetime) or at.tzinfo is None:
        raise InvalidInput("`at` must be a timezone-aware datetime")
    moment: Any = format_time(at) if store.dialect == "sqlite" else at
    query = sa.select(sa.func.max(flow_events.c.revision)).where(
        flow_events.c.flow_id == flow_id, flow_events.c.recorded_at <= moment
    )
    with store.engine.connect() as conn:
        found = conn.execute(query).scalar()
    return int(found or 0)


def _nearest_snapshot(store: EventStore, flow_id: str, target: int) -> tuple[FlowView, int]:
    """The latest trustworthy snapshot at or before ``target``, or an empty view at 0."""
    s = flow_snapshots.c
    query = (
        sa.select(s.revision, s.event_hash, s.state, s.state_hash)
        .where(s.flow_id == flow_id, s.fold_version == FOLD_VERSION, s.revision <= target)
        .order_by(s.revision.desc())
        .limit(3)
    )
    with store.engine.connect() as conn:
        candidates = conn.execute(query).all()
        for revision, event_hash, state, state_hash in candidates:
            if digest(state.encode()) != bytes(state_hash):
                continue  # the snapshot was edited
            stored = conn.execute(
                sa.select(flow_events.c.hash).where(
                    flow_events.c.flow_id == flow_id, flow_events.c.revision == revision
                )
            ).scalar()
            if stored is None or bytes(stored) != bytes(event_hash):
                continue  # the history it was taken from is not the history now
            return view_from_dict(orjson.loads(state)), revision
    return FlowView(), 0


def _save_snapshots(store: EventStore, flow_id: str, pending: list[tuple[int, str, dict[str, Any]]]) -> None:
    now = format_time(store.clock())
    rows = []
    for revision, event_hash, state in pending:
        encoded = canonical(state, what="snapshot")
        rows.append(
            {
                "flow_id": flow_id,
                "revision": revision,
                "fold_version": FOLD_VERSION,
                "event_hash": bytes.fromhex(event_hash),
                "state": encoded.decode(),
                "state_hash": digest(encoded),
                "created_at": now,
            }
        )
    with store.transaction() as tx:
        existing = {
            row[0]
            for row in tx.connection.execute(
                sa.select(flow_snapshots.c.revision).where(
                    flow_snapshots.c.flow_id == flow_id,
                    flow_snapshots.c.fold_version == FOLD_VERSION,
                    flow_snapshots.c.revision.in_([r["revision"] for r in rows]),
                )
            )
        }
        stale = [r["revision"] for r in rows if r["revision"] in existing]
        if stale:  # an untrustworthy snapshot is replaced by the one just folded
            tx.connection.execute(
                flow_snapshots.delete().where(
                    flow_snapshots.c.flow_id == flow_id,
                    flow_snapshots.c.fold_version == FOLD_VERSION,
                    flow_snapshots.c.revision.in_(stale),
                )
            )
        tx.connection.execute(flow_snapshots.insert(), rows)


def _diff(before: Any, after: Any, path: str, out: list[Change]) -> None:
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(before.keys() | after.keys()):
            child = f"{path}/{_escape(key)}"
            if key not in after:
                out.append(Change("remove", child, old=before[key]))
            elif key not in before:
                out.append(Change("add", child, new=after[key]))
            else:
                _diff(before[key], after[key], child, out)
    elif isinstance(before, list) and isinstance(after, list):
        for index in range(max(len(before), len(after))):
            child = f"{path}/{index}"
            if index >= len(after):
                out.append(Change("remove", child, old=before[index]))
            elif index >= len(before):
                out.append(Change("add", child, new=after[index]))
            else:
                _diff(before[index], after[index], child, out)
    elif before != after or type(before) is not type(after):
        out.append(Change("replace", path or "/", old=before, new=after))


def _escape(key: str) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


_IDENTITY = ("flow_id", "revision", "event_count", "created_at", "updated_at", "parent_flow_id")


def _comparable(view: dict[str, Any]) -> dict[str, Any]:
    flow = {k: v for k, v in (view["flow"] or {}).items() if k not in _IDENTITY}
    steps = {
        step_id: {k: v for k, v in step.items() if k not in ("flow_id", "revision", "updated_at")}
        for step_id, step in view["steps"].items()
    }
    return {"flow": flow, "steps": steps}
