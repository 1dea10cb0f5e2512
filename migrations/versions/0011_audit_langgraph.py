"""Audit LangGraph: interrupts, resumes and task failures join the audited event types.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06

A LangGraph thread's human-in-the-loop (``InterruptRecorded``: the graph
asked; ``ResumeRecorded``: someone answered) and its failed tasks
(``TaskFailed``) are what an audit of an agent run asks about, so the two
audit indexes over the audited types (by flow, by actor) now hold them too.
Both are rebuilt with the longer predicate; the expressions must stay
exactly as ``eventstore/schema.py`` builds them (tests/test_audit.py checks
that). On a large PostgreSQL log the indexes are built under a lock that
blocks writes; run it in a quiet moment.
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
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
)
_AFTER = (*_BEFORE, "InterruptRecorded", "ResumeRecorded", "TaskFailed")


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
    actor = _actor(op.get_bind().dialect.name)
    op.execute("DROP INDEX ix_flow_events_audit")
    op.execute("DROP INDEX ix_flow_events_audit_actor")
    op.execute(
        f"CREATE INDEX ix_flow_events_audit ON flow_events (flow_id, position) WHERE {_audited(types)}"
    )
    op.execute(
        f"CREATE INDEX ix_flow_events_audit_actor ON flow_events ({actor}, position) WHERE {_audited(types)}"
    )


def upgrade() -> None:
    """Rebuild the two audit indexes over the audited types, LangGraph's included."""
    _recreate(_AFTER)


def downgrade() -> None:
    """Rebuild them over the types of migration 0007."""
    _recreate(_BEFORE)
