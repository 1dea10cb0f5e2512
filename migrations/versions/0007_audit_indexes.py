"""Audit indexes: partial indexes on flow_events for audit trails, causation links and sessions.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22

Each index covers only the rows an audit looks for (the audited event types,
events that carry a causation or correlation id, the first event of each
flow), so an append of any other event pays only for evaluating the
predicates. The expressions must stay exactly as ``eventstore/schema.py``
builds them: a query uses an expression index only when it spells the same
expression (tests/test_audit.py checks both).
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# OR chains, not IN lists: SQLite evaluates an IN list in a predicate through a temporary table.
_AUDITED = " OR ".join(
    f"type = '{name}'"
    for name in (
        "DecisionRecorded",
        "GateOpened",
        "GateApproved",
        "GateRejected",
        "StepFailed",
        "StepTimedOut",
        "FlowFailed",
    )
)
_BEGINNINGS = "type = 'FlowStarted' OR type = 'FlowForked'"

_FIELDS = {
    "sqlite": {
        "actor": "coalesce(json_extract(data, '$.actor'), json_extract(data, '$.by'), "
        "json_extract(metadata, '$.actor'))",
        "causation": "json_extract(metadata, '$.causation_id')",
        "correlation": "json_extract(metadata, '$.correlation_id')",
        "session": "coalesce(json_extract(data, '$.owner_session_key'), "
        "json_extract(data, '$.snapshot.flow.owner_session_key'))",
    },
    "postgresql": {
        "actor": "coalesce((data ->> 'actor'), (data ->> 'by'), (metadata ->> 'actor'))",
        "causation": "(metadata ->> 'causation_id')",
        "correlation": "(metadata ->> 'correlation_id')",
        "session": "coalesce((data ->> 'owner_session_key'), (data #>> '{snapshot,flow,owner_session_key}'))",
    },
}

_NAMES = (
    "ix_flow_events_audit",
    "ix_flow_events_audit_actor",
    "ix_flow_events_causation",
    "ix_flow_events_correlation",
    "ix_flow_events_session",
)


def upgrade() -> None:
    """Create the five partial audit indexes on flow_events."""
    field = _FIELDS[op.get_bind().dialect.name]
    for statement in (
        f"CREATE INDEX ix_flow_events_audit ON flow_events (flow_id, position) WHERE {_AUDITED}",
        f"CREATE INDEX ix_flow_events_audit_actor ON flow_events ({field['actor']}, position) "
        f"WHERE {_AUDITED}",
        f"CREATE INDEX ix_flow_events_causation ON flow_events ({field['causation']}) "
        f"WHERE {field['causation']} IS NOT NULL",
        f"CREATE INDEX ix_flow_events_correlation ON flow_events ({field['correlation']}, position) "
        f"WHERE {field['correlation']} IS NOT NULL",
        f"CREATE INDEX ix_flow_events_session ON flow_events ({field['session']}) WHERE {_BEGINNINGS}",
    ):
        op.execute(statement)


def downgrade() -> None:
    """Drop the audit indexes (audits then scan the log)."""
    for name in _NAMES:
        op.execute(f"DROP INDEX {name}")
