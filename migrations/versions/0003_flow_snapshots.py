"""Snapshots of folded flow state, for time travel over long flows.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create flow_snapshots."""
    op.create_table(
        "flow_snapshots",
        sa.Column("flow_id", sa.String(200), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("fold_version", sa.Integer(), nullable=False),
        sa.Column("event_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("state_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("created_at", sa.String(27), nullable=False),
        sa.PrimaryKeyConstraint("flow_id", "revision", "fold_version", name="pk_flow_snapshots"),
    )


def downgrade() -> None:
    """Drop flow_snapshots (they can always be made again from the log)."""
    op.drop_table("flow_snapshots")
