"""Job, projection and archive names sort by code point on PostgreSQL, whatever its collation.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06

Migration 0015 did this for flow ids; the names operators read in listings
took the database's default collation still, so in an ICU or ``en_US``
database ``eventstore maintain --status`` listed jobs ``a A b B`` (the
order of ``maintenance_jobs.name``), as did the projections an import left
behind and the rebuilds refusing a retention run
(``projection_checkpoints.name``) and the archives of one moment
(``archives.archive_id``), where SQLite lists ``A B a b``. The archive id
the tombstones name (``flow_tombstones.archive_id``) is compared with
``archives.archive_id`` and takes the same collation. Only the primary key
indexes of these small tables are rebuilt. SQLite compares text by code
point already: nothing changes there.
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("maintenance_jobs", "name", 100),
    ("projection_checkpoints", "name", 100),
    ("archives", "archive_id", 64),
    ("flow_tombstones", "archive_id", 64),
)


def _collate(collation: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column, length in _COLUMNS:
        op.execute(f'ALTER TABLE {table} ALTER COLUMN {column} TYPE varchar({length}) COLLATE "{collation}"')


def upgrade() -> None:
    """Give the job, projection and archive name columns the ``C`` collation on PostgreSQL."""
    _collate("C")


def downgrade() -> None:
    """Give those columns the database's default collation again."""
    _collate("default")
