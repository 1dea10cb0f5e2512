"""Audit time index: the audited events by the time they were recorded.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07

``audit --since 1h`` read every audited event before the hour to find the
hour's: 168 ms on SQLite and 527 ms on PostgreSQL at a million events,
growing with the log. A partial index over the audited types, by
``recorded_at`` and position, finds the window: on SQLite the span of
positions it covers first (``eventstore.audit``), on PostgreSQL by the
planner's choice. The predicate must stay exactly as
``eventstore/schema.py`` builds it (tests/test_audit.py checks that). On a
large PostgreSQL log the index is built under a lock that blocks writes;
run it in a quiet moment.
"""

from __future__ import annotations

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

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
        "InterruptRecorded",
        "ResumeRecorded",
        "TaskFailed",
    )
)


def upgrade() -> None:
    """Create ix_flow_events_audit_time on flow_events (recorded_at, position), audited types only."""
    op.execute(
        f"CREATE INDEX ix_flow_events_audit_time ON flow_events (recorded_at, position) WHERE {_AUDITED}"
    )


def downgrade() -> None:
    """Drop it (a trail bounded in time then reads the log from its start)."""
    op.execute("DROP INDEX ix_flow_events_audit_time")
