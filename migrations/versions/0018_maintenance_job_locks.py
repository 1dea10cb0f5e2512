"""Mark the maintenance claims whose holder holds the job's process lock, so a dead run is known at once.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07

A maintenance run killed outright (SIGKILL) left its claim in
``maintenance_jobs`` to its lease: ``--status`` said "running" and the
period was not run again until the lease expired and the next period came.
A run now holds a lock that dies with its process (``process_locks``, kind
``job``) while it holds its claim, and says so in ``locked``: the claim's
own ``last_started``. A claim whose ``locked`` is its ``last_started`` and
whose lock is free is a dead run's. A stamp, not a flag, so that a claim
written by a process still on the code from before the upgrade (its
``UPDATE`` leaves ``locked`` as it was) does not inherit the previous
claim's mark and pass for dead while it runs. Rows claimed before the
upgrade are null: their leases alone count, as they did.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``maintenance_jobs.locked``, null."""
    op.add_column("maintenance_jobs", sa.Column("locked", sa.String(27), nullable=True))


def downgrade() -> None:
    """Drop ``maintenance_jobs.locked``."""
    with op.batch_alter_table("maintenance_jobs") as batch:
        batch.drop_column("locked")
