"""Audit trails: what the agents decided, who approved what, what failed, and why.

``audit_trail`` lists the decisions (``DecisionRecorded``), approval gates
(``GateOpened``, ``GateApproved``, ``GateRejected``), failures
(``StepFailed``, ``StepTimedOut``, ``FlowFailed``, a LangGraph task's
``TaskFailed``) and a LangGraph thread's interrupts (``InterruptRecorded``,
``ResumeRecorded``: who answered what) and the legal holds placed on its
flows and released (``LegalHoldPlaced``, ``LegalHoldReleased``: events of
``$system-retention``) of a flow, a session, an actor or a correlation
group, in log order, as frozen entries. A gate
decision carries what the person saw: the prompt and options of the gate's
``GateOpened`` (for a gate opened before its flow was forked, the origin's).

Events link to each other through their metadata (``causation_id``,
``correlation_id``): ``caused_by``, ``causes``, ``effects``, ``correlated``
and ``gate_opening`` (``gate_openings``, many at once) live in
``eventstore.causation`` and are importable from here too.

Every query is answered from partial indexes on ``flow_events`` (migration
0007, ``eventstore.schema``), so its cost grows with what it finds, not with
the size of the log.

An audit trail does not take the log's word on trust: each entry's row is
checked against its own hashes (``integrity.check_envelope``, as ``verify``
does), and an entry whose row was edited says so (``tampered``). A trail
across flows says what it could not search: the flows retention pruned
(``AuditTrail.pruned``).
"""

from __future__ import annotations

import heapq
import itertools
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, ClassVar

import sqlalchemy as sa

from .causation import (
    CAUSATION_KEY,
    CORRELATION_KEY,
    Effect,
    cause_id,
    caused_by,
    causes,
    correlated,
    effects,
    find_event,
    gate_opening,
    gate_openings,
)
from .checked_rows import Checked, checked_by_position
from .checks import check_count, check_names, check_nonempty_text, check_store, check_text
from .errors import InvalidInput, SessionNotFound
from .events import RecordedEvent
from .flows import GateOption
from .graph_checkpoints import ERROR, INTERRUPT, RESUME, RESUME_RECORDED, TASK_FAILED, WRITE_EVENTS
from .integrity import format_time
from .legal_holds import SYSTEM_RETENTION_FLOW
from .relays import relayed, written
from .schema import (
    AUDIT_EVENT_TYPES,
    audit_actor,
    audited,
    correlation,
    first_beginning,
    flow_events,
    owner_session,
)
from .sqljson import JsonText
from .store import EventStore
from .tombstones import PrunedFlows, flow_not_found, pruned_flows

__all__ = [
    "CAUSATION_KEY",
    "CORRELATION_KEY",
    "HOLD_TYPES",
    "KINDS",
    "NULL_TASK_ID",
    "RUNTIME_ACTOR",
    "AuditEntry",
    "AuditTrail",
    "DecisionEntry",
    "Effect",
    "FailureEntry",
    "GateEntry",
    "HoldEntry",
    "InterruptEntry",
    "ThreadEntry",
    "audit_trail",
    "cause_id",
    "caused_by",
    "causes",
    "correlated",
    "effects",
    "entry_from_event",
    "find_event",
    "gate_opening",
    "gate_openings",
    "session_flows",
]

KINDS: dict[str, tuple[str, ...]] = {
    "decision": ("DecisionRecorded",),
    "gate": ("GateOpened", "GateApproved", "GateRejected"),
    "failure": ("StepFailed", "StepTimedOut", "FlowFailed", "TaskFailed"),
    "interrupt": ("InterruptRecorded", "ResumeRecorded"),
    "hold": ("LegalHoldPlaced", "LegalHoldReleased"),
    "thread": ("ThreadDeleted", "CheckpointsDeleted", "ThreadCopied"),
}
"""The audited event types, by kind of entry."""
HOLD_TYPES = KINDS["hold"]
"""Audited too, but events of ``$system-retention`` only, found by a read of that flow (holds are
few), not by the audit indexes (``schema.AUDIT_EVENT_TYPES``)."""

RUNTIME_ACTOR = "langgraph"
"""Who a LangGraph task's failure is by: the graph's code, run by LangGraph, not whoever ran the graph."""
NULL_TASK_ID = "00000000-0000-0000-0000-000000000000"
"""LangGraph's task id for a run's input: ``Command(resume=...)``'s answer before a task takes it."""

_c = flow_events.c
_MERGED_FLOWS = 200
"""Up to this many, a session's flows are read one index range each and merged by position: fast
whatever the planner's statistics (SQLite without ANALYZE prefers the (type, position) index for an
IN list). Beyond it, one query selects them with a subquery."""
_CHECKED = 100
"""Entries are made this many at a time: one read of the gate openings their decisions answered."""


# -- entries -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """One audited event: where it is in the log, who it is by, and how it links to others."""

    kind: ClassVar[str] = ""

    position: int
    flow_id: str
    revision: int
    event_id: uuid.UUID
    type: str
    actor: str | None
    recorded_at: datetime
    step_id: str | None
    causation_id: str | None
    correlation_id: str | None
    tampered: tuple[str, ...] = ()
    """What ``verify`` finds wrong with the entry's row on its own (``data-edited``,
    ``metadata-edited``, ``hash-mismatch``, ``malformed-row``): empty when the row matches its
    hashes. A tampered entry shows what the row holds now, not what was recorded."""

    def as_dict(self) -> dict[str, Any]:
        """The entry as plain JSON values, with its ``kind``."""
        out: dict[str, Any] = {"kind": self.kind}
        for field in fields(self):
            out[field.name] = _plain(getattr(self, field.name))
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class DecisionEntry(AuditEntry):
    """A ``DecisionRecorded``: what an agent decided, on what, instead of what, and how sure it was."""

    kind: ClassVar[str] = "decision"

    decision: str
    rationale: str
    inputs: dict[str, Any]
    alternatives: tuple[Any, ...]
    model: str | None
    tool: str | None
    confidence: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class GateEntry(AuditEntry):
    """A gate opened, approved or rejected, with what the approver saw (the opening's prompt and options)."""

    kind: ClassVar[str] = "gate"

    action: str  # "opened", "approved" or "rejected"
    prompt: str | None
    options: tuple[GateOption, ...]
    timeout_seconds: float | None
    selections: tuple[str, ...]
    feedback: str
    opened_flow_id: str | None  # the GateOpened's flow: a fork's origin, if opened before the fork
    opened_revision: int | None
    opened_at: datetime | None
    opened_by: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class InterruptEntry(AuditEntry):
    """A LangGraph thread's human in the loop: the graph asked (``interrupt()``), or someone answered.

    ``actor`` of an answer is who resumed it (the saver's resume metadata,
    docs/langgraph.md). An answer is the ``__resume__`` write of the task
    that asked, so ``task_id`` links it to its question, and its ``values``
    hold the one answer that task took in this run (LangGraph writes the list
    of every answer its interrupts took so far: the last is this run's).
    ``values`` of a question are LangGraph's interrupts (``[{"id", "value"}]``).
    Either is empty where only the serialised blob holds it. In a trail, one
    event of a task's writes that holds an answer and a new question (a node
    that asks again) gives an entry each, typed ``ResumeRecorded`` and
    ``InterruptRecorded``; the run's own copy of ``Command(resume=...)``
    (LangGraph's null task's write, before a task takes it) gives none.
    """

    kind: ClassVar[str] = "interrupt"

    action: str  # "asked" (InterruptRecorded) or "answered" (ResumeRecorded)
    thread_id: str | None
    checkpoint_ns: str | None
    checkpoint_id: str | None
    task_id: str | None
    values: tuple[Any, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class FailureEntry(AuditEntry):
    """A step that failed or timed out, a flow that failed, or a LangGraph task that raised.

    A task's failure is by ``RUNTIME_ACTOR``: the graph's code raised, not
    the person whose call ran it. ``details["run_by"]`` names the actor of
    the run (the event's), and ``details["resumed"]`` is true when the task
    had just taken an answer. In a trail, a task that took an answer, then
    raised, gives an answer and a ``TaskFailed`` entry from its one
    ``ResumeRecorded`` event.
    """

    kind: ClassVar[str] = "failure"

    error: str
    details: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldEntry(AuditEntry):
    """A legal hold placed on a flow (retention keeps it) or released, by ``actor``, and why.

    ``flow_id`` and ``revision`` place the event in ``$system-retention``;
    ``held_flow_id`` is the flow held or let go.
    """

    kind: ClassVar[str] = "hold"

    action: str  # "held" (LegalHoldPlaced) or "released" (LegalHoldReleased)
    held_flow_id: str | None
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ThreadEntry(AuditEntry):
    """A LangGraph thread's checkpoints taken out of the saver's view, or copied, by ``actor``.

    ``action`` is ``"deleted"``: a namespace's every checkpoint and write
    (``ThreadDeleted``), or some of its checkpoints (``CheckpointsDeleted``:
    those before the latest, or a run's); or ``"copied"`` into this thread from
    ``source_thread_id`` (``ThreadCopied``). ``reason`` names the saver's call
    (``delete_thread``, ``delete_for_runs``, ``prune``); ``checkpoints`` and
    ``writes`` count what went, where the event counts it; ``run_ids`` are the
    runs ``delete_for_runs`` named. The events before it stay in the log.
    """

    kind: ClassVar[str] = "thread"

    action: str  # "deleted" (ThreadDeleted, CheckpointsDeleted) or "copied" (ThreadCopied)
    thread_id: str | None
    checkpoint_ns: str | None
    reason: str | None
    checkpoints: int | None
    writes: int | None
    run_ids: tuple[str, ...]
    source_thread_id: str | None


# -- audit trails ----------------------------------------------------------------


class AuditTrail(Iterator[AuditEntry]):
    """The entries ``audit_trail`` found, streamed, and what it could not search.

    ``pruned`` is set when the trail is across flows (not one ``flow_id``)
    and retention has pruned flows that may belong in it: their events are in
    archives, not searched (``PrunedFlows.note`` says how to restore them).
    For a ``session``, the flows it owned and those whose owner is unknown
    (pruned before migration 0019); else every pruned flow, as the store
    keeps no actor or data of one. None when nothing was left out. Counted
    when first asked for (a trail across every flow counts every tombstone),
    except for a session, which needs it at once.
    """

    __slots__ = ("_count", "_entries", "_pruned")

    def __init__(
        self, entries: Iterator[AuditEntry], pruned: PrunedFlows | Callable[[], PrunedFlows | None] | None
    ) -> None:
        self._entries = entries
        self._count = pruned if callable(pruned) else None
        self._pruned = None if callable(pruned) else pruned

    @property
    def pruned(self) -> PrunedFlows | None:
        if self._count is not None:
            self._pruned, self._count = self._count(), None
        return self._pruned

    def __next__(self) -> AuditEntry:
        return next(self._entries)


def audit_trail(
    store: EventStore,
    *,
    flow_id: str | None = None,
    session: str | None = None,
    actor: str | None = None,
    correlation_id: str | None = None,
    types: Iterable[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_position: int = 0,
    limit: int | None = None,
) -> AuditTrail:
    """Decisions, gates and failures in log order, streamed in pages.

    Scope it to a flow, a session (the flows it owns), an actor (the first of
    a decision's ``actor``, a gate decision's ``by`` and the event's metadata
    ``actor`` that is a string) or a correlation group; the scopes combine.
    A legal hold is in the scope of the flow it holds (and so of its
    session) and of who placed or released it. ``types`` keeps some audited
    event types; ``since`` and ``until`` (timezone-aware) bound the time the events were
    recorded, ``since <= recorded_at < until`` as in an export, so that trails of consecutive
    windows (a day at a time) show each event once. An unknown
    flow raises ``FlowNotFound``, a session with no flows ``SessionNotFound``
    (unless retention pruned flows it owned, or flows whose owner the store
    did not record, before migration 0019: the trail is then empty, with
    ``pruned`` saying so). Checked at the call, before iterating.
    Each entry is checked against its row's hashes (``AuditEntry.tampered``).
    """
    check_store(store)
    wanted = _audit_types(types)
    holds = [name for name in wanted if name in HOLD_TYPES]
    wanted = [name for name in wanted if name not in HOLD_TYPES]
    conditions: list[Any] = [audited]
    if len(wanted) < len(AUDIT_EVENT_TYPES):
        conditions.append(_c.type.in_(_graph_types(wanted)))
    hold_conditions: list[Any] = [_c.flow_id == SYSTEM_RETENTION_FLOW, _c.type.in_(holds)]
    held = JsonText(_c.data, "held_flow_id")
    if flow_id is not None:
        if store.revision(flow_id) == 0:
            raise flow_not_found(store, flow_id)
        conditions.append(_c.flow_id == flow_id)
        hold_conditions.append(held == flow_id)
    flows = None if session is None else session_flows(store, session)

    def count_pruned() -> PrunedFlows | None:
        with store.reading() as conn:
            return pruned_flows(conn, session=session)

    # a trail across flows cannot search the pruned ones (the session's, if scoped)
    pruned: PrunedFlows | Callable[[], PrunedFlows | None] | None = None
    if flow_id is None:
        pruned = count_pruned() if session is not None else count_pruned
    if session is not None and flows is not None:
        if not flows and pruned is None:  # none live, none pruned, none pruned of unknown owner
            raise SessionNotFound(session)
        if len(flows) > _MERGED_FLOWS:
            conditions.append(_c.flow_id.in_(_session_subquery(session)))
            hold_conditions.append(held.in_(_session_subquery(session)))
            flows = None
        else:
            hold_conditions.append(held.in_(flows))
    scope: list[Any] = []
    if actor is not None:
        scope.append(_graph_actor(audit_actor == check_nonempty_text("actor", actor), actor))
    if correlation_id is not None:
        scope.append(correlation == check_nonempty_text("correlation_id", correlation_id))
    scope.extend(_time_range(store, since, until))
    check_count("after_position", after_position)
    if limit is not None:
        check_count("limit", limit)
    streams: list[Iterator[Checked]] = []
    if holds:  # a read of $system-retention's events (its primary key), checked row by row: holds are few
        streams.append(
            checked_by_position(store, sa.select().where(*hold_conditions, *scope), after_position, limit)
        )
    # a trail of a flow, session, actor or correlation reads its own index; the rest, a window's span
    unscoped = flow_id is None and session is None and actor is None and correlation_id is None
    window = _window(store, since, until) if wanted and unscoped else None
    if wanted and window != ():
        start, base = after_position, sa.select().where(*conditions, *scope)
        if window is not None:  # read from the window's first position (a bound of the keyset read's own)
            start, base = max(after_position, window[0] - 1), base.where(_c.position <= window[1])
        # Every flow's events at any time, on SQLite: each type's range of the type index, merged.
        # Without statistics SQLite planned the one query's type terms as a read of every audited
        # row, sorted for each page (26 ms for the first 50 of a million events, growing with the
        # log); a walk in the log's order reads every other event before a few audited ones (119 ms
        # for 50 among 300,000 checkpoints). PostgreSQL's planner weighs the two by its statistics,
        # so it gets the one query (thirteen round trips took it 19 ms for the first 50).
        if unscoped and not scope and store.dialect == "sqlite":
            types = _graph_types(wanted) if len(wanted) < len(AUDIT_EVENT_TYPES) else AUDIT_EVENT_TYPES
            of_type = [sa.select().where(_c.type == sa.literal_column(f"'{name}'")) for name in types]
            streams += [_limit_first(store, query, start, limit) for query in of_type]
        elif flows is None:
            streams.append(_limit_first(store, base, start, limit))
        else:
            streams += [_limit_first(store, base.where(_c.flow_id == flow), start, limit) for flow in flows]
    merged = heapq.merge(*streams, key=lambda checked: checked[0].position)
    batch = _CHECKED if limit is None else max(1, min(_CHECKED, limit))
    # A subgraph's question relayed by its parent is left out only where the trail shows the question
    # itself: a trail of one flow shows each question it holds; one across flows, those in its scope.
    # ``after_position`` pages a trail, and a page before this one showed what came before it.
    shown = None
    if flow_id is None:
        shown = [*conditions, *scope]
        if flows is not None:
            shown.append(_c.flow_id.in_(flows))
    entries = _entries(store, merged, batch, relaying=shown)
    return AuditTrail(_graph_kept(entries, [*wanted, *holds], actor, limit), pruned)


def session_flows(store: EventStore, session: str) -> list[str]:
    """The flows a session owns, each once, oldest first.

    A flow is owned by the ``owner_session_key`` of its first ``FlowStarted``
    or ``FlowForked``, as the flows read model has it; a later start in the
    same flow (only a writer bypassing ``FlowService`` appends one) names no owner.
    """
    # "" is a session as any other (FlowService accepts it and the read model lists it), so not _text
    query = sa.select(_c.flow_id).where(_first_start_of(check_text("session", session))).order_by(_c.position)
    return [row[0] for row in store._fetch(query)]


def _first_start_of(session: str) -> Any:
    """Rows that are their flow's first start, naming ``session`` as its owner.

    Session "" also holds the flows whose start names no owner (not a JSON string), as the
    flows read model files them (``flow_fold.owner_of``).
    """
    return sa.and_(
        first_beginning,
        owner_session == session if session else sa.or_(owner_session == "", owner_session.is_(None)),
    )


def entry_from_event(
    event: RecordedEvent, opening: RecordedEvent | None = None, *, tampered: tuple[str, ...] = ()
) -> AuditEntry:
    """The audit entry of an audited event; for a gate decision, ``opening`` is its ``GateOpened``.

    Tolerant of what the log holds: a missing or malformed field becomes empty.
    ``tampered`` is what checking the event's row against its hashes found.
    A LangGraph task's writes give the entry of their first channel of
    ``__resume__``, ``__interrupt__`` and ``__error__``; ``audit_trail`` also
    gives the others (``_graph_expanded``).
    """
    data = event.data
    common: dict[str, Any] = {
        "position": event.position,
        "flow_id": event.flow_id,
        "revision": event.revision,
        "event_id": event.event_id,
        "type": event.type,
        "actor": _actor(event),
        "recorded_at": event.recorded_at,
        "step_id": _opt_str(data.get("step_id")),
        "causation_id": _opt_str(event.metadata.get(CAUSATION_KEY)),
        "correlation_id": _opt_str(event.metadata.get(CORRELATION_KEY)),
        "tampered": tampered,
    }
    if event.type == "DecisionRecorded":
        confidence = data.get("confidence")
        return DecisionEntry(
            **common,
            decision=str(data.get("decision", "")),
            rationale=str(data.get("rationale", "")),
            inputs=_dict(data.get("inputs")),
            alternatives=tuple(_list(data.get("alternatives"))),
            model=_opt_str(data.get("model")),
            tool=_opt_str(data.get("tool")),
            confidence=_float(confidence),
        )
    if event.type in KINDS["gate"]:
        return _gate_entry(event, common, event if event.type == "GateOpened" else opening)
    if event.type in HOLD_TYPES:
        return HoldEntry(
            **common,
            action="held" if event.type == "LegalHoldPlaced" else "released",
            held_flow_id=_opt_str(data.get("held_flow_id")),
            reason=str(data.get("reason") or ""),
        )
    if event.type in KINDS["thread"]:
        return _thread_entry(event, common)
    if event.type in WRITE_EVENTS:
        graph = _graph_entries(event, common)
        if graph:
            return graph[0]
    if event.type in KINDS["failure"]:
        error = data.get("reason") if event.type == "StepTimedOut" else data.get("error")
        return FailureEntry(**common, error=str(error or ""), details=_dict(data.get("details")))
    raise InvalidInput(f"{event.type} is not an audited event type")


# -- internals -----------------------------------------------------------------------


def _limit_first(store: EventStore, base: sa.Select[Any], after: int, limit: int | None) -> Iterator[Checked]:
    """The events ``base`` selects, the first ``limit`` in one short read, the rest only if asked for.

    A LangGraph task's writes give zero to three entries, so ``limit`` rows may not be ``limit``
    entries; most trails need no more, and a merged stream is read no further than it is used."""
    last, read = after, 0
    for checked in checked_by_position(store, base, after, limit):
        last, read = checked[0].position, read + 1
        yield checked
    if limit and read == limit:
        yield from checked_by_position(store, base, last, None)


def _entries(
    store: EventStore, checked: Iterator[Checked], batch: int, *, relaying: list[Any] | None
) -> Iterator[tuple[AuditEntry, ...]]:
    """Each event's entries as one tuple, ``batch`` events at a time: the gate openings of a page's
    decisions are looked up at once. With ``relaying`` (a trail that is not one flow's, so it holds the
    subgraphs' namespaces too: the conditions of the events it shows), a subgraph's question passed
    up to its parent is left out when the trail shows where it was asked; a row that does not match
    its hashes is always shown."""
    while page := list(itertools.islice(checked, batch)):
        openings = gate_openings(store, (event for event, _ in page))
        relays = set()
        if relaying is not None:
            relays = relayed(store, [event for event, tampered in page if not tampered], relaying)
        for event, tampered in page:
            if event.position in relays:
                continue
            entry = entry_from_event(event, openings.get(event.position), tampered=tampered)
            yield _graph_expanded(event, entry)


def _graph_types(wanted: list[str]) -> list[str]:
    """The event types to read for ``wanted``: a task's answer and its failure or next question
    share one ``ResumeRecorded`` event."""
    if RESUME_RECORDED not in wanted and {TASK_FAILED, "InterruptRecorded"} & set(wanted):
        return [*wanted, RESUME_RECORDED]
    return wanted


def _graph_actor(condition: Any, actor: str) -> Any:
    """Events that may hold ``actor``'s entries: a task's failure is the runtime's, whoever's run it was."""
    if actor != RUNTIME_ACTOR:
        return condition
    return sa.or_(condition, _c.type.in_((TASK_FAILED, RESUME_RECORDED)))


def _graph_kept(
    groups: Iterator[tuple[AuditEntry, ...]], wanted: list[str], actor: str | None, limit: int | None
) -> Iterator[AuditEntry]:
    """The entries of a ``wanted`` type and by ``actor``, at most ``limit``: the LangGraph events
    were read more widely (``_graph_types``, ``_graph_actor``) and give zero to three entries each.
    A page never splits an event's entries (they share its position, which the next page starts
    after): it ends before an event whose entries would not fit, or holds them all if it is its first."""
    count, limit = 0, sys.maxsize if limit is None else limit
    for group in groups:
        kept = [e for e in group if e.type in wanted and (actor is None or e.actor == actor)]
        if count + len(kept) > limit and (count or not limit):
            return
        yield from kept
        count += len(kept)
        if count >= limit:
            return


def _graph_expanded(event: RecordedEvent, entry: AuditEntry) -> tuple[AuditEntry, ...]:
    """Every entry of ``event`` if it is a LangGraph task's writes (``_graph_entries``), else ``entry``.

    They share ``entry``'s place in the log, and whatever else ``entry_from_event`` gave it."""
    if event.type not in WRITE_EVENTS:
        return (entry,)
    common = {field.name: getattr(entry, field.name) for field in fields(AuditEntry)}
    common.update(type=event.type, actor=_actor(event))
    return _graph_entries(event, common, null_answer=False)


def _graph_entries(
    event: RecordedEvent, common: dict[str, Any], *, null_answer: bool = True
) -> tuple[AuditEntry, ...]:
    """A task's writes as audit entries, in the order they happened: the answer it took
    (``__resume__``), the question it asked (``__interrupt__``), its failure (``__error__``).

    The null task's ``__resume__`` (the run's copy of ``Command(resume=...)``, before a task took
    it) is an answer only with ``null_answer`` (``entry_from_event``, which must give an entry).
    """
    data = event.data
    channels = {write.get("channel") for write in _list(data.get("writes")) if isinstance(write, dict)}
    task = _opt_str(data.get("task_id"))
    where: dict[str, Any] = {
        "thread_id": _opt_str(data.get("thread_id")),
        "checkpoint_ns": _opt_str(data.get("checkpoint_ns")),
        "checkpoint_id": _opt_str(data.get("checkpoint_id")),
        "task_id": task,
    }
    out: list[AuditEntry] = []
    if RESUME in channels and (task != NULL_TASK_ID or null_answer):
        answers = list(written(data, RESUME))[-1:]
        took = [v[-1] if isinstance(v, list) and v and task != NULL_TASK_ID else v for v in answers]
        answer = {**common, "type": RESUME_RECORDED}
        out.append(InterruptEntry(**answer, action="answered", values=tuple(took), **where))
    if INTERRUPT in channels:
        question = {**common, "type": "InterruptRecorded"}
        out.append(
            InterruptEntry(**question, action="asked", values=tuple(written(data, INTERRUPT)), **where)
        )
    if ERROR in channels:
        shown = [str(value) for value in written(data, ERROR)]
        details = {**where, "run_by": common["actor"], "resumed": RESUME in channels}
        failed = {**common, "type": TASK_FAILED, "actor": RUNTIME_ACTOR}
        out.append(FailureEntry(**failed, error="; ".join(shown) or f"task {task} raised", details=details))
    if not out and (task != NULL_TASK_ID or null_answer):  # writes malformed in the log: its kind, empty
        if event.type == TASK_FAILED:
            failed = {**common, "actor": RUNTIME_ACTOR}
            details = {**where, "run_by": common["actor"], "resumed": False}
            out.append(FailureEntry(**failed, error=f"task {task} raised", details=details))
        else:
            action = "answered" if event.type == RESUME_RECORDED else "asked"
            out.append(InterruptEntry(**common, action=action, values=(), **where))
    return tuple(out)


def _gate_entry(event: RecordedEvent, common: dict[str, Any], opening: RecordedEvent | None) -> GateEntry:
    data = event.data
    seen = opening.data if opening is not None else {}
    timeout = seen.get("timeout_seconds")
    return GateEntry(
        **common,
        action={"GateOpened": "opened", "GateApproved": "approved"}.get(event.type, "rejected"),
        prompt=str(seen["prompt"]) if "prompt" in seen else None,
        options=tuple(_options(seen.get("options"))),
        timeout_seconds=_float(timeout),
        selections=tuple(str(value) for value in _list(data.get("selections"))),
        feedback=str(data.get("feedback", "")),
        opened_flow_id=opening.flow_id if opening is not None else None,
        opened_revision=opening.revision if opening is not None else None,
        opened_at=opening.recorded_at if opening is not None else None,
        opened_by=_actor(opening) if opening is not None else None,
    )


def _thread_entry(event: RecordedEvent, common: dict[str, Any]) -> ThreadEntry:
    data = event.data
    checkpoints = data.get("checkpoints")
    if checkpoints is None and isinstance(data.get("checkpoint_ids"), list):  # delete_for_runs names them
        checkpoints = len(data["checkpoint_ids"])
    return ThreadEntry(
        **common,
        action="copied" if event.type == "ThreadCopied" else "deleted",
        thread_id=_opt_str(data.get("thread_id")),
        checkpoint_ns=_opt_str(data.get("checkpoint_ns")),
        reason=_opt_str(data.get("reason")),
        checkpoints=_count(checkpoints),
        writes=_count(data.get("writes")),
        run_ids=tuple(str(run) for run in _list(data.get("run_ids"))),
        source_thread_id=_opt_str(data.get("source_thread_id")),
    )


def _count(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


def _options(value: Any) -> Iterator[GateOption]:
    for option in _list(value):
        if isinstance(option, dict) and isinstance(option.get("value"), str):
            yield GateOption(value=option["value"], label=str(option.get("label", option["value"])))


def _actor(event: RecordedEvent) -> str | None:
    """The same rule as the actor index: the first actor field that is a string.

    The fields are data ``actor``, data ``by`` and metadata ``actor``; a
    number, boolean, list or object in one is no actor, and skipped.
    """
    for value in (event.data.get("actor"), event.data.get("by"), event.metadata.get("actor")):
        if isinstance(value, str):
            return value
    return None


def _session_subquery(session: str) -> Any:
    return sa.select(_c.flow_id).where(_first_start_of(session)).correlate(None).scalar_subquery()


def _audit_types(types: Iterable[str] | None) -> list[str]:
    known = (*AUDIT_EVENT_TYPES, *HOLD_TYPES)
    if types is None:
        return list(known)
    wanted = check_names("types", types)
    unknown = [name for name in wanted if name not in known]
    if unknown or not wanted:
        raise InvalidInput(f"audited types are {', '.join(known)}; not {unknown or 'none'}")
    return wanted


def _time_range(store: EventStore, since: datetime | None, until: datetime | None) -> list[Any]:
    for name, moment in (("since", since), ("until", until)):
        if moment is not None and (not isinstance(moment, datetime) or moment.tzinfo is None):
            raise InvalidInput(f"`{name}` must be a timezone-aware datetime, not {moment!r}")
    if since is not None and until is not None and since > until:
        raise InvalidInput(f"`since` ({since.isoformat()}) is after `until` ({until.isoformat()})")
    out = []
    if since is not None:
        out.append(_c.recorded_at >= _stored_time(store, since))
    if until is not None:
        out.append(_c.recorded_at < _stored_time(store, until))  # half-open, as an export's range
    return out


def _stored_time(store: EventStore, moment: datetime) -> Any:
    text = format_time(moment)  # InvalidInput, on every backend, outside the years 1 to 9999 in UTC
    return text if store.dialect == "sqlite" else moment


_AUDITED_SQL = str(audited.compile(compile_kwargs={"literal_binds": True}))


def _window(store: EventStore, since: datetime | None, until: datetime | None) -> tuple[int, ...] | None:
    """The first and last position of the audited events recorded from ``since`` to before ``until``,
    found by the time index (migration 0020), so that a trail bounded in time reads that span only;
    () if there are none, None if neither bound is given.

    A span, not a list: the clock may have stepped back between two appends, so the span runs
    from the least to the greatest position recorded in the window, and each row in it is still
    checked against the times. SQLite only: told to use the index (``INDEXED BY``), since without
    statistics it would read every audited event instead. PostgreSQL's planner takes the index
    for a short window, and the log's order for a long one, from its statistics; a probe there
    took 0.4 s or 2 s whichever way it was written, one way for a short window, one for a long.
    """
    if store.dialect != "sqlite":
        return None
    bounds = {"since": ">=", "until": "<"}
    moments = (("since", since), ("until", until))
    given = {name: _stored_time(store, moment) for name, moment in moments if moment is not None}
    if not given:
        return None
    times = " AND ".join(f"recorded_at {bounds[name]} :{name}" for name in given)
    probe = sa.text(
        "SELECT min(position), max(position) FROM flow_events INDEXED BY ix_flow_events_audit_time "
        f"WHERE ({_AUDITED_SQL}) AND {times}"
    )
    low, high = store._read(lambda conn: conn.execute(probe, given).one())
    return () if low is None else (low, high)


def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, GateOption):
        return value.model_dump()
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
