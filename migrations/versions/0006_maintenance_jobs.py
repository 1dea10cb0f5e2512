"""Maintenance jobs: one row per job, a lease so each runs once per period across processes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create maintenance_jobs."""
    op.create_table(
        "maintenance_jobs",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("owner", sa.String(100), nullable=True),
        sa.Column("lease_until", sa.String(27), nullable=True),
        sa.Column("period", sa.String(27), nullable=True),
        sa.Column("last_started", sa.String(27), nullable=True),
        sa.Column("last_finished", sa.String(27), nullable=True),
        sa.Column("last_status", sa.String(16), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_result", sa.Text(), nullable=True),
        sa.Column("last_position", sa.BigInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("name", name="pk_maintenance_jobs"),
    )


def downgrade() -> None:
    """Drop maintenance_jobs."""
    op.drop_table("maintenance_jobs")
