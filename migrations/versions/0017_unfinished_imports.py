"""Record an import under way, so a store an import was cut short in does not verify as whole.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07

An import writes a batch per transaction and is resumable; one killed part
way left a store whose every chain verifies while events of the export were
still missing, and nothing said so. ``unfinished_imports`` holds a row for
the import under way (the export's SHA-256 and file, how far it got, when it
started), written and cleared in the import's own transactions. A store has
no import under way when it is upgraded: the table starts empty.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create unfinished_imports."""
    op.create_table(
        "unfinished_imports",
        sa.Column("export_sha256", sa.String(64), nullable=False),
        sa.Column("events_file", sa.Text(), nullable=False),
        sa.Column("event_count", sa.BigInteger(), nullable=False),
        sa.Column("events_imported", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.String(27), nullable=False),
        sa.Column("updated_at", sa.String(27), nullable=False),
        sa.PrimaryKeyConstraint("export_sha256", name="pk_unfinished_imports"),
    )


def downgrade() -> None:
    """Drop unfinished_imports."""
    op.drop_table("unfinished_imports")
