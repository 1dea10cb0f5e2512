"""Time travel over a flow's history: replay, state at a point, diffs, forks, what-ifs.

Everything here folds with ``eventstore.flow_fold.fold``, the fold the flow read
models use, so a replayed state and the read model cannot disagree.

Long flows are not folded from revision 1 each time: ``state_at`` keeps a
snapshot every ``snapshot_every`` revisions in ``flow_snapshots``. A
snapshot is used only if it was made by the current fold
(``FOLD_VERSION``), its state hashes to what was stored with it, and the
event it was taken at still has the hash the snapshot recorded; otherwise
it is ignored (and replaced), so a stale or tampered snapshot cannot change
an answer.

Nor can a log with rows deleted, moved or inserted: the events folded must go
on revision by revision, from revision 1 or from a snapshot's event, and each
must name the one before it as its ``prev_hash``, compared as they are read
(the lean read fetches the two hashes raw, to compare, not decode). A log
that skips a revision or does not chain is ``IntegrityViolation``, never a
state it was never in. Hashes are compared, not computed: an event edited
in place with its chain left alone is for ``verify`` to find.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
import pydantic
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from .backends.base import FOLD_COLUMNS
from .checks import check_count, check_names, check_store, shown, validation_message
from .errors import (
    EventStoreError,
    FlowArchived,
    FlowExists,
    IntegrityViolation,
    InvalidInput,
    RevisionMismatch,
    StoreClosed,
)
from .events import AppendResult, FoldInput, RecordedEvent
from .flow_fold import (
    FOLD_VERSION,
    FlowView,
    StepState,
    aware_time,
    flow_from_dict,
    flow_to_dict,
    step_to_dict,
    view_from_dict,
    view_to_dict,
)
from .flows import FlowForked
from .graph_flows import refuse_thread
from .integrity import GENESIS, digest, format_time
from .schema import flow_events, flow_snapshots, snapshot_parts
from .serialization import canonical
from .snapshots import Loaded, PartLoader, Steps
from .store import EventStore
from .tombstones import flow_not_found

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
    """What changed between two points, and the events in between (when on one flow).

    ``from_revision`` and ``to_revision`` are the two points as revisions (a
    time resolved to the revision it reads); when ``from_revision`` is the
    later one, ``events`` (still oldest first) are the ones the diff undoes.
    """

    changes: list[Change]
    events: list[RecordedEvent]
    from_revision: int = 0
    to_revision: int = 0


def replay(
    store: EventStore, flow_id: str, *, from_revision: int = 1
) -> Iterator[tuple[RecordedEvent, FlowView]]:
    """``(event, state after it)`` for each event of the flow from ``from_revision`` on.

    Checked when called, before the first event: an unknown flow is
    ``FlowNotFound`` (``FlowArchived`` if retention pruned it), and
    ``from_revision`` may be at most one past the flow's head (which yields
    nothing: there is nothing after the last event yet).

    Each state is a self-contained copy the caller may keep, also after the
    store is closed, and may change without changing any other. States share
    the steps no event between them changed, so each costs about what its
    event changed. Iterating reads from the store, so it must be open.
    """
    check_store(store)
    check_count("from_revision", from_revision, minimum=1)
    head = store.revision(flow_id)
    if head == 0:
        raise flow_not_found(store, flow_id)
    if from_revision > head + 1:
        raise InvalidInput(
            f"from_revision {from_revision} is past the end of flow {flow_id!r}: "
            f"it has revisions 1 to {head}, so from_revision can be 1 to {head + 1}"
        )
    return _replay(store, flow_id, from_revision)


def _replay(store: EventStore, flow_id: str, from_revision: int) -> Iterator[tuple[RecordedEvent, FlowView]]:
    view = state_at(store, flow_id, revision=from_revision - 1) if from_revision > 1 else FlowView()
    for event in _anchored(store, flow_id, from_revision, None):
        view.apply(event)
        # The caller keeps this state and the fold goes on in a copy of it: a copy shares every step
        # but those handed out since the last, so it costs the steps the event changed, not them all.
        kept, view = view, view.copy()
        yield event, kept


def state_at(
    store: EventStore,
    flow_id: str,
    *,
    revision: int | None = None,
    at: datetime | None = None,
    snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
) -> FlowView:
    """The flow and its steps as of ``revision`` (or time ``at``).

    At a time, the state after the events up to the first one recorded after
    it: if the clock stepped back, a later event recorded before ``at`` does
    not count without the ones before it. With neither, the latest state.
    Revision 0 (or a time before the flow began) is the empty view. A
    revision past the flow's end is an error.

    A state read from a snapshot reads its steps' parts from the store when
    they are first used: use it while the store is open (a part read after
    it closed raises ``StoreClosed``), or keep ``view.copy()`` or call
    ``view.steps.load_all()`` first, which leave it self-contained. On an
    asynchronous store (``eventstore.aio``) they are all read before it
    returns: a read after ``run`` returned could not await the driver.
    """
    check_store(store)
    if type(snapshot_every) is not int:
        raise InvalidInput(f"snapshot_every must be an int (0 or less: no snapshots), not {snapshot_every!r}")
    head = store.revision(flow_id)
    if head == 0:
        raise flow_not_found(store, flow_id)
    target = _target_revision(store, flow_id, head, revision, at)
    if target == 0:
        return FlowView()
    view, done, done_hash = _nearest_snapshot(store, flow_id, target)
    pending: list[_Snapshot] = []
    if snapshot_every <= 0 or target // snapshot_every == done // snapshot_every:
        # No snapshot falls due on the way: fold from the lean read (no ids or metadata, hashes
        # compared, not decoded), checked for revisions and links.
        lean = _linked_lean(store, flow_id, done + 1, target, done_hash)
        for lean_event in _in_order(store, flow_id, lean, done + 1, target):
            view.apply(lean_event)
        return _loaded(store, view)
    events = store.read_flow(flow_id, from_revision=done + 1, to_revision=target)
    for event in _chained(store, flow_id, events, done + 1, done_hash, target):
        view.apply(event)
        if event.revision % snapshot_every == 0:
            pending.append(_encode(view, event))
    if pending:
        _save_snapshots(store, flow_id, pending)
    return _loaded(store, view)


def _loaded(store: EventStore, view: FlowView) -> FlowView:
    """``view``, its steps all read when the store is asynchronous (no read can await after ``run``)."""
    if store.engine.dialect.is_async:
        view.steps.load_all()
    return view


def diff_states(before: FlowView, after: FlowView) -> list[Change]:
    """The changes that turn ``before`` into ``after``."""
    changes: list[Change] = []
    _diff(view_to_dict(before), view_to_dict(after), "", changes)
    return changes


def diff(store: EventStore, flow_id: str, a: int | datetime, b: int | datetime) -> Diff:
    """What changed in a flow between two revisions (or times), and the events that did it."""
    check_store(store)
    first = _point(store, flow_id, a)
    second = _point(store, flow_id, b)
    low, high = sorted((first, second))
    events = list(_anchored(store, flow_id, low + 1, high)) if high > low else []
    before = state_at(store, flow_id, revision=first)
    after = state_at(store, flow_id, revision=second)
    if any(event.type == "FlowForked" for event in events):
        return Diff(diff_states(before, after), events, first, second)
    # Only the steps these events touched can differ: the rest were folded alike.
    touched = sorted({e.data["step_id"] for e in events if isinstance(e.data.get("step_id"), str)})
    changes: list[Change] = []
    _diff(_partial(before, touched), _partial(after, touched), "", changes)
    return Diff(changes, events, first, second)


def _partial(view: FlowView, step_ids: list[str]) -> dict[str, Any]:
    """``view_to_dict`` of the flow and only the given steps."""
    steps = {sid: step_to_dict(view.steps[sid]) for sid in step_ids if sid in view.steps}
    return {"flow": None if view.flow is None else flow_to_dict(view.flow), "steps": steps}


def diff_flows(store: EventStore, flow_a: str, flow_b: str) -> list[Change]:
    """How two flows (say, a fork and its origin) differ now, ignoring their ids, revisions and times."""
    check_store(store)
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
    and that event's hash, and carries the state it starts from. A time in
    that state that the fold does not read as one (outside ``EARLIEST_TIME``
    to ``LATEST_TIME``, say an event recorded on 9999-12-31) is carried as
    ``None``, which is what the fork's fold makes of it anyway.
    """
    check_store(store)
    if type(at_revision) is not int:
        raise InvalidInput(f"at_revision must be a revision (an int), not {at_revision!r}")
    view = state_at(store, flow_id, revision=at_revision)
    if at_revision == 0 or view.flow is None:
        refuse_thread(store, flow_id)  # a LangGraph thread's flow: say so, and what reads it
        raise InvalidInput(f"flow {flow_id!r} has no state at revision {at_revision} to fork from")
    found = list(store.read_flow(flow_id, from_revision=at_revision, to_revision=at_revision))
    if not found:  # revisions up to the last exist in any log a store wrote: altered, or just pruned
        raise _unless_pruned(
            store,
            flow_id,
            f"flow {flow_id!r} has no event at revision {at_revision} to fork from, though it has "
            "later ones: its chain is broken; `eventstore verify` says where",
            at_revision,
        )
    (origin,) = found
    snapshot = view_to_dict(view)
    for state in (snapshot["flow"], *snapshot["steps"].values()):
        for name in _TIMES.intersection(state):
            if state[name] is not None and aware_time(state[name]) is None:
                state[name] = None
    try:
        event = FlowForked(
            origin_flow_id=flow_id, origin_revision=at_revision, origin_hash=origin.hash, snapshot=snapshot
        )
    except pydantic.ValidationError as exc:  # a state the vocabulary cannot carry: say so, not pydantic
        raise InvalidInput(
            f"flow {flow_id!r} at revision {at_revision} cannot be forked: {validation_message(exc)}"
        ) from exc
    try:
        return store.append(new_flow_id, [event], expected_revision=0, metadata=metadata)
    except RevisionMismatch as exc:  # the fork's id is taken: no retry can help, unlike a stale writer
        raise FlowExists(new_flow_id, "already exists; fork into a new flow id") from exc


_TIMES = frozenset({"created_at", "updated_at", "finished_at", "scheduled_at", "started_at"})
"""The times of a flow's and its steps' states (``lease_expires_at`` is not copied to a fork)."""


def what_if(
    store: EventStore,
    flow_id: str,
    *,
    without_revisions: Iterable[int] = (),
    without_types: Iterable[str] = (),
    until: int | None = None,
) -> FlowView:
    """The state the flow would be in without some of its events. The log is not touched.

    The revisions named (``without_revisions``, ``until``) must be the flow's:
    leaving out a revision it does not have would answer a question nobody asked.
    """
    check_store(store)
    # A string is iterable too: "12" would be read as revisions '1' and '2'.
    if not isinstance(without_revisions, Iterable) or isinstance(without_revisions, str | bytes | Mapping):
        raise InvalidInput(
            f"without_revisions must be a list of revisions (ints), not {shown(without_revisions)}"
        )
    skip_revisions = {check_count("without_revisions", revision, minimum=1) for revision in without_revisions}
    skip_types = set(check_names("without_types", without_types))
    if until is not None:
        check_count("until", until)
    head = store.revision(flow_id)
    if head == 0:
        raise flow_not_found(store, flow_id)
    if until is not None and until > head:
        raise InvalidInput(f"flow {flow_id!r} has revisions 0 to {head}, so until cannot be {until}")
    past = sorted(revision for revision in skip_revisions if revision > head)
    if past:
        raise InvalidInput(
            f"flow {flow_id!r} has revisions 1 to {head}, not {past[0]} (in without_revisions)"
        )
    view = FlowView()
    events = store.read_flow(flow_id, to_revision=until)
    for event in _chained(store, flow_id, events, 1, GENESIS.hex(), head if until is None else until):
        if event.revision not in skip_revisions and event.type not in skip_types:
            view.apply(event)
    return view


def in_utc(at: datetime) -> datetime:
    """A point in time as UTC; ``InvalidInput`` if it has no zone or is outside the years 1 to 9999 in UTC."""
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        raise InvalidInput("`at` must be a timezone-aware datetime")
    try:
        return at.astimezone(UTC)
    except OverflowError as exc:  # 0001-01-01T00:00+14:00 is in year 0 in UTC
        raise InvalidInput(f"{at.isoformat()} is out of range: outside the years 1 to 9999 in UTC") from exc


# -- internals -----------------------------------------------------------------


def _point(store: EventStore, flow_id: str, point: int | datetime) -> int:
    head = store.revision(flow_id)
    if head == 0:
        raise flow_not_found(store, flow_id)
    if isinstance(point, datetime):
        return _target_revision(store, flow_id, head, None, point)
    if point is None:
        raise InvalidInput("give a revision or a time to compare, not None")
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
    return _revision_at(store, flow_id, head, in_utc(at))


def _revision_at(store: EventStore, flow_id: str, head: int, at: datetime) -> int:
    """The last revision of the prefix of the log recorded at or before ``at``: up to the first event past it.

    Times are the store clock's, which can step back (an NTP correction), so
    a later event may carry an earlier time than the one before it. The
    state "as of ``at``" is then still a state the flow was in: the events up
    to, not including, the first one recorded after ``at``, never a later
    event without an earlier one.
    """
    moment: Any = format_time(at) if store.dialect == "sqlite" else at
    c = flow_events.c
    query = (
        sa.select(c.revision)
        .where(c.flow_id == flow_id, c.revision <= head, c.recorded_at > moment)
        .order_by(c.revision)
        .limit(1)
    )
    rows = store._fetch(query)
    return head if not rows else int(rows[0][0]) - 1


_AFTER = flow_events.alias("after")
"""The event after a snapshot's, whose ``prev_hash`` must be the snapshot's event's hash."""


def _nearest_snapshot(store: EventStore, flow_id: str, target: int) -> tuple[FlowView, int, str]:
    """The latest trustworthy snapshot at or before ``target``, or an empty view at 0; and the
    hash the next event must name as its ``prev_hash`` (the snapshot's event's, or ``GENESIS``).

    The next event's ``prev_hash`` comes in the same query, so a fold from the
    snapshot that reads no hashes (the lean read) still checks its first link.
    """
    s, e = flow_snapshots.c, flow_events.c
    candidates = (
        sa.select(s.revision, s.event_hash, s.state_hash, e.hash, _AFTER.c.prev_hash)
        .select_from(
            flow_snapshots.outerjoin(
                flow_events, sa.and_(e.flow_id == s.flow_id, e.revision == s.revision)
            ).outerjoin(_AFTER, sa.and_(_AFTER.c.flow_id == s.flow_id, _AFTER.c.revision == s.revision + 1))
        )
        .where(s.flow_id == flow_id, s.fold_version == FOLD_VERSION, s.revision <= target)
        .order_by(s.revision.desc())
        .limit(3)
    )
    with store.reading() as conn:
        for revision, event_hash, state_hash, logged, next_prev in conn.execute(candidates).all():
            if logged is None or bytes(logged) != bytes(event_hash):
                continue  # the history it was taken from is not the history now
            state = conn.execute(
                sa.select(s.state).where(
                    s.flow_id == flow_id, s.fold_version == FOLD_VERSION, s.revision == revision
                )
            ).scalar_one()
            if digest(state.encode()) != bytes(state_hash):
                continue  # the snapshot was edited
            if revision < target and next_prev is not None and bytes(next_prev) != bytes(logged):
                raise _unchained(store, flow_id, revision + 1)
            try:
                view = _decode(store, flow_id, revision, orjson.loads(state))
            except (ValueError, TypeError, KeyError, AttributeError):
                continue  # it hashes, but is no state a fold wrote: rewritten with its hash, ignored
            return view, revision, bytes(logged).hex()
    return FlowView(), 0, GENESIS.hex()


def _chained(
    store: EventStore,
    flow_id: str,
    events: Iterable[RecordedEvent],
    first: int,
    prev_hash: str | None,
    last: int | None = None,
) -> Iterator[RecordedEvent]:
    """``events``, checked to be revisions ``first`` to ``last`` (or on to their end) without a gap,
    each naming the one before as its ``prev_hash`` (the first one ``prev_hash``, unless None).

    A comparison per event, no hashing: a fold over a log with a row deleted,
    inserted or moved stops with ``IntegrityViolation`` instead of answering.
    """
    expected = first
    for event in events:
        if event.revision != expected:
            raise _missing(store, flow_id, expected)
        if prev_hash is not None and event.prev_hash != prev_hash:
            raise _unchained(store, flow_id, expected)
        prev_hash = event.hash
        expected += 1
        yield event
    if last is not None and expected <= last:
        raise _missing(store, flow_id, expected)


def _in_order(
    store: EventStore, flow_id: str, events: Iterable[FoldInput], first: int, last: int
) -> Iterator[FoldInput]:
    """``events`` of the lean read, checked to be revisions ``first`` to ``last``, no gap."""
    expected = first
    for event in events:
        if event.revision != expected:
            raise _missing(store, flow_id, expected)
        expected += 1
        yield event
    if expected <= last:
        raise _missing(store, flow_id, expected)


def _linked_lean(
    store: EventStore, flow_id: str, first: int, last: int, before_hash: str
) -> Iterator[FoldInput]:
    """The lean read of revisions ``first`` to ``last`` (``FoldInput``: no ids, metadata), each
    event's ``prev_hash`` compared as it is read with the hash of the one before (``first``'s with
    ``before_hash``: the snapshot's event's, or ``GENESIS``). The hashes come raw with each row:
    comparing them costs a fraction of decoding them, and no second query."""
    c = flow_events.c
    base = (
        sa.select(*FOLD_COLUMNS, c.prev_hash, c.hash)
        .where(c.flow_id == flow_id, c.revision <= last)
        .order_by(c.revision)
    )
    decode = store._backend.decode_for_fold
    # the revision and hash of the event before (a gap is left to ``_in_order`` to name)
    before = (first - 1, bytes.fromhex(before_hash))
    for rows in store._pages(lambda cur: base.where(c.revision > cur), lambda r: r[1], first - 1, None):
        for row in rows:
            revision, prev_hash, own_hash = row[1], row[5], row[6]
            if revision == before[0] + 1 and bytes(prev_hash) != before[1]:
                raise _unchained(store, flow_id, revision)
            before = (revision, bytes(own_hash))
            yield decode(row)


def _anchored(store: EventStore, flow_id: str, first: int, last: int | None) -> Iterator[RecordedEvent]:
    """The flow's events ``first`` to ``last``, chained: read from the one before ``first``, whose
    hash the first must name (one row more, where the state before it was folded apart)."""
    if first == 1:
        yield from _chained(
            store, flow_id, store.read_flow(flow_id, to_revision=last), 1, GENESIS.hex(), last
        )
        return
    read = store.read_flow(flow_id, from_revision=first - 1, to_revision=last)
    events = _chained(store, flow_id, read, first - 1, None, last)
    next(events, None)  # the anchor itself: only its hash is wanted
    yield from events


def _missing(store: EventStore, flow_id: str, revision: int) -> EventStoreError:
    return _unless_pruned(
        store,
        flow_id,
        f"flow {flow_id!r} has no event at revision {revision} though it has later ones: its chain is "
        "broken; `eventstore verify` says where",
        revision,
    )


def _unchained(store: EventStore, flow_id: str, revision: int) -> EventStoreError:
    link = (
        "does not start its chain (its prev_hash is not GENESIS)"
        if revision == 1
        else f"does not chain onto revision {revision - 1} (its prev_hash is not that event's hash)"
    )
    return _unless_pruned(
        store,
        flow_id,
        f"flow {flow_id!r} at revision {revision} {link}: its chain is broken; "
        "`eventstore verify` says where",
        revision,
    )


def _unless_pruned(store: EventStore, flow_id: str, message: str, revision: int) -> EventStoreError:
    """``IntegrityViolation(message)``, unless retention pruned the flow as it was read (``FlowArchived``):
    its events went on the way, which is no broken chain. Asked only once a fold found one."""
    gone = flow_not_found(store, flow_id)
    if isinstance(gone, FlowArchived):
        return gone
    return IntegrityViolation(message, flow_id=flow_id, revision=revision)


class _Snapshot(NamedTuple):
    revision: int
    event_hash: str
    head: bytes  # canonical JSON: the flow and the list of its step parts
    parts: dict[bytes, str]  # the parts not stored since they last changed


def _encode(view: FlowView, event: RecordedEvent) -> _Snapshot:
    parts, bodies = view.steps.encode_parts()
    flow = None if view.flow is None else flow_to_dict(view.flow)
    head = canonical({"flow": flow, "parts": parts}, what="snapshot")
    return _Snapshot(event.revision, event.hash, head, bodies)


def _decode(store: EventStore, flow_id: str, revision: int, head: dict[str, Any]) -> FlowView:
    flow = None if head["flow"] is None else flow_from_dict(head["flow"])
    if "parts" not in head:  # written before steps were kept in parts
        return FlowView(flow, view_from_dict(head).steps)
    listed = [(bytes.fromhex(part_hash), ids) for part_hash, ids in head["parts"]]
    return FlowView(flow, Steps.stored(listed, _part_loader(store, flow_id, revision)))


def _part_loader(store: EventStore, flow_id: str, revision: int) -> PartLoader:
    """Reads a snapshot's parts when their steps are first used; the log answers for a bad one.

    That may be long after ``state_at`` returned: once the store is closed, ``StoreClosed``
    saying so; once retention pruned the flow (its parts and events with it), ``FlowArchived``.
    """
    p = snapshot_parts.c

    def load(wanted: list[tuple[bytes, list[str]]]) -> Loaded:
        bodies: dict[bytes, str] = {}
        try:
            with store.reading() as conn:
                for start in range(0, len(wanted), 500):
                    hashes = [part_hash for part_hash, _ in wanted[start : start + 500]]
                    query = sa.select(p.hash, p.body).where(
                        p.flow_id == flow_id, p.fold_version == FOLD_VERSION, p.hash.in_(hashes)
                    )
                    bodies.update((bytes(h), body) for h, body in conn.execute(query))
        except StoreClosed as exc:
            raise StoreClosed(
                f"the store is closed: this state of flow {flow_id!r} was read from a snapshot and reads "
                "its steps when first used; keep view.copy() or call view.steps.load_all() before closing"
            ) from exc
        checked: dict[bytes, str] = {}
        damaged: list[str] = []
        for part_hash, ids in wanted:
            body = bodies.get(part_hash)
            if body is not None and digest(body.encode()) == part_hash:
                checked[part_hash] = body
            else:
                damaged += ids
        # missing or edited: fold the flow up to the snapshot instead
        return Loaded(checked, _refold(store, flow_id, revision, damaged) if damaged else {})

    return load


def _refold(store: EventStore, flow_id: str, revision: int, step_ids: list[str]) -> dict[str, StepState]:
    """The steps ``step_ids`` as of ``revision``, folded from the log, for parts found missing or edited."""
    folded = FlowView()
    last = 0
    for event in _chained(store, flow_id, store.read_flow(flow_id, to_revision=revision), 1, GENESIS.hex()):
        folded.apply(event)
        last = event.revision
    if last < revision:  # the events went after the state was read: retention pruned the flow
        error = flow_not_found(store, flow_id)
        error.add_note(
            f"this state of flow {flow_id!r} was read from its snapshot at revision {revision}, whose "
            "steps load when first used; load them (view.steps.load_all()) before a prune to keep them"
        )
        raise error
    lost = [step_id for step_id in step_ids if step_id not in folded.steps]
    if lost:  # the snapshot was checked against this log's hash at ``revision``: the log was altered
        raise IntegrityViolation(
            f"flow {flow_id!r} up to revision {revision} has no step {lost[0]!r}, which its snapshot lists",
            flow_id=flow_id,
        )
    return {step_id: folded.steps[step_id] for step_id in step_ids}


def _save_snapshots(store: EventStore, flow_id: str, pending: list[_Snapshot]) -> None:
    """Store the snapshots folded on the way, and their new parts; a cache, so saving is idempotent.

    Another caller folding the same flow may save the same snapshots at the
    same moment (concurrent ``state_at`` calls, the maintenance ``snapshots``
    job), so every row is an upsert: one already there is either that
    caller's (the same fold of the same events: rewriting it changes
    nothing) or untrustworthy, since ``_nearest_snapshot`` passed it over
    (replaced by the one just folded). Rows go in key order, so two savers
    lock them in the same order and cannot deadlock.
    """
    now = format_time(store.clock())
    rows = [
        {
            "flow_id": flow_id,
            "revision": snapshot.revision,
            "fold_version": FOLD_VERSION,
            "event_hash": bytes.fromhex(snapshot.event_hash),
            "state": snapshot.head.decode(),
            "state_hash": digest(snapshot.head),
            "created_at": now,
        }
        for snapshot in sorted(pending, key=lambda snapshot: snapshot.revision)
    ]
    parts = {part_hash: body for snapshot in pending for part_hash, body in snapshot.parts.items()}
    with store.transaction() as tx:
        conn = tx.connection
        dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        if parts:
            insert_parts = dialect_insert(snapshot_parts)
            conn.execute(
                # A part already stored under its hash is rewritten: that repairs one edited since.
                insert_parts.on_conflict_do_update(
                    index_elements=["flow_id", "fold_version", "hash"],
                    set_={"body": insert_parts.excluded.body},
                ),
                [
                    {
                        "flow_id": flow_id,
                        "fold_version": FOLD_VERSION,
                        "hash": part_hash,
                        "body": parts[part_hash],
                    }
                    for part_hash in sorted(parts)
                ],
            )
        insert = dialect_insert(flow_snapshots)
        replaced = ("event_hash", "state", "state_hash", "created_at")
        conn.execute(
            insert.on_conflict_do_update(
                index_elements=["flow_id", "revision", "fold_version"],
                set_={column: insert.excluded[column] for column in replaced},
            ),
            rows,
        )


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


_IDENTITY = frozenset({"flow_id", "parent_flow_id", "revision", "event_count", "scheduled_revision"})
"""What ``diff_flows`` leaves out besides the times: ids and revisions, which differ between any two flows."""


def _comparable(view: dict[str, Any]) -> dict[str, Any]:
    ignored = _IDENTITY | _TIMES | {"lease_expires_at"}
    flow = {k: v for k, v in (view["flow"] or {}).items() if k not in ignored}
    steps = {
        step_id: {k: v for k, v in step.items() if k not in ignored}
        for step_id, step in view["steps"].items()
    }
    return {"flow": flow, "steps": steps}
