"""Flow ids compare and sort by code point on PostgreSQL, as on SQLite, whatever the database's collation.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06

The ``flow_id`` columns took the database's default collation: in a database
created with an ICU or ``en_US`` locale, ``store.flows()`` listed ``a A b B``
where SQLite (and the ``C`` collation) lists ``A B a b``, so a caller paging
with ``after=`` saw another order on each backend. Declaring the columns
``COLLATE "C"`` makes their indexes, the ``ORDER BY`` of every listing and the
keyset comparison ``flow_id > :after`` (a column's collation wins over a
parameter's) all use code point order. The table is not rewritten, but every
index on a ``flow_id`` is rebuilt under a lock that blocks writes, so on a
large log run it in a quiet moment. SQLite compares text by code point
already: nothing changes there.
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_TABLES = (
    "flow_events",
    "flow_snapshots",
    "snapshot_parts",
    "flow_tombstones",
    "pruned_events",
    "prune_authorisations",
    "legal_holds",
)


def _collate(collation: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in _TABLES:
        op.execute(f'ALTER TABLE {table} ALTER COLUMN flow_id TYPE varchar(200) COLLATE "{collation}"')


def upgrade() -> None:
    """Give every ``flow_id`` column the ``C`` collation on PostgreSQL."""
    _collate("C")


def downgrade() -> None:
    """Give the ``flow_id`` columns the database's default collation again."""
    _collate("default")
