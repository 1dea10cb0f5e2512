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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from .checks import check_count, check_nonempty_text, check_store, shown
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
    if correlation_id is not None and not isinstance(correlation_id, str):
        raise InvalidInput(f"correlation_id must be a string, not {correlation_id!r}")
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
    check_store(store)
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
    answered (None if none is found, ``decision`` names no step, or is no gate decision).

    A fork carries its origin's open gates in its ``FlowForked`` copy, so when
    the decision's flow has no opening of the step, it is looked for in the
    origin up to the event the fork was taken at (and so on, for a fork of a
    fork).
    """
    if not isinstance(decision, RecordedEvent):
        raise InvalidInput(f"a decision must be a recorded event, not {shown(decision)}")
    return gate_openings(store, [decision]).get(decision.position)


def gate_openings(store: EventStore, decisions: Iterable[RecordedEvent]) -> dict[int, RecordedEvent]:
    """``gate_opening`` of each decision, by the decision's position (left out where none is found).

    One read answers them all, then one for those found in no flow of their own, in the origins
    of their forks, and so on: an audit trail shows each approval with its opening, and a read per
    approval was a round trip each (10,526 approvals of a million-event log took PostgreSQL 18 s).
    """
    check_store(store)
    if not isinstance(decisions, Iterable):
        raise InvalidInput(f"decisions must be recorded events, not {shown(decisions)}")
    asked: dict[int, tuple[str, int, str]] = {}
    for decision in decisions:
        if not isinstance(decision, RecordedEvent):
            raise InvalidInput(f"a decision must be a recorded event, not {shown(decision)}")
        step_id = decision.data.get("step_id")
        if decision.type in _DECISIONS and isinstance(step_id, str):
            asked[decision.position] = (decision.flow_id, decision.position, step_id)
    seen = {position: {flow_id} for position, (flow_id, _, _) in asked.items()}
    found: dict[int, RecordedEvent] = {}
    origins: dict[str, RecordedEvent | None] = {}
    while asked:
        further: dict[int, tuple[str, int, str]] = {}
        for (position, (flow_id, _, step_id)), opening in zip(
            asked.items(), _last_openings(store, list(asked.values())), strict=True
        ):
            if opening is not None:
                found[position] = opening
                continue
            if flow_id not in origins:
                origins[flow_id] = _fork_point(store, flow_id)
            point = origins[flow_id]
            if point is not None and point.flow_id not in seen[position]:
                seen[position].add(point.flow_id)
                further[position] = (point.flow_id, point.position + 1, step_id)
        asked = further
    return found


def _last_openings(store: EventStore, wanted: list[tuple[str, int, str]]) -> list[RecordedEvent | None]:
    """For each ``(flow_id, before, step_id)``, the step's last ``GateOpened`` in the flow before
    position ``before``, in one read (``_OPENINGS``); None where there is none."""
    if store.dialect == "sqlite":
        params: dict[str, Any] = {"wanted": orjson.dumps(wanted).decode()}
        first = 0  # json_each's key: the index in the array
    else:
        flows, befores, steps = (list(column) for column in zip(*wanted, strict=True))
        params, first = {"flows": flows, "befores": befores, "steps": steps}, 1  # WITH ORDINALITY
    rows = store._fetch(_OPENINGS[store.dialect == "sqlite"], params)
    out: list[RecordedEvent | None] = [None] * len(wanted)
    for row in rows:
        out[row[-1] - first] = store._backend.decode(row)
    return out


def _openings_postgresql() -> sa.Select[Any]:
    asked = (
        sa.func.unnest(
            sa.bindparam("flows", type_=ARRAY(sa.Text)),
            sa.bindparam("befores", type_=ARRAY(sa.BigInteger)),
            sa.bindparam("steps", type_=ARRAY(sa.Text)),
        )
        .table_valued(
            sa.column("flow_id", sa.Text),
            sa.column("before", sa.BigInteger),
            sa.column("step_id", sa.Text),
            with_ordinality="i",
        )
        .render_derived(name="asked")
    )
    last = (
        sa.select(*READ_COLUMNS)
        .where(
            _c.flow_id == asked.c.flow_id,
            _c.type == _GATE_OPENED,
            _c.position < asked.c.before,
            JsonText(_c.data, "step_id") == asked.c.step_id,
        )
        .order_by(_c.position.desc())
        .limit(1)
        .lateral("opening")
    )
    return sa.select(last, asked.c.i).select_from(asked.join(last, sa.true()))


def _openings_sqlite() -> sa.Select[Any]:
    wanted = sa.bindparam("wanted", type_=sa.Text)
    asked = sa.func.json_each(wanted).table_valued("key", "value", name="asked")
    other = flow_events.alias("other")

    def item(index: int) -> Any:
        return sa.func.json_extract(asked.c.value, sa.literal_column(f"'$[{index}]'"))

    last = (
        sa.select(other.c.position)
        .where(
            other.c.flow_id == item(0),
            other.c.type == _GATE_OPENED,
            other.c.position < item(1),
            JsonText(other.c.data, "step_id") == item(2),
        )
        .order_by(other.c.position.desc())
        .limit(1)
        .scalar_subquery()
    )
    return sa.select(*READ_COLUMNS, asked.c.key).select_from(asked.join(flow_events, _c.position == last))


_DECISIONS = ("GateApproved", "GateRejected")

_GATE_OPENED = sa.literal_column("'GateOpened'", sa.String)
"""In the SQL, not a parameter: a plan prepared for any value (psycopg prepares a statement run
five times) could not use the partial index, and would scan every flow's gate openings."""

_OPENINGS = {False: _openings_postgresql(), True: _openings_sqlite()}
"""``_last_openings``' read on PostgreSQL (False) and SQLite (True), each built once: a list of
(flow, before, step) in one parameter (arrays, a JSON array), so that its SQL is the same for any
number of decisions, each looked up in the audit index by flow (``type = 'GateOpened'`` implies
the index's predicate, on both backends) without repeating ``audited``, whose ten terms took
PostgreSQL 0.9 ms to plan against the partial indexes, 0.1 ms without."""


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
    check_store(store)
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
