"""The append-only flow_events log and its position counter.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_SQLITE_GUARDS = [
    f"""CREATE TRIGGER flow_events_no_{verb.lower()} BEFORE {verb} ON flow_events
    BEGIN SELECT RAISE(ABORT, 'flow_events is append-only: {verb} refused'); END"""
    for verb in ("UPDATE", "DELETE")
]

_PG_GUARD_FUNCTION = """
CREATE FUNCTION flow_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'flow_events is append-only: % refused', TG_OP
        USING ERRCODE = 'EA001';
END
$$"""

_PG_GUARDS = [
    """CREATE TRIGGER flow_events_no_update_delete BEFORE UPDATE OR DELETE ON flow_events
    FOR EACH ROW EXECUTE FUNCTION flow_events_append_only()""",
    """CREATE TRIGGER flow_events_no_truncate BEFORE TRUNCATE ON flow_events
    FOR EACH STATEMENT EXECUTE FUNCTION flow_events_append_only()""",
]


def upgrade() -> None:
    """Create flow_events, event_positions and the append-only triggers."""
    op.create_table(
        "flow_events",
        sa.Column(
            "position",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
            autoincrement=False,
        ),
        sa.Column("flow_id", sa.String(200), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column(
            "event_id",
            sa.LargeBinary(16).with_variant(postgresql.UUID(as_uuid=True), "postgresql"),
            nullable=False,
        ),
        sa.Column("type", sa.String(200), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("data", sa.Text().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("metadata", sa.Text().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column(
            "recorded_at",
            sa.String(27).with_variant(postgresql.TIMESTAMP(timezone=True), "postgresql"),
            nullable=False,
        ),
        sa.Column("data_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("metadata_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("position", name="pk_flow_events"),
        sa.UniqueConstraint("flow_id", "revision", name="uq_flow_events_flow_revision"),
        sa.UniqueConstraint("event_id", name="uq_flow_events_event_id"),
    )
    op.create_index("ix_flow_events_type_position", "flow_events", ["type", "position"])
    positions = op.create_table(
        "event_positions",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("last_position", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_event_positions"),
        sa.CheckConstraint("id = 1", name="ck_event_positions_single_row"),
    )
    op.bulk_insert(positions, [{"id": 1, "last_position": 0}])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_GUARD_FUNCTION)
        for statement in _PG_GUARDS:
            op.execute(statement)
    else:
        for statement in _SQLITE_GUARDS:
            op.execute(statement)


def downgrade() -> None:
    """Drop the log. Irreversible loss of every event: only for empty stores."""
    op.drop_table("event_positions")
    op.drop_table("flow_events")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS flow_events_append_only()")
