"""Projection tables: which projection owns each read-model table, so no rebuild drops another's.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create projection_tables (projections built before record their tables when next opened)."""
    op.create_table(
        "projection_tables",
        sa.Column("table_name", sa.String(63), nullable=False),
        sa.Column("projection", sa.String(100), nullable=False),
        sa.PrimaryKeyConstraint("table_name", name="pk_projection_tables"),
    )


def downgrade() -> None:
    """Drop projection_tables."""
    op.drop_table("projection_tables")
