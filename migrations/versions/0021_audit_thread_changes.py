"""Audit a LangGraph thread's deletions and copies: they join the audited event types.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07

``delete_thread``, ``delete_for_runs``, ``prune`` and ``copy_thread`` record
who removed or copied a thread's checkpoints (``ThreadDeleted``,
``CheckpointsDeleted``, ``ThreadCopied``), and an audit asks who did: so the
three audit indexes over the audited types (by flow, by actor, by time) now
hold them too. They are rebuilt with the longer predicate; the expressions
must stay exactly as ``eventstore/schema.py`` builds them
(tests/test_audit.py checks that). On PostgreSQL the new indexes are built
beside the old ones, under a lock that blocks writes but not reads, then
swapped in by name: a ``DROP INDEX`` locks out reads too, so it comes last,
just before the commit. On a large log run it in a quiet moment.
"""

from __future__ import annotations

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

_BEFORE = (
    "DecisionRecorded",
    "GateOpened",
    "GateApproved",
    "GateRejected",
    "StepFailed",
    "StepTimedOut",
    "FlowFailed",
    "InterruptRecorded",
    "ResumeRecorded",
    "TaskFailed",
)
_AFTER = (*_BEFORE, "ThreadDeleted", "CheckpointsDeleted", "ThreadCopied")


def _audited(types: tuple[str, ...]) -> str:
    # OR chains, not IN lists: SQLite evaluates an IN list in a predicate through a temporary table.
    return " OR ".join(f"type = '{name}'" for name in types)


def _actor(dialect: str) -> str:
    """Migration 0010's actor: the first of data actor, data by, metadata actor that is a JSON string."""
    fields = (("data", "actor"), ("data", "by"), ("metadata", "actor"))
    if dialect == "sqlite":
        parts = [
            f"CASE WHEN json_type({column}, '$.{key}') = 'text' THEN json_extract({column}, '$.{key}') END"
            for column, key in fields
        ]
    else:
        parts = [
            f"(CASE WHEN jsonb_typeof({column} -> '{key}') = 'string' THEN ({column} ->> '{key}') END)"
            for column, key in fields
        ]
    return f"coalesce({', '.join(parts)})"


def _recreate(types: tuple[str, ...]) -> None:
    dialect = op.get_bind().dialect.name
    where = _audited(types)
    indexes = {
        "ix_flow_events_audit": "flow_id, position",
        "ix_flow_events_audit_actor": f"{_actor(dialect)}, position",
        "ix_flow_events_audit_time": "recorded_at, position",
    }
    if dialect == "sqlite":  # no ALTER INDEX ... RENAME; the whole database is locked meanwhile anyway
        for name, columns in indexes.items():
            op.execute(f"DROP INDEX {name}")
            op.execute(f"CREATE INDEX {name} ON flow_events ({columns}) WHERE {where}")
        return
    for name, columns in indexes.items():
        op.execute(f"CREATE INDEX {name}_0021 ON flow_events ({columns}) WHERE {where}")
    for name in indexes:
        op.execute(f"DROP INDEX {name}")
        op.execute(f"ALTER INDEX {name}_0021 RENAME TO {name}")


def upgrade() -> None:
    """Rebuild the three audit indexes over the audited types, a thread's deletions and copies included."""
    _recreate(_AFTER)


def downgrade() -> None:
    """Rebuild them over the types of migration 0011."""
    _recreate(_BEFORE)
