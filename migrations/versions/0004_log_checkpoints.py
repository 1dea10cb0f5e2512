"""Signed checkpoints of the global Merkle tree over all events (RFC 6962), and its subtree cache.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create log_checkpoints and the subtree cache merkle_subtrees."""
    op.create_table(
        "log_checkpoints",
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("timestamp_ms", sa.BigInteger(), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("signature", sa.LargeBinary(64), nullable=False),
        sa.Column("public_key", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("tree_size", name="pk_log_checkpoints"),
    )
    op.create_table(
        "merkle_subtrees",
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("start", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("height", "start", name="pk_merkle_subtrees"),
    )


def downgrade() -> None:
    """Drop merkle_subtrees and log_checkpoints."""
    op.drop_table("merkle_subtrees")
    op.drop_table("log_checkpoints")
