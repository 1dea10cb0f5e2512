"""Record the owner session of a pruned flow in its tombstone, so a session's questions count its own.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07

A tombstone kept no session, so once retention had pruned any flow a question
asked of a session (``audit --session``, ``flows --session``, ``export
--session``) could no longer tell a mistyped key from a session whose flows
were all pruned, and its note counted every pruned flow of the store.
Retention now writes ``owner_session_key``, the session the flow's first
``FlowStarted`` or ``FlowForked`` names (as ``session_flows`` has it), in the
transaction that writes the tombstone; indexed, as a session's questions ask
for it. Tombstones from before the upgrade are null: their owner is unknown,
and a session's answer says it may own some of them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``flow_tombstones.owner_session_key``, null, and its index."""
    op.add_column("flow_tombstones", sa.Column("owner_session_key", sa.Text(), nullable=True))
    op.create_index("ix_flow_tombstones_owner", "flow_tombstones", ["owner_session_key"])


def downgrade() -> None:
    """Drop ``flow_tombstones.owner_session_key`` and its index."""
    op.drop_index("ix_flow_tombstones_owner", table_name="flow_tombstones")
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35+), not a batch: a batch's copy of the table is renamed
    # into place, which SQLite refuses while migration 0014's triggers name flow_tombstones
    op.drop_column("flow_tombstones", "owner_session_key")
