"""The core tables, written once on SQLAlchemy Core for both backends.

The Alembic migrations in ``migrations/`` create these; this module is what
queries and autogenerate read. docs/schema.md describes every column.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from .sqljson import JsonString, JsonText

metadata = sa.MetaData()

MAX_FLOW_ID_LENGTH = 200
MAX_TYPE_LENGTH = 200

# On SQLite ``position`` must be declared INTEGER to be the rowid; payloads are
# kept as the exact canonical text; times as canonical ISO-8601 text; event ids
# as their 16 bytes.
Position = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
EventId = sa.LargeBinary(16).with_variant(postgresql.UUID(as_uuid=True), "postgresql")
Payload = sa.Text().with_variant(postgresql.JSONB(), "postgresql")
Timestamp = sa.String(27).with_variant(postgresql.TIMESTAMP(timezone=True), "postgresql")


def code_point_string(length: int) -> sa.types.TypeEngine[str]:
    """Text compared and sorted by code point on both backends, whatever the PostgreSQL database's
    collation (``COLLATE "C"``), so listings and their keyset pages give one order everywhere."""
    return sa.String(length).with_variant(postgresql.VARCHAR(length, collation="C"), "postgresql")


FlowId = code_point_string(MAX_FLOW_ID_LENGTH)
"""A flow id (code point order since migration 0015)."""
Name = code_point_string(100)
"""A maintenance job's or projection's name (code point order since migration 0016)."""
ArchiveId = code_point_string(64)
"""A retention archive's id (code point order since migration 0016)."""

flow_events = sa.Table(
    "flow_events",
    metadata,
    sa.Column("position", Position, primary_key=True, autoincrement=False),
    sa.Column("flow_id", FlowId, nullable=False),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("event_id", EventId, nullable=False),
    sa.Column("type", sa.String(MAX_TYPE_LENGTH), nullable=False),
    sa.Column("schema_version", sa.Integer, nullable=False),
    sa.Column("data", Payload, nullable=False),
    sa.Column("metadata", Payload, nullable=False),
    sa.Column("recorded_at", Timestamp, nullable=False),
    sa.Column("data_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("metadata_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("prev_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("hash", sa.LargeBinary(32), nullable=False),
    sa.UniqueConstraint("flow_id", "revision", name="uq_flow_events_flow_revision"),
    sa.UniqueConstraint("event_id", name="uq_flow_events_event_id"),
    sa.Index("ix_flow_events_type_position", "type", "position"),
)

READ_COLUMNS = [
    flow_events.c.position,
    flow_events.c.flow_id,
    flow_events.c.revision,
    flow_events.c.event_id,
    flow_events.c.type,
    flow_events.c.schema_version,
    flow_events.c.data,
    flow_events.c.metadata,
    flow_events.c.recorded_at,
    flow_events.c.prev_hash,
    flow_events.c.hash,
]
"""The columns of ``flow_events`` an event is read back from, in ``RecordedEvent`` order
(``EventStore.query_events``)."""

# -- audit indexes (migrations 0007, 0010, 0011, 0012, 0020 and 0021) --------------
# Partial indexes, so appends of other events pay next to nothing for them.

AUDIT_EVENT_TYPES = (
    "DecisionRecorded",
    "GateOpened",
    "GateApproved",
    "GateRejected",
    "StepFailed",
    "StepTimedOut",
    "FlowFailed",
    "InterruptRecorded",
    "ResumeRecorded",
    "TaskFailed",
    "ThreadDeleted",
    "CheckpointsDeleted",
    "ThreadCopied",
)
"""The event types an audit trail reports (``eventstore.audit``); the audit indexes hold only these.
The last six are a LangGraph thread's (``eventstore.graph_checkpoints``): its interrupts, answers
and failed tasks (migration 0011), and who deleted or copied its checkpoints (migration 0021)."""

_e = flow_events.c


def _one_of(*names: str) -> sa.ColumnElement[bool]:
    """``type = 'A' OR type = 'B' ...``, with literal names: a query repeats it to use the index.

    Not ``type IN (...)``: SQLite evaluates an IN list in an index's predicate
    through a temporary table, at ten times the cost on every insert.
    """
    return sa.or_(*(_e.type == sa.literal_column(f"'{name}'") for name in names))


audited = _one_of(*AUDIT_EVENT_TYPES)
"""The audit indexes' predicate: a query must repeat it to use them."""
audit_actor = sa.func.coalesce(
    JsonString(_e.data, "actor"), JsonString(_e.data, "by"), JsonString(_e.metadata, "actor")
)
"""Who an audited event is by: the first of data ``actor`` (a decision's), data ``by`` (a gate
decision's) and metadata ``actor`` that is a JSON string (migration 0010; ``audit._actor`` in Python)."""
causation = JsonText(_e.metadata, "causation_id")
correlation = JsonText(_e.metadata, "correlation_id")
owner_session = sa.func.coalesce(
    JsonString(_e.data, "owner_session_key"), JsonString(_e.data, "snapshot", "flow", "owner_session_key")
)
"""The owner session of a flow, on its first event (``FlowStarted``, or a ``FlowForked`` copy), when
it is a JSON string: a key of another JSON type names no session, on both backends (migration 0012)."""
flow_beginning = _one_of("FlowStarted", "FlowForked")
_earlier = flow_events.alias("earlier").c
first_beginning = sa.and_(
    flow_beginning,
    sa.or_(
        _e.revision == 1,
        ~sa.exists().where(
            _earlier.flow_id == _e.flow_id,
            _earlier.revision < _e.revision,
            _earlier.type.in_(("FlowStarted", "FlowForked")),
        ),
    ),
)
"""Rows that are their flow's first ``FlowStarted`` or ``FlowForked``: the one whose
``owner_session`` owns the flow (``audit.session_flows``, the tombstone retention writes).

A flow's first event needs no look back: the ``OR`` also keeps PostgreSQL from planning the
look back as a hash of every flow's beginnings, whose time grew with the store (35 ms for a
session of 10 flows among 10,526)."""


def _partial(name: str, *expressions: Any, where: Any) -> sa.Index:
    return sa.Index(name, *expressions, sqlite_where=where, postgresql_where=where)


_partial("ix_flow_events_audit", _e.flow_id, _e.position, where=audited)
_partial("ix_flow_events_audit_actor", audit_actor, _e.position, where=audited)
_partial("ix_flow_events_audit_time", _e.recorded_at, _e.position, where=audited)
_partial("ix_flow_events_causation", causation, where=causation.isnot(None))
_partial("ix_flow_events_correlation", correlation, _e.position, where=correlation.isnot(None))
_partial("ix_flow_events_session", owner_session, where=flow_beginning)

event_positions = sa.Table(
    "event_positions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("last_position", sa.BigInteger, nullable=False),
    sa.Column("generation", sa.BigInteger, nullable=False, server_default="0"),
    sa.CheckConstraint("id = 1", name="ck_event_positions_single_row"),
)
"""One row holding the last position handed out: bumped inside every append
transaction, so positions are gapless and in commit order (docs/design.md). Its
``generation`` counts the swaps of read models (migration 0013): an append reads it
back to learn whether its inline projections must be checked again."""

projection_checkpoints = sa.Table(
    "projection_checkpoints",
    metadata,
    sa.Column("name", Name, primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("build", sa.String(16), nullable=False),
    sa.Column("updated_at", sa.String(27), nullable=False),
)
"""Per projection: the version its tables were built by, the last position it
has applied (catch-up projections), and the tag its indexes carry."""

projection_tables = sa.Table(
    "projection_tables",
    metadata,
    sa.Column("table_name", sa.String(63), primary_key=True),
    sa.Column("projection", sa.String(100), nullable=False),
)
"""Per read-model table (live, or the fresh ``<table>__rebuild`` of a rebuild under
way): the projection that owns it. A build or rebuild refuses any other's."""

flow_snapshots = sa.Table(
    "flow_snapshots",
    metadata,
    sa.Column("flow_id", FlowId, primary_key=True),
    sa.Column("revision", sa.Integer, primary_key=True),
    sa.Column("fold_version", sa.Integer, primary_key=True),
    sa.Column("event_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("state", sa.Text, nullable=False),  # canonical JSON text, hashed as stored
    sa.Column("state_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("created_at", sa.String(27), nullable=False),
)
"""A flow's folded state at a revision, so time travel need not fold from revision 1.
A snapshot is trusted only if its ``event_hash`` is the log's hash at that
revision, its ``state_hash`` matches its state, and ``fold_version`` is the
current fold's: anything else is ignored and folded again."""

snapshot_parts = sa.Table(
    "snapshot_parts",
    metadata,
    sa.Column("flow_id", FlowId, primary_key=True),
    sa.Column("fold_version", sa.Integer, primary_key=True),
    sa.Column("hash", sa.LargeBinary(32), primary_key=True),
    sa.Column("body", sa.Text, nullable=False),  # canonical JSON {step_id: step}, hashed as stored
)
"""Up to ``PART_SIZE`` steps of a flow's snapshot, stored once under the SHA-256
of ``body`` and shared by every snapshot of the flow that lists that hash
(``eventstore/snapshots.py``). A part that is missing or does not match its
hash is ignored: the steps it held are folded from the log instead."""

log_checkpoints = sa.Table(
    "log_checkpoints",
    metadata,
    sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("timestamp_ms", sa.BigInteger, nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("signature", sa.LargeBinary(64), nullable=False),
    sa.Column("public_key", sa.LargeBinary(32), nullable=False),
)
"""A signed tree head: the RFC 6962 Merkle root over the first ``tree_size``
events (in position order), when it was taken and the Ed25519 signature of the
key ``key_id`` over (size, root, timestamp). docs/integrity.md has the format.
``public_key`` is the signer's raw key, so an export is self-contained; a
verifier still decides which ``key_id`` to trust."""

merkle_subtrees = sa.Table(
    "merkle_subtrees",
    metadata,
    sa.Column("height", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("start", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("hash", sa.LargeBinary(32), nullable=False),
)
"""A cache of the Merkle tree: the hash of each complete subtree of ``2**height``
leaves (height 8 and up) starting at leaf index ``start``. Filled as checkpoints
are taken, so proofs over millions of events read a few rows instead of
rehashing every leaf; ``verify_checkpoints`` checks it against the log."""

archives = sa.Table(
    "archives",
    metadata,
    sa.Column("archive_id", ArchiveId, primary_key=True),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("flows", sa.Integer, nullable=False),
    sa.Column("events", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.String(27), nullable=False),
    sa.Column("finished_at", sa.String(27), nullable=True),
)
"""One row per retention run: where its archive file is, its sha256 and how far
it got (written, verified, pruned), so a run cut short is finished next time."""

flow_tombstones = sa.Table(
    "flow_tombstones",
    metadata,
    sa.Column("flow_id", FlowId, primary_key=True),
    sa.Column("last_revision", sa.Integer, nullable=False),
    sa.Column("last_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("archive_id", ArchiveId, nullable=False),
    sa.Column("archive_sha256", sa.String(64), nullable=False),
    sa.Column("pruned_at", sa.String(27), nullable=False),
    sa.Column("owner_session_key", sa.Text, nullable=True),
    sa.Index("ix_flow_tombstones_owner", "owner_session_key"),
)
"""What is left of a pruned flow: enough for ``verify`` to account for it and
for its archive to be found and checked. While it stands, a trigger (migrations
0005 and 0014) refuses every insert into the flow, at any revision, unless it
is the pruned event itself (a restore): the id stays taken, and a flow a
restore has put only partly back takes no append. ``owner_session_key`` is the
session that owned the flow (``owner_session`` of its first start, "" for none;
migration 0019), so a session's questions count its own pruned flows; null on
tombstones from before 0019, whose owner is unknown."""

pruned_events = sa.Table(
    "pruned_events",
    metadata,
    sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("flow_id", FlowId, nullable=False),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("hash", sa.LargeBinary(32), nullable=False),
    sa.Index("ix_pruned_events_flow_revision", "flow_id", "revision"),
)
"""The chain hash of every pruned event at its position: the Merkle tree's
leaves, so signed checkpoints stay checkable after a prune."""

prune_authorisations = sa.Table(
    "prune_authorisations",
    metadata,
    sa.Column("flow_id", FlowId, primary_key=True),
)
"""The flows the running prune may delete from ``flow_events``: the append-only
triggers let a DELETE through only for a flow named here and not held. Rows
live only inside the prune's transaction, which removes them before it
commits, and refuses to start while rows someone else committed are here."""

legal_holds = sa.Table(
    "legal_holds",
    metadata,
    sa.Column("flow_id", FlowId, primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("held_by", sa.String(200), nullable=False),
    sa.Column("held_at", sa.String(27), nullable=False),
)
"""Flows that retention must never prune, until released; the delete guard refuses their events."""

maintenance_jobs = sa.Table(
    "maintenance_jobs",
    metadata,
    sa.Column("name", Name, primary_key=True),
    sa.Column("owner", sa.String(100), nullable=True),
    sa.Column("lease_until", sa.String(27), nullable=True),
    sa.Column("period", sa.String(27), nullable=True),
    sa.Column("last_started", sa.String(27), nullable=True),
    sa.Column("last_finished", sa.String(27), nullable=True),
    sa.Column("last_status", sa.String(16), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("last_result", sa.Text, nullable=True),
    sa.Column("last_position", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("locked", sa.String(27), nullable=True),
)
"""One row per maintenance job: the lease that makes it run once per period
across processes (``owner`` until ``lease_until``, for the run of ``period``),
how its last run went (``last_result`` is a JSON summary), where an
incremental job stopped (``last_position``), and whether the claim's holder
held the job's process lock (``locked``, migration 0018: the claim's
``last_started`` if so, and its claim dies with the lock; null, its lease
alone counts). A stamp, not a flag: a claim that does not set it (a process
from before 0018) does not inherit another claim's."""

unfinished_imports = sa.Table(
    "unfinished_imports",
    metadata,
    sa.Column("export_sha256", sa.String(64), primary_key=True),
    sa.Column("events_file", sa.Text, nullable=False),
    sa.Column("event_count", sa.BigInteger, nullable=False),
    sa.Column("events_imported", sa.BigInteger, nullable=False),
    sa.Column("started_at", sa.String(27), nullable=False),
    sa.Column("updated_at", sa.String(27), nullable=False),
)
"""The import under way (migration 0017): written in the transaction of an import's first batch,
updated by each batch after it, deleted by the one that commits its last. While a row stands the
store is missing events of that export: ``verify`` says so, and an import of another export is
refused. ``events_imported`` counts the export's events the store holds."""
