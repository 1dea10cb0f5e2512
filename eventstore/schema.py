"""The core tables, written once on SQLAlchemy Core for both backends.

The Alembic migrations in ``migrations/`` create these; this module is what
queries and autogenerate read. docs/schema.md describes every column.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

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

flow_events = sa.Table(
    "flow_events",
    metadata,
    sa.Column("position", Position, primary_key=True, autoincrement=False),
    sa.Column("flow_id", sa.String(MAX_FLOW_ID_LENGTH), nullable=False),
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

event_positions = sa.Table(
    "event_positions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("last_position", sa.BigInteger, nullable=False),
    sa.CheckConstraint("id = 1", name="ck_event_positions_single_row"),
)
"""One row holding the last position handed out: bumped inside every append
transaction, so positions are gapless and in commit order (docs/design.md)."""

projection_checkpoints = sa.Table(
    "projection_checkpoints",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("build", sa.String(16), nullable=False),
    sa.Column("updated_at", sa.String(27), nullable=False),
)
"""Per projection: the version its tables were built by, the last position it
has applied (catch-up projections), and the tag its indexes carry."""

flow_snapshots = sa.Table(
    "flow_snapshots",
    metadata,
    sa.Column("flow_id", sa.String(MAX_FLOW_ID_LENGTH), primary_key=True),
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

log_checkpoints = sa.Table(
    "log_checkpoints",
    metadata,
    sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("timestamp_ms", sa.BigInteger, nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("signature", sa.LargeBinary(64), nullable=False),
)
"""A signed tree head: the RFC 6962 Merkle root over the first ``tree_size``
events (in position order), when it was taken and the Ed25519 signature of the
key ``key_id`` over (size, root, timestamp). docs/integrity.md has the format."""

archives = sa.Table(
    "archives",
    metadata,
    sa.Column("archive_id", sa.String(64), primary_key=True),
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
    sa.Column("flow_id", sa.String(MAX_FLOW_ID_LENGTH), primary_key=True),
    sa.Column("last_revision", sa.Integer, nullable=False),
    sa.Column("last_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("archive_id", sa.String(64), nullable=False),
    sa.Column("archive_sha256", sa.String(64), nullable=False),
    sa.Column("pruned_at", sa.String(27), nullable=False),
)
"""What is left of a pruned flow: enough for ``verify`` to account for it and
for its archive to be found and checked."""

pruned_events = sa.Table(
    "pruned_events",
    metadata,
    sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("flow_id", sa.String(MAX_FLOW_ID_LENGTH), nullable=False),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("hash", sa.LargeBinary(32), nullable=False),
)
"""The chain hash of every pruned event at its position: the Merkle tree's
leaves, so signed checkpoints stay checkable after a prune."""

legal_holds = sa.Table(
    "legal_holds",
    metadata,
    sa.Column("flow_id", sa.String(MAX_FLOW_ID_LENGTH), primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("held_by", sa.String(200), nullable=False),
    sa.Column("held_at", sa.String(27), nullable=False),
)
"""Flows that retention must never prune, until released."""

maintenance_jobs = sa.Table(
    "maintenance_jobs",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("owner", sa.String(100), nullable=True),
    sa.Column("lease_until", sa.String(27), nullable=True),
    sa.Column("last_started", sa.String(27), nullable=True),
    sa.Column("last_finished", sa.String(27), nullable=True),
    sa.Column("last_status", sa.String(16), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("last_position", sa.BigInteger, nullable=False, server_default="0"),
)
"""One row per maintenance job: the lease that makes it run once per period
across processes, and how its last run went."""
