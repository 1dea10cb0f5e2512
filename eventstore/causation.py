"""Causation and correlation: which event led to which, and which belong to one request.

Events link to each other through their metadata: ``causation_id`` is the
event id of the event that caused this one, ``correlation_id`` groups every
event of one request or conversation (``caused_by`` builds both). ``causes``
follows causation back ("what led to this decision"), ``effects`` forward
and transitively ("what did it cause"), ``correlated`` lists a group, and
``gate_opening`` finds the gate a decision answered. Every query is answered
from partial indexes on ``flow_events`` (migration 0007). The names are also
importable from ``eventstore.audit``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .checks import check_count, check_nonempty_text
from .errors import EventNotFound, InvalidInput
from .events import AppendResult, RecordedEvent
from .schema import READ_COLUMNS, causation, correlation, flow_events
from .sqljson import JsonText
from .store import EventStore

CAUSATION_KEY = "causation_id"
CORRELATION_KEY = "correlation_id"


_c = flow_events.c


@dataclass(frozen=True, slots=True)
class Effect:
    """An event caused, directly or through others, by the event ``effects`` started from."""

    event: RecordedEvent
    depth: int  # 1: caused by it directly; 2: by one of those; ...
    cause: uuid.UUID  # the event id in its causation_id


def caused_by(
    cause: RecordedEvent | AppendResult | uuid.UUID | str, *, correlation_id: str | None = None
) -> dict[str, str]:
    """Metadata that links new events to ``cause``: pass it as ``metadata=`` when appending.

    ``cause`` is an event, the result of the append that wrote it (its last
    event), or an event id. The correlation id is ``correlation_id``, else
    the cause's own correlation id, else (for an event) the cause's id, so a
    whole chain shares the correlation id of its first event.
    """
    if isinstance(cause, RecordedEvent):
        event_id = cause.event_id
        inherited = cause.metadata.get(CORRELATION_KEY)
        correlation_id = correlation_id or (inherited if isinstance(inherited, str) else str(event_id))
    elif isinstance(cause, AppendResult):
        if not cause.event_ids:
            raise InvalidInput("that append wrote no events to be caused by")
        event_id = cause.event_ids[-1]
    else:
        event_id = _event_id(cause)
    metadata = {CAUSATION_KEY: str(event_id)}
    if correlation_id is not None:
        metadata[CORRELATION_KEY] = correlation_id
    return metadata


def find_event(store: EventStore, event_id: uuid.UUID | str) -> RecordedEvent:
    """The event with this id; ``EventNotFound`` if the log has none."""
    found = _by_id(store, _event_id(event_id))
    if found is None:
        raise EventNotFound(str(event_id))
    return found


def cause_id(event: RecordedEvent) -> uuid.UUID | None:
    """The event id ``event``'s ``causation_id`` links it to; None if it has none.

    A link is an event id spelled as ``str(uuid)`` spells it (lowercase, with
    hyphens), as ``caused_by`` writes it. Another spelling of a UUID (upper
    case, braces, ``urn:uuid:``, no hyphens) is kept in the metadata as it was
    given, but links nothing: ``effects`` finds links by the stored text (in
    an index), so ``causes`` follows only what ``effects`` finds.
    """
    value = event.metadata.get(CAUSATION_KEY)
    parsed = _parse_id(value)
    return parsed if parsed is not None and str(parsed) == value else None


def gate_opening(store: EventStore, decision: RecordedEvent) -> RecordedEvent | None:
    """The last ``GateOpened`` of a gate decision's step before it: what the approver saw and
    answered (None if none is found, or ``decision`` names no step).

    A fork carries its origin's open gates in its ``FlowForked`` copy, so when
    the decision's flow has no opening of the step, it is looked for in the
    origin up to the event the fork was taken at (and so on, for a fork of a
    fork).
    """
    step_id = decision.data.get("step_id")
    if not isinstance(step_id, str):
        return None
    flow_id, before = decision.flow_id, decision.position
    seen = {flow_id}
    while True:
        params = {"flow_id": flow_id, "before": before, "step_id": step_id}
        found = next(iter(store._events(iter([store._fetch(_LAST_OPENING, params)]))), None)
        branch_point = _fork_point(store, flow_id) if found is None else None
        if branch_point is None or branch_point.flow_id in seen:
            return found
        flow_id, before = branch_point.flow_id, branch_point.position + 1
        seen.add(flow_id)


_LAST_OPENING = (
    sa.select(*READ_COLUMNS)
    .where(
        _c.flow_id == sa.bindparam("flow_id"),
        _c.type == sa.literal_column("'GateOpened'"),  # in the SQL: a prepared plan still proves the index
        _c.position < sa.bindparam("before"),
        JsonText(_c.data, "step_id") == sa.bindparam("step_id"),
    )
    .order_by(_c.position.desc())
    .limit(1)
)
"""``gate_opening``'s read, built once. It answers from the audit index by flow (``type =
'GateOpened'`` implies the index's predicate, on both backends) without repeating ``audited``,
whose ten terms took PostgreSQL 0.9 ms to plan against the partial indexes, 0.1 ms without. The
type is a literal, not a parameter: a plan prepared for any value (psycopg prepares a statement
run five times) could not use the partial index, and would scan every flow's gate openings."""


def causes(store: EventStore, event_id: uuid.UUID | str, *, limit: int = 1000) -> tuple[RecordedEvent, ...]:
    """What led to an event: its cause, its cause's cause, ... nearest first.

    The chain ends at an event without a link (``cause_id``: no
    ``causation_id``, or not an event id, say a request id from outside, or
    one in another spelling), at one whose cause is not an event in this log,
    at one whose cause is already in the chain (a cycle), or after ``limit``
    causes. The causation id it ended at is still in the last event's metadata.
    """
    check_count("limit", limit)
    event = find_event(store, event_id)
    chain: list[RecordedEvent] = []
    seen = {event.event_id}
    while len(chain) < limit:
        parent_id = cause_id(event)
        if parent_id is None or parent_id in seen:
            break
        parent = _by_id(store, parent_id)
        if parent is None:
            break
        chain.append(parent)
        seen.add(parent_id)
        event = parent
    return tuple(chain)


def effects(store: EventStore, event_id: uuid.UUID | str, *, limit: int = 1000) -> tuple[Effect, ...]:
    """What an event caused: every event whose causation leads back to it, in log order.

    Walks the causation links (``cause_id``) forward, breadth first, one
    indexed query per level (and per 500 causes); stops after ``limit`` events.
    """
    check_count("limit", limit)
    root = find_event(store, event_id)
    found: list[Effect] = []
    seen = {root.event_id}
    frontier = [root.event_id]
    depth = 0
    while frontier and len(found) < limit:
        depth += 1
        children: list[Effect] = []
        for start in range(0, len(frontier), 500):
            chunk = [str(cause) for cause in frontier[start : start + 500]]
            query = (
                sa.select(*READ_COLUMNS)
                .where(causation.isnot(None), causation.in_(chunk))
                .order_by(_c.position)
            )
            for event in iter(store.query_events(query)):
                if event.event_id not in seen:
                    seen.add(event.event_id)
                    children.append(Effect(event, depth, cause_id(event) or root.event_id))
        children.sort(key=lambda effect: effect.event.position)
        found.extend(children[: limit - len(found)])
        frontier = [effect.event.event_id for effect in children]
    return tuple(sorted(found, key=lambda effect: effect.event.position))


def correlated(
    store: EventStore, correlation_id: str, *, after_position: int = 0, limit: int | None = None
) -> Iterator[RecordedEvent]:
    """Every event with this ``correlation_id``, in log order, streamed in pages."""
    check_count("after_position", after_position)
    if limit is not None:
        check_count("limit", limit)
    value = check_nonempty_text("correlation_id", correlation_id)
    base = sa.select(*READ_COLUMNS).where(correlation.isnot(None), correlation == value).order_by(_c.position)
    return paged(store, base, after_position, limit)


def paged(store: EventStore, base: sa.Select[Any], after: int, limit: int | None) -> Iterator[RecordedEvent]:
    """The events ``base`` selects, in keyset pages by position (errors translated, retried once)."""
    return store.read_where(base.whereclause, after_position=after, limit=limit)


def _fork_point(store: EventStore, flow_id: str) -> RecordedEvent | None:
    """The origin's event a fork was taken at (as its ``FlowForked`` names it); None if not a fork.

    None too when that event is gone (the origin was pruned) or is not the
    one forked from (its hash differs).
    """
    first = next(iter(store.read_flow(flow_id, to_revision=1)), None)
    if first is None or first.type != "FlowForked":
        return None
    origin, revision = first.data.get("origin_flow_id"), first.data.get("origin_revision")
    if not isinstance(origin, str) or not origin or type(revision) is not int or revision < 1:
        return None
    point = next(iter(store.read_flow(origin, from_revision=revision, to_revision=revision)), None)
    if point is None or point.hash != first.data.get("origin_hash"):
        return None
    return point


def _by_id(store: EventStore, event_id: uuid.UUID) -> RecordedEvent | None:
    value: Any = event_id.bytes if store.dialect == "sqlite" else event_id
    query = sa.select(*READ_COLUMNS).where(_c.event_id == value)
    return next(iter(store.query_events(query)), None)


def _event_id(value: uuid.UUID | str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    parsed = _parse_id(value)
    if parsed is None:
        raise InvalidInput(f"not an event id (a UUID): {value!r}")
    return parsed


def _parse_id(value: Any) -> uuid.UUID | None:
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
