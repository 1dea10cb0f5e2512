"""Retention: archive runs, tombstones of pruned flows, the leaves they leave behind, legal holds.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create archives, flow_tombstones, pruned_events and legal_holds."""
    op.create_table(
        "archives",
        sa.Column("archive_id", sa.String(64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("flows", sa.Integer(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.String(27), nullable=False),
        sa.Column("finished_at", sa.String(27), nullable=True),
        sa.PrimaryKeyConstraint("archive_id", name="pk_archives"),
    )
    op.create_table(
        "flow_tombstones",
        sa.Column("flow_id", sa.String(200), nullable=False),
        sa.Column("last_revision", sa.Integer(), nullable=False),
        sa.Column("last_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("archive_id", sa.String(64), nullable=False),
        sa.Column("archive_sha256", sa.String(64), nullable=False),
        sa.Column("pruned_at", sa.String(27), nullable=False),
        sa.PrimaryKeyConstraint("flow_id", name="pk_flow_tombstones"),
    )
    op.create_table(
        "pruned_events",
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("flow_id", sa.String(200), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("position", name="pk_pruned_events"),
    )
    op.create_table(
        "legal_holds",
        sa.Column("flow_id", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("held_by", sa.String(200), nullable=False),
        sa.Column("held_at", sa.String(27), nullable=False),
        sa.PrimaryKeyConstraint("flow_id", name="pk_legal_holds"),
    )


def downgrade() -> None:
    """Drop the retention tables."""
    for table in ("legal_holds", "pruned_events", "flow_tombstones", "archives"):
        op.drop_table(table)
