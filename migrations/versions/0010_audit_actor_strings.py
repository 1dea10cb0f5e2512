"""Audit actor strings: the actor index takes the first actor field that is a JSON string.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23

Before, the actor was the first of data ``actor``, data ``by`` and metadata
``actor`` that was present, as each backend turns JSON into text: SQLite
kept a number as a number and a boolean as 1 or 0, PostgreSQL made them
``5`` or ``true``, and neither matched the entry's ``str()`` of it, so an
audit by actor could miss events. Now a field that is not a JSON string is
skipped, on both backends and in ``eventstore/audit.py`` alike. The
expression must stay exactly as ``eventstore/schema.py`` builds it
(``JsonString``): a query uses an expression index only when it spells the
same expression (tests/test_audit.py checks both). On a large PostgreSQL log
the new index is built under a lock that blocks writes; run it in a quiet
moment.
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
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

_FIELDS = (("data", "actor"), ("data", "by"), ("metadata", "actor"))


def _string(dialect: str, column: str, key: str) -> str:
    """The field ``key`` of ``column`` if it is a JSON string, else NULL (``sqljson.JsonString``)."""
    if dialect == "sqlite":
        return f"CASE WHEN json_type({column}, '$.{key}') = 'text' THEN json_extract({column}, '$.{key}') END"
    return f"(CASE WHEN jsonb_typeof({column} -> '{key}') = 'string' THEN ({column} ->> '{key}') END)"


def _text(dialect: str, column: str, key: str) -> str:
    """The field ``key`` of ``column`` as each backend makes it text (migration 0007's actor)."""
    if dialect == "sqlite":
        return f"json_extract({column}, '$.{key}')"
    return f"({column} ->> '{key}')"


def _recreate(field: str) -> None:
    op.execute("DROP INDEX ix_flow_events_audit_actor")
    op.execute(f"CREATE INDEX ix_flow_events_audit_actor ON flow_events ({field}, position) WHERE {_AUDITED}")


def upgrade() -> None:
    """Rebuild the actor index on the first of the actor fields that is a JSON string."""
    dialect = op.get_bind().dialect.name
    _recreate(f"coalesce({', '.join(_string(dialect, *field) for field in _FIELDS)})")


def downgrade() -> None:
    """Rebuild the actor index on the first actor field present, as migration 0007 made it."""
    dialect = op.get_bind().dialect.name
    _recreate(f"coalesce({', '.join(_text(dialect, *field) for field in _FIELDS)})")
