"""Retention: archive runs, tombstones of pruned flows, the leaves they leave behind, legal holds.

Also narrows the append-only guard to let exactly one operation delete: the
retention prune, which names the flows it may delete in
``prune_authorisations`` inside its own transaction (and empties it again
before committing). A flow under legal hold stays undeletable even then.
Every other UPDATE, DELETE or TRUNCATE is still refused. And a pruned flow's
id stays taken: inserting revision 1 of a flow with a tombstone is refused,
unless it is the very event that was pruned (a restore).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_SQLITE_DELETE_GUARD = """CREATE TRIGGER flow_events_no_delete BEFORE DELETE ON flow_events
    WHEN NOT EXISTS (SELECT 1 FROM prune_authorisations WHERE flow_id = OLD.flow_id)
        OR EXISTS (SELECT 1 FROM legal_holds WHERE flow_id = OLD.flow_id)
    BEGIN SELECT CASE WHEN EXISTS (SELECT 1 FROM legal_holds WHERE flow_id = OLD.flow_id)
        THEN RAISE(ABORT, 'flow_events is append-only: DELETE of a flow under legal hold refused')
        ELSE RAISE(ABORT, 'flow_events is append-only: DELETE refused') END; END"""

# Only rows starting a flow pay for it: one primary-key lookup in flow_tombstones.
# The message is what backends/sqlite.py translates to FlowPruned.
_SQLITE_REUSE_GUARD = """CREATE TRIGGER flow_events_no_pruned_reuse BEFORE INSERT ON flow_events
    WHEN NEW.revision = 1
        AND EXISTS (SELECT 1 FROM flow_tombstones WHERE flow_id = NEW.flow_id)
        AND NOT EXISTS (SELECT 1 FROM pruned_events
                        WHERE flow_id = NEW.flow_id AND revision = 1 AND hash = NEW.hash)
    BEGIN SELECT RAISE(ABORT, 'flow_events: the flow was pruned by retention: INSERT refused'); END"""

_SQLITE_OLD_DELETE_GUARD = """CREATE TRIGGER flow_events_no_delete BEFORE DELETE ON flow_events
    BEGIN SELECT RAISE(ABORT, 'flow_events is append-only: DELETE refused'); END"""

# The retention tables are looked up in the trigger's own schema, whatever the
# session's search_path.
_PG_GUARD_FUNCTION = """
CREATE OR REPLACE FUNCTION flow_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    allowed boolean;
    held boolean;
BEGIN
    IF TG_OP = 'DELETE' THEN
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %1$I.prune_authorisations WHERE flow_id = $1), '
                       'EXISTS (SELECT 1 FROM %1$I.legal_holds WHERE flow_id = $1)', TG_TABLE_SCHEMA)
            INTO allowed, held USING OLD.flow_id;
        IF held THEN
            RAISE EXCEPTION 'flow_events is append-only: DELETE of a flow under legal hold refused'
                USING ERRCODE = 'EA001';
        END IF;
        IF allowed THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION 'flow_events is append-only: % refused', TG_OP
        USING ERRCODE = 'EA001';
END
$$"""

# SQLSTATE EA002, the flow id as DETAIL and its archive as HINT: what
# backends/postgresql.py translates to FlowPruned. Unlike the delete guard, it
# runs on every new flow, so its query is static (planned once per session),
# with the search_path the migration ran with: the schema of these tables.
_PG_REUSE_FUNCTION = """
CREATE FUNCTION flow_events_no_pruned_reuse() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    archive text;
BEGIN
    SELECT t.archive_id INTO archive FROM flow_tombstones t
    WHERE t.flow_id = NEW.flow_id AND NOT EXISTS (
        SELECT 1 FROM pruned_events p WHERE p.flow_id = NEW.flow_id AND p.revision = 1 AND p.hash = NEW.hash);
    IF archive IS NULL THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'flow_events: flow % was pruned by retention into archive %: INSERT refused',
            NEW.flow_id, archive
        USING ERRCODE = 'EA002', DETAIL = NEW.flow_id, HINT = archive;
END
$$"""

# Fires only for rows starting a flow: other appends pay nothing for it.
_PG_REUSE_GUARD = """CREATE TRIGGER flow_events_no_pruned_reuse BEFORE INSERT ON flow_events
    FOR EACH ROW WHEN (NEW.revision = 1) EXECUTE FUNCTION flow_events_no_pruned_reuse()"""

_PG_OLD_GUARD_FUNCTION = """
CREATE OR REPLACE FUNCTION flow_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'flow_events is append-only: % refused', TG_OP
        USING ERRCODE = 'EA001';
END
$$"""


def upgrade() -> None:
    """Create the retention tables; let the prune delete unheld flows; keep pruned flow ids taken."""
    op.create_table(
        "archives",
        sa.Column("archive_id", sa.String(64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("flows", sa.Integer(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.String(27), nullable=False),
        sa.Column("finished_at", sa.String(27), nullable=True),
        sa.PrimaryKeyConstraint("archive_id", name="pk_archives"),
    )
    op.create_table(
        "flow_tombstones",
        sa.Column("flow_id", sa.String(200), nullable=False),
        sa.Column("last_revision", sa.Integer(), nullable=False),
        sa.Column("last_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("archive_id", sa.String(64), nullable=False),
        sa.Column("archive_sha256", sa.String(64), nullable=False),
        sa.Column("pruned_at", sa.String(27), nullable=False),
        sa.PrimaryKeyConstraint("flow_id", name="pk_flow_tombstones"),
    )
    op.create_table(
        "pruned_events",
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("flow_id", sa.String(200), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("position", name="pk_pruned_events"),
    )
    op.create_index("ix_pruned_events_flow_revision", "pruned_events", ["flow_id", "revision"])
    op.create_table(
        "legal_holds",
        sa.Column("flow_id", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("held_by", sa.String(200), nullable=False),
        sa.Column("held_at", sa.String(27), nullable=False),
        sa.PrimaryKeyConstraint("flow_id", name="pk_legal_holds"),
    )
    op.create_table(
        "prune_authorisations",
        sa.Column("flow_id", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("flow_id", name="pk_prune_authorisations"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_GUARD_FUNCTION)
        op.execute(_PG_REUSE_FUNCTION)
        op.execute(_PG_REUSE_GUARD)
    else:
        op.execute("DROP TRIGGER flow_events_no_delete")
        op.execute(_SQLITE_DELETE_GUARD)
        op.execute(_SQLITE_REUSE_GUARD)


def downgrade() -> None:
    """Restore the unconditional delete guard; drop the reuse guard and the retention tables."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER flow_events_no_pruned_reuse ON flow_events")
        op.execute("DROP FUNCTION flow_events_no_pruned_reuse()")
        op.execute(_PG_OLD_GUARD_FUNCTION)
    else:
        op.execute("DROP TRIGGER flow_events_no_pruned_reuse")
        op.execute("DROP TRIGGER flow_events_no_delete")
        op.execute(_SQLITE_OLD_DELETE_GUARD)
    op.drop_index("ix_pruned_events_flow_revision", table_name="pruned_events")
    for table in ("prune_authorisations", "legal_holds", "pruned_events", "flow_tombstones", "archives"):
        op.drop_table(table)
