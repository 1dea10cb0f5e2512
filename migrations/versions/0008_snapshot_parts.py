"""Snapshot parts: a long flow's snapshot steps, stored once per content and loaded when used.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create snapshot_parts (snapshots written before keep their steps in their own state)."""
    op.create_table(
        "snapshot_parts",
        sa.Column("flow_id", sa.String(200), nullable=False),
        sa.Column("fold_version", sa.Integer(), nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("flow_id", "fold_version", "hash", name="pk_snapshot_parts"),
    )


def downgrade() -> None:
    """Drop snapshot_parts, and the snapshots that list parts (they can be made again)."""
    op.execute("DELETE FROM flow_snapshots WHERE state LIKE '%\"parts\":%'")
    op.drop_table("snapshot_parts")
