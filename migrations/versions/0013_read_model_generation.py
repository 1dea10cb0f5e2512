"""Read-model generation: a counter on the positions row that every swap of a read model bumps.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06

An append already bumps the single ``event_positions`` row, so it can read
the generation there at no cost. A process whose inline projections were
checked against generation N and that sees another one re-checks them
before it folds: a process opened before a newer version's rebuild swapped
its tables in refuses to fold with its older handlers (``ProjectionError``)
instead of writing rows the new version would not (docs/projections.md).
Adding a column with a constant default rewrites nothing on either backend.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``event_positions.generation``, 0."""
    op.add_column(
        "event_positions", sa.Column("generation", sa.BigInteger(), nullable=False, server_default="0")
    )


def downgrade() -> None:
    """Drop ``event_positions.generation``."""
    with op.batch_alter_table("event_positions") as batch:
        batch.drop_column("generation")
