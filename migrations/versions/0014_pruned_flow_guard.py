"""Keep a pruned flow closed at every revision, not only at revision 1, until its restore finishes.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06

Migration 0005's guard refused only revision 1 of a flow with a tombstone.
A restore cut short leaves the flow's first events back and its tombstone in
place; an ordinary append then went in at the next revision, and the restore
could never finish (its events no longer matched the store's). Now every
insert into a flow with a tombstone is refused unless it is the very event
that was pruned at that revision (its hash is the pruned leaf's): exactly the
restore's inserts. Every insert pays one primary-key lookup in
``flow_tombstones`` (and, for a pruned flow, one index lookup in
``pruned_events``), docs/schema.md.
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# The message is what backends/sqlite.py translates to FlowPruned.
_SQLITE_GUARD = """CREATE TRIGGER flow_events_no_pruned_reuse BEFORE INSERT ON flow_events
    WHEN EXISTS (SELECT 1 FROM flow_tombstones WHERE flow_id = NEW.flow_id)
        AND NOT EXISTS (SELECT 1 FROM pruned_events
                        WHERE flow_id = NEW.flow_id AND revision = NEW.revision AND hash = NEW.hash)
    BEGIN SELECT RAISE(ABORT, 'flow_events: the flow was pruned by retention: INSERT refused'); END"""

_SQLITE_OLD_GUARD = """CREATE TRIGGER flow_events_no_pruned_reuse BEFORE INSERT ON flow_events
    WHEN NEW.revision = 1
        AND EXISTS (SELECT 1 FROM flow_tombstones WHERE flow_id = NEW.flow_id)
        AND NOT EXISTS (SELECT 1 FROM pruned_events
                        WHERE flow_id = NEW.flow_id AND revision = 1 AND hash = NEW.hash)
    BEGIN SELECT RAISE(ABORT, 'flow_events: the flow was pruned by retention: INSERT refused'); END"""

# As 0005's: SQLSTATE EA002, the flow id as DETAIL and its archive as HINT, a
# static query with the search_path the migration ran with.
_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION flow_events_no_pruned_reuse() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    archive text;
BEGIN
    SELECT t.archive_id INTO archive FROM flow_tombstones t
    WHERE t.flow_id = NEW.flow_id AND NOT EXISTS (
        SELECT 1 FROM pruned_events p
        WHERE p.flow_id = NEW.flow_id AND p.revision = NEW.revision AND p.hash = NEW.hash);
    IF archive IS NULL THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'flow_events: flow % was pruned by retention into archive %: INSERT refused',
            NEW.flow_id, archive
        USING ERRCODE = 'EA002', DETAIL = NEW.flow_id, HINT = archive;
END
$$"""

_PG_OLD_FUNCTION = """
CREATE OR REPLACE FUNCTION flow_events_no_pruned_reuse() RETURNS trigger LANGUAGE plpgsql
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

_PG_GUARD = """CREATE TRIGGER flow_events_no_pruned_reuse BEFORE INSERT ON flow_events
    FOR EACH ROW EXECUTE FUNCTION flow_events_no_pruned_reuse()"""

_PG_OLD_GUARD = """CREATE TRIGGER flow_events_no_pruned_reuse BEFORE INSERT ON flow_events
    FOR EACH ROW WHEN (NEW.revision = 1) EXECUTE FUNCTION flow_events_no_pruned_reuse()"""


def upgrade() -> None:
    """Refuse every insert into a pruned flow but the pruned events themselves (a restore)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER flow_events_no_pruned_reuse ON flow_events")
        op.execute(_PG_FUNCTION)
        op.execute(_PG_GUARD)
    else:
        op.execute("DROP TRIGGER flow_events_no_pruned_reuse")
        op.execute(_SQLITE_GUARD)


def downgrade() -> None:
    """Guard revision 1 of a pruned flow only, as migration 0005 did."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER flow_events_no_pruned_reuse ON flow_events")
        op.execute(_PG_OLD_FUNCTION)
        op.execute(_PG_OLD_GUARD)
    else:
        op.execute("DROP TRIGGER flow_events_no_pruned_reuse")
        op.execute(_SQLITE_OLD_GUARD)
