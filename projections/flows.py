"""The flow, step and session read models: the inline projection that keeps them.

``FlowProjection`` folds flow events (with ``eventstore.flow_fold.fold``) into
``flows``, ``flow_steps`` and ``sessions`` inside the append transaction.
``FlowQueries`` (``flow_queries.py``) answers the questions an agent runtime
and its operators ask of them.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from itertools import groupby
from operator import attrgetter
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect

from eventstore import EventStore, RecordedEvent, Transaction
from eventstore.flow_fold import (
    FLOW_STATUSES,
    STEP_EVENT_TYPES,
    FlowState,
    StepState,
    fold,
    forked_steps,
)
from eventstore.flows import FLOW_EVENTS
from eventstore.schema import FlowId, flow_beginning, flow_events

from .declaration import Projection
from .folding import REPORT_EVERY
from .rebuilding import SOLE_WRITER
from .rowio import TableIO, _sqlite_time, pipelined, run
from .types import JSON, UTCDateTime

ID = FlowId
"""A flow id, compared and sorted by code point as in ``flow_events``."""
NAME = sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")
"""Names and keys the events carry (sessions, steps, runs, owners): as long as the log holds them,
and sorted by code point on both backends, whatever the PostgreSQL database's collation."""
WARM_FLOWS = 4096
"""How many flows' states a FlowProjection remembers for the next command (least recent go)."""
WARM_STEPS = 1000
"""Flows with more steps than this are remembered without their steps."""

OPEN_LEASED = "status IN ('running', 'waiting') AND lease_owner IS NOT NULL"
"""A flow a worker may be working on: ``FlowQueries.interrupted`` asks this of its rows, as written
(SQLite uses a partial index only for a query whose WHERE has the index's terms). On SQLite, as
``+status``: that term then picks no index on status, which SQLite without statistics prefers."""

FLOW_FIELDS = tuple(f.name for f in dataclasses.fields(FlowState))
STEP_FIELDS = tuple(f.name for f in dataclasses.fields(StepState))


class FlowProjection(Projection):
    """Inline projection of flows, their steps, and the sessions that own them."""

    name: ClassVar[str] = "flows"
    version: ClassVar[int] = 8  # 8: the fold's version 6 (RFC 7396: nulls under a new object dropped)
    # 7: ids and names COLLATE "C" on PostgreSQL (code point order);
    # indexes in the listings' order (created_at, flow_id)
    # 6: JSON columns TEXT on SQLite (a bare number in one kept as written)
    # 5: the fold's version 5 (owners as the store's session filters read them)
    # 4: the fold's version 4 (times outside its range are None)
    # 3: flow_steps.scheduled_revision; the fold's version 3
    # 2: names as text; a run id may repeat in the log; the fold's version 2
    kind: ClassVar[str] = "inline"

    def define_tables(self, metadata: sa.MetaData) -> None:
        sa.Table(
            "flows",
            metadata,
            sa.Column("flow_id", ID, primary_key=True),
            sa.Column("controller_id", NAME, nullable=False),
            sa.Column("goal", sa.Text, nullable=False),
            sa.Column("owner_session_key", NAME, nullable=False),
            sa.Column("requester_origin", NAME),
            sa.Column("parent_flow_id", NAME),
            sa.Column("state", JSON, nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("current_step", NAME),
            sa.Column("wait", JSON),
            sa.Column("cancel_requested", sa.Boolean, nullable=False),
            sa.Column("result", JSON),
            sa.Column("error", JSON),
            sa.Column("revision", sa.Integer, nullable=False),
            sa.Column("event_count", sa.Integer, nullable=False),
            sa.Column("lease_owner", NAME),
            sa.Column("lease_generation", sa.Integer, nullable=False),
            sa.Column("lease_expires_at", UTCDateTime),
            sa.Column("created_at", UTCDateTime),
            sa.Column("updated_at", UTCDateTime),
            sa.Column("finished_at", UTCDateTime),
            # every listing's order (created_at, flow_id), so a page never sorts the table
            sa.Index("ix_flows_created", "created_at", "flow_id"),
            sa.Index("ix_flows_owner", "owner_session_key", "created_at", "flow_id"),
            sa.Index("ix_flows_status", "status", "created_at", "flow_id"),
            sa.Index("ix_flows_lease", "lease_expires_at"),
            # FlowQueries.interrupted's rows in its order: the open flows a worker leased, no others
            sa.Index(
                "ix_flows_interrupted",
                "lease_expires_at",
                "flow_id",
                sqlite_where=sa.text(f"+{OPEN_LEASED}"),
                postgresql_where=sa.text(OPEN_LEASED),
            ),
        )
        sa.Table(
            "flow_steps",
            metadata,
            sa.Column("flow_id", ID, primary_key=True),
            sa.Column("step_id", NAME, primary_key=True),
            sa.Column("name", NAME, nullable=False),
            sa.Column("run_id", NAME, nullable=False),
            sa.Column("task", JSON, nullable=False),
            sa.Column("runtime", NAME),
            sa.Column("position", sa.Integer, nullable=False),
            sa.Column("iteration", sa.Integer, nullable=False),
            sa.Column("child_session_key", NAME),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("retry_count", sa.Integer, nullable=False),
            sa.Column("result", JSON),
            sa.Column("output", JSON),
            sa.Column("error", sa.Text),
            sa.Column("reason", sa.Text),
            sa.Column("gate_status", sa.String(16)),
            sa.Column("gate_prompt", sa.Text),
            sa.Column("gate_options", JSON),
            sa.Column("gate_timeout_seconds", sa.Float),
            sa.Column("gate_by", NAME),
            sa.Column("gate_feedback", sa.Text),
            sa.Column("gate_selections", JSON),
            sa.Column("scheduled_at", UTCDateTime),
            sa.Column("started_at", UTCDateTime),
            sa.Column("finished_at", UTCDateTime),
            sa.Column("updated_at", UTCDateTime),
            sa.Column("revision", sa.Integer, nullable=False),
            sa.Column("scheduled_revision", sa.Integer, nullable=False),
            sa.Index("ix_flow_steps_run", "flow_id", "run_id"),
            sa.Index("ix_flow_steps_position", "flow_id", "position", "step_id"),
            sa.Index("ix_flow_steps_status", "flow_id", "status"),
            sa.Index("ix_flow_steps_name", "flow_id", "name"),
        )
        sa.Table(
            "sessions",
            metadata,
            sa.Column("session_key", NAME, primary_key=True),
            *(sa.Column(status, sa.Integer, nullable=False) for status in FLOW_STATUSES),
            sa.Column("event_count", sa.Integer, nullable=False),
            sa.Column("first_activity_at", UTCDateTime, nullable=False),
            sa.Column("last_activity_at", UTCDateTime, nullable=False),
            sa.Index("ix_sessions_last_activity", "last_activity_at"),
        )

    def prepare(self, store: EventStore) -> None:
        """Validate vocabulary events appended through ``store``, then create or rebuild the tables."""
        for model in FLOW_EVENTS:
            if model.event_type not in store.registry:
                store.registry.register(model)
        super().prepare(store)

    # -- loading -----------------------------------------------------------
    def load_flow(self, tx: Transaction, flow_id: str) -> FlowState | None:
        """The flow's current state, read once per transaction."""
        key = ("flow", flow_id)
        if key not in tx.memo:
            self._load(tx, [flow_id], [])
        state: FlowState | None = tx.memo[key]
        return state

    def load_step(self, tx: Transaction, flow_id: str, step_id: str) -> StepState | None:
        key = ("step", flow_id, step_id)
        if key not in tx.memo:
            self._load(tx, [], [(flow_id, step_id)])
        state: StepState | None = tx.memo[key]
        return state

    def find_run(self, tx: Transaction, flow_id: str, run_id: str) -> StepState | None:
        steps = self._io(tx.connection.dialect)[1]
        found = steps.select(tx.connection, {"flow_id": flow_id, "run_id": run_id})
        if not found:
            return None
        row = min(found, key=lambda values: _first_scheduled(StepState(*values)))
        step = StepState(*row)
        key = ("step", flow_id, step.step_id)
        if key not in tx.memo:
            tx.memo[key] = step
            tx.memo["row", *key] = steps.encode(row)
        return tx.memo[key]  # type: ignore[no-any-return]  # memo values are states

    def _load(self, tx: Transaction, flow_ids: Iterable[str], step_keys: Iterable[tuple[str, str]]) -> None:
        """Read the rows of these flows and steps into the transaction's memo, once."""
        memo, conn = tx.memo, tx.connection
        wanted = [f for f in dict.fromkeys(flow_ids) if ("flow", f) not in memo]
        keys = [k for k in dict.fromkeys(step_keys) if ("step", *k) not in memo]
        keys = [k for k in keys if not _from_warm(memo, *k)]
        if not wanted and not keys:  # a fold's rows, read already by the command that appends
            return
        if memo.get(SOLE_WRITER):
            for flow_id in wanted:
                memo["flow", flow_id] = None
            for flow_id, step_id in keys:
                memo["step", flow_id, step_id] = None
            return
        flows, steps = self._io(conn.dialect)
        for flow_id in wanted:
            found = flows.select(conn, {"flow_id": flow_id})
            memo["flow", flow_id] = FlowState(*found[0]) if found else None
            if found:
                memo["row", "flow", flow_id] = flows.encode(found[0])
        for flow_id, step_id in keys:
            found = steps.select(conn, {"flow_id": flow_id, "step_id": step_id})
            memo["step", flow_id, step_id] = StepState(*found[0]) if found else None
            if found:
                memo["row", "step", flow_id, step_id] = steps.encode(found[0])

    # -- warm states: a command need not re-read what this process just wrote --------
    def warm(self, tx: Transaction, flow_id: str) -> bool:
        """Put the flow's state as this process last committed it into ``tx``, if remembered.

        The state is only a guess: a command that uses it must append with its
        revision as the expected one, so that a flow changed since by anyone
        else fails the append and is read again.
        """
        if ("flow", flow_id) in tx.memo:
            return False
        with self._warm_lock:
            entry = self._warm.pop(flow_id, None)
        if entry is None:
            return False
        flow, row, steps = entry
        tx.memo["flow", flow_id] = flow
        tx.memo["row", "flow", flow_id] = row
        tx.memo["warm", flow_id] = steps
        return True

    def keep_warm(self, tx: Transaction, flow_id: str) -> None:
        """Remember the flow's state and rows as ``tx``, now committed, left them."""
        memo = tx.memo
        flow = memo.get(("flow", flow_id))
        row = memo.get(("row", "flow", flow_id))
        if flow is None or row is None:
            return
        steps: dict[str, tuple[StepState, Any]] = memo.get(("warm", flow_id)) or {}
        for key, state in memo.items():
            if len(key) == 3 and key[0] == "step" and key[1] == flow_id and state is not None:
                steps[key[2]] = (state, memo["row", *key])
        if len(steps) > WARM_STEPS:
            steps = {}  # a long flow's steps are read when needed rather than held
        with self._warm_lock:
            held = self._warm.get(flow_id)
            if held is None or held[0].revision < flow.revision:
                self._warm[flow_id] = (flow, row, steps)
                self._warm.move_to_end(flow_id)
                if len(self._warm) > WARM_FLOWS:
                    self._warm.popitem(last=False)

    def prune_flows(self, tx: Transaction, flow_ids: Sequence[str]) -> None:
        """Retention pruned these flows: drop their rows and recount their sessions, in ``tx``."""
        from .pruning import prune_flow_read_models  # it builds on this module

        prune_flow_read_models(tx, flow_ids)
        with self._warm_lock:
            for flow_id in flow_ids:
                self._warm.pop(flow_id, None)

    def forget_remembered(self) -> None:
        """Drop every remembered state (after a rebuild: the next commands read the new rows)."""
        with self._warm_lock:
            self._warm.clear()

    def warm_flows(self) -> list[str]:
        """The flows whose state is remembered, least recently used first."""
        with self._warm_lock:
            return list(self._warm)

    def _io(self, dialect: sa.Dialect) -> tuple[TableIO, TableIO]:
        io = self._io_cache.get(dialect.name)
        if io is None:
            io = self._io_cache[dialect.name] = (
                TableIO(self.table("flows"), dialect, FLOW_FIELDS, ["flow_id"], projection=self.name),
                TableIO(
                    self.table("flow_steps"),
                    dialect,
                    STEP_FIELDS,
                    ["flow_id", "step_id"],
                    projection=self.name,
                ),
            )
        return io

    # -- folding -------------------------------------------------------------
    def apply(self, tx: Transaction, events: Sequence[RecordedEvent]) -> None:
        """Fold the events into the three read models; one upsert per touched row."""
        memo = tx.memo
        step_keys = [(e.flow_id, e.data["step_id"]) for e in events if _is_step_event(e)]
        self._load(tx, (e.flow_id for e in events), step_keys)
        flows: dict[str, FlowState] = {}
        steps: dict[tuple[str, str], StepState] = {}
        sessions: dict[str, dict[str, Any]] = {}
        for event in self._fill_gaps(tx, events):
            flow_key = ("flow", event.flow_id)
            flow = memo.get(flow_key)
            if flow is not None and event.revision <= flow.revision:
                continue  # already folded: applying is idempotent
            before = flow.status if flow is not None else None
            step_id = event.data.get("step_id") if event.type in STEP_EVENT_TYPES else None
            step = memo.get(("step", event.flow_id, step_id)) if isinstance(step_id, str) else None
            flow, step = fold(flow, step, event)
            if flow is None:
                continue
            memo[flow_key] = flows[event.flow_id] = flow
            if step is not None:
                memo["step", event.flow_id, step.step_id] = steps[event.flow_id, step.step_id] = step
            if event.type == "FlowForked" and before is None:
                for copied in forked_steps(event):
                    memo["step", event.flow_id, copied.step_id] = steps[event.flow_id, copied.step_id] = (
                        copied
                    )
            _count(sessions, flow, before, event.recorded_at)
        self._write(tx, flows.values(), steps.values(), sessions)
        self._remember_unstarted(memo, events)

    apply_many = apply

    def fill(
        self,
        store: EventStore,
        up_to: int,
        batch: Callable[[], AbstractContextManager[Transaction]],
        report: Callable[[int], None],
        *,
        batch_size: int,
    ) -> int:
        """Fold the log into empty tables flow by flow, writing each row once (for rebuilds).

        Rows are written a transaction per ``batch_size`` events or so (whole flows), or sooner
        once the events since the last took ``REPORT_EVERY`` by the store's clock to fold.
        """
        flow_io, step_io = self._io(store.engine.dialect)
        flow_values, step_values = flow_io.values, step_io.values
        encode_flow, encode_step = flow_io.encode, step_io.encode
        flow_rows: list[tuple[Any, ...]] = []
        step_rows: list[tuple[Any, ...]] = []
        sessions: dict[str, dict[str, Any]] = {}
        done = flushed = 0
        since = store.clock()

        def flush() -> None:
            nonlocal flushed, since
            flushed = done
            with batch() as tx:
                conn = tx.connection
                flow_io.insert(conn, flow_rows)
                step_io.insert(conn, step_rows)
                self._write_sessions(conn, sessions)
            flow_rows.clear()
            step_rows.clear()
            sessions.clear()
            report(done)
            since = store.clock()

        step_types = STEP_EVENT_TYPES
        for _flow_id, events in groupby(store.read_for_fold(up_to_position=up_to), _flow_of):
            if done - flushed >= batch_size or (done > flushed and store.clock() - since >= REPORT_EVERY):
                flush()
            flow: FlowState | None = None
            steps: dict[str, StepState] = {}
            counted, first, last = 0, _NEVER, _NEVER  # the flow's events, for its session
            for event in events:
                done += 1
                step = None
                if event.type in step_types:
                    step_id = event.data.get("step_id")
                    if isinstance(step_id, str):
                        step = steps.get(step_id)
                started = flow is None
                flow, step = fold(flow, step, event)
                if flow is None:
                    continue
                if step is not None:
                    steps[step.step_id] = step
                if event.type == "FlowForked" and started:
                    steps.update((copied.step_id, copied) for copied in forked_steps(event))
                # Sessions count a flow whole: its events, its activity span, its final status.
                counted += 1
                at = event.recorded_at
                if counted == 1:
                    first = last = at
                elif at > last:
                    last = at
                elif at < first:
                    first = at
            if flow is not None:
                flow_rows.append(encode_flow(flow_values(flow)))
                step_rows.extend([encode_step(step_values(step)) for step in steps.values()])
                _count_flow(sessions, flow, counted, first, last)
        flush()
        return done

    def _fill_gaps(self, tx: Transaction, events: Sequence[RecordedEvent]) -> list[RecordedEvent]:
        """Events preceded by any the read model missed (appended without this projection).

        A flow with a row has folded up to its revision: what lies between that
        and an event is read from the log. A stream with no row holds no flow
        the read model knows of; whatever type the event is (an event of the
        application too), a writer without this projection may have started
        the flow earlier in the stream: the log is read from that start, as a
        rebuild folds it (``_first_start``).
        """
        memo = tx.memo
        out: list[RecordedEvent] = []
        seen: dict[str, int] = {}
        for event in events:
            folded = seen.get(event.flow_id)
            if folded is None:
                flow = memo.get(("flow", event.flow_id))
                folded = flow.revision if flow is not None else self._first_start(tx, event) - 1
            if event.revision > folded + 1:
                missing = list(
                    tx.store.read_flow(
                        event.flow_id, from_revision=folded + 1, to_revision=event.revision - 1
                    )
                )
                self._load(tx, [], [(e.flow_id, e.data["step_id"]) for e in missing if _is_step_event(e)])
                out.extend(missing)
            out.append(event)
            seen[event.flow_id] = max(folded, event.revision)
        return out

    def _first_start(self, tx: Transaction, event: RecordedEvent) -> int:
        """The revision of the first start before ``event`` in a stream with no row: ``event``'s if none.

        Streams seen to hold no start are remembered by their last event's
        revision and hash: an event whose ``prev_hash`` is that hash follows
        the very events found to hold none (the chain commits to all of them, so
        an append rolled back remembers nothing that a later one could match),
        and the log is not asked again. After another process appended to the
        stream, only its events after the remembered one are read, once the log
        shows that event still there with that hash; otherwise the whole stream.
        """
        if event.revision == 1:
            return 1
        with self._warm_lock:
            known = self._unstarted.get(event.flow_id)
            if known is not None:
                self._unstarted.move_to_end(event.flow_id)
        if known is not None and known[1] == event.prev_hash:
            return event.revision
        e = flow_events.c
        starts = sa.select(sa.func.min(e.revision)).where(
            e.flow_id == event.flow_id, e.revision < event.revision, flow_beginning
        )
        if known is not None:
            revision, hash_ = known
            still = sa.select(e.hash).where(e.flow_id == event.flow_id, e.revision == revision)
            found, first = tx.connection.execute(
                sa.select(still.scalar_subquery(), starts.where(e.revision > revision).scalar_subquery())
            ).one()
            if found is not None and bytes(found).hex() == hash_:
                return event.revision if first is None else int(first)
        first = tx.connection.execute(starts).scalar()
        return event.revision if first is None else int(first)

    def _remember_unstarted(self, memo: dict[Any, Any], events: Sequence[RecordedEvent]) -> None:
        """Remember the streams of ``events`` that still have no row by their last event (revision, hash)."""
        last = {
            event.flow_id: (event.revision, event.hash)
            for event in events
            if memo.get(("flow", event.flow_id)) is None
        }
        if not last:
            return
        with self._warm_lock:
            for flow_id, seen in last.items():
                self._unstarted[flow_id] = seen
                self._unstarted.move_to_end(flow_id)
            while len(self._unstarted) > WARM_FLOWS:
                self._unstarted.popitem(last=False)

    def _write(
        self,
        tx: Transaction,
        flows: Iterable[FlowState],
        steps: Iterable[StepState],
        sessions: dict[str, dict[str, Any]],
    ) -> None:
        conn, memo = tx.connection, tx.memo
        flow_io, step_io = self._io(conn.dialect)
        with pipelined(conn) if flow_io.pipelines else _NO_PIPELINE:
            _write_rows(conn, memo, flow_io, [(("flow", f.flow_id), f) for f in flows])
            _write_rows(conn, memo, step_io, [(("step", s.flow_id, s.step_id), s) for s in steps])
            self._write_sessions(conn, sessions)

    def _write_sessions(self, conn: sa.Connection, sessions: dict[str, dict[str, Any]]) -> None:
        """Add each session's counts (deltas, so concurrent writers add up)."""
        if sessions:
            writer = self._session_writer(conn.dialect)
            run(conn, writer.sql, [writer.encode_session(item) for item in sessions.items()], many=True)

    def _session_writer(self, dialect: sa.Dialect) -> _Writer:
        writer = self._writer_cache.get(dialect.name)
        if writer is None:
            insert = postgresql.insert if dialect.name == "postgresql" else sqlite_dialect.insert
            writer = _Writer.compile(_session_upsert(insert, self.table("sessions")), dialect)
            self._writer_cache[dialect.name] = writer
        return writer

    def __init__(self) -> None:
        super().__init__()
        self._writer_cache: dict[str, _Writer] = {}
        self._io_cache: dict[str, tuple[TableIO, TableIO]] = {}
        self._warm: OrderedDict[str, tuple[FlowState, Any, dict[str, tuple[StepState, Any]]]] = OrderedDict()
        self._warm_lock = threading.Lock()
        self._unstarted: OrderedDict[str, tuple[int, str]] = OrderedDict()

    def targeting(self, suffix: str, tag: str) -> FlowProjection:
        clone = super().targeting(suffix, tag)
        clone._writer_cache = {}
        clone._io_cache = {}
        clone._warm = OrderedDict()
        clone._warm_lock = threading.Lock()
        clone._unstarted = OrderedDict()
        return clone


class _Writer:
    """A statement compiled once, fed rows converted in Python (no per-row bind processing)."""

    def __init__(self, sql: str, names: list[str], converters: list[Any], positional: bool) -> None:
        self.sql = sql
        self.names = names
        self.conversions = [(i, convert) for i, convert in enumerate(converters) if convert is not None]
        self.positional = positional

    @classmethod
    def compile(cls, statement: Any, dialect: sa.Dialect) -> _Writer:
        compiled = statement.compile(dialect=dialect)
        names = list(compiled.positiontup) if compiled.positional else list(compiled.binds)
        table = statement.table
        converters = [
            _sqlite_time if isinstance(table.c[name].type, UTCDateTime) and dialect.name == "sqlite" else None
            for name in names
        ]
        return cls(compiled.string, names, converters, bool(compiled.positional))

    def encode_session(self, item: tuple[str, dict[str, Any]]) -> Any:
        key, delta = item
        values = [key if name == "session_key" else delta[name] for name in self.names]
        for index, convert in self.conversions:
            values[index] = convert(values[index])
        return tuple(values) if self.positional else dict(zip(self.names, values, strict=True))


def _from_warm(memo: dict[Any, Any], flow_id: str, step_id: str) -> bool:
    """Move a step remembered with its flow into the memo; False if it was not remembered."""
    steps = memo.get(("warm", flow_id))
    found = steps.pop(step_id, None) if steps else None
    if found is None:
        return False
    memo["step", flow_id, step_id], memo["row", "step", flow_id, step_id] = found
    return True


def _is_step_event(event: RecordedEvent) -> bool:
    return event.type in STEP_EVENT_TYPES and isinstance(event.data.get("step_id"), str)


def _count(sessions: dict[str, dict[str, Any]], flow: FlowState, before: str | None, at: datetime) -> None:
    delta = sessions.get(flow.owner_session_key)
    if delta is None:
        delta = dict.fromkeys(FLOW_STATUSES, 0)
        delta.update(event_count=0, first_activity_at=at, last_activity_at=at)
        sessions[flow.owner_session_key] = delta
    delta["event_count"] += 1
    delta["last_activity_at"] = max(delta["last_activity_at"], at)
    delta["first_activity_at"] = min(delta["first_activity_at"], at)
    if before != flow.status:
        if before is not None:
            delta[before] -= 1
        delta[flow.status] += 1


_NEVER = datetime.min


def _first_scheduled(step: StepState) -> tuple[datetime, int, str]:
    """The order steps of one run are found in: the first scheduled (``FlowService`` schedules one
    step a run; a log written otherwise may hold more). ``step_by_run`` orders its SQL alike."""
    at = step.scheduled_at
    return (at.replace(tzinfo=None) if at is not None else _NEVER, step.scheduled_revision, step.step_id)


_flow_of = attrgetter("flow_id")
_NO_PIPELINE = nullcontext()


def _count_flow(
    sessions: dict[str, dict[str, Any]], flow: FlowState, events: int, first: datetime, last: datetime
) -> None:
    """What a whole flow adds to its session: as ``_count`` for each of its events would."""
    delta = sessions.get(flow.owner_session_key)
    if delta is None:
        delta = dict.fromkeys(FLOW_STATUSES, 0)
        delta.update(event_count=0, first_activity_at=first, last_activity_at=last)
        sessions[flow.owner_session_key] = delta
    delta["event_count"] += events
    delta["last_activity_at"] = max(delta["last_activity_at"], last)
    delta["first_activity_at"] = min(delta["first_activity_at"], first)
    delta[flow.status] += 1


def _session_upsert(insert: Any, sessions: sa.Table) -> Any:
    """Sessions are counted by deltas: concurrent appends to flows of one session add up."""
    statement = insert(sessions)
    new = statement.excluded
    later = sa.case(
        (new.last_activity_at > sessions.c.last_activity_at, new.last_activity_at),
        else_=sessions.c.last_activity_at,
    )
    earlier = sa.case(
        (new.first_activity_at < sessions.c.first_activity_at, new.first_activity_at),
        else_=sessions.c.first_activity_at,
    )
    add_counts = {name: sessions.c[name] + new[name] for name in (*FLOW_STATUSES, "event_count")}
    return statement.on_conflict_do_update(
        index_elements=["session_key"],
        set_={**add_counts, "last_activity_at": later, "first_activity_at": earlier},
    )


def _write_rows(
    conn: sa.Connection, memo: dict[Any, Any], io: TableIO, states: list[tuple[tuple[str, ...], Any]]
) -> None:
    """Write changed states, remembering each row as stored for the next diff."""
    rows = []
    for key, state in states:
        new = io.encode(io.values(state))
        rows.append((new, memo.get(("row", *key))))
        memo["row", *key] = new
    if rows:
        io.write(conn, rows)
