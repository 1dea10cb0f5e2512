"""Session strings: a flow's owner session is its ``owner_session_key`` only when that is a JSON string.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06

Before, the session index took the key as each backend turns JSON into
text: SQLite kept a number as a number and a boolean as 1 or 0, PostgreSQL
made them ``5`` or ``true``, so ``audit_trail(session=...)`` and
``session_flows`` answered differently on the two backends for a flow whose
key was not a string (only a writer bypassing ``FlowService`` logs one).
Now such a key names no session on either backend, as migration 0010 did
for actors. The expression must stay exactly as ``eventstore/schema.py``
builds it (``JsonString``; tests/test_audit.py checks both). On a large
PostgreSQL log the index is rebuilt under a lock that blocks writes; run it
in a quiet moment.
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_BEGINNING = "type = 'FlowStarted' OR type = 'FlowForked'"
_PATHS = (("owner_session_key",), ("snapshot", "flow", "owner_session_key"))


def _string(dialect: str, path: tuple[str, ...]) -> str:
    """The field at ``path`` of ``data`` if it is a JSON string, else NULL (``sqljson.JsonString``)."""
    if dialect == "sqlite":
        where = f"'$.{'.'.join(path)}'"
        return f"CASE WHEN json_type(data, {where}) = 'text' THEN json_extract(data, {where}) END"
    if len(path) == 1:
        value, text = f"data -> '{path[0]}'", f"data ->> '{path[0]}'"
    else:
        keys = f"'{{{','.join(path)}}}'"
        value, text = f"data #> {keys}", f"data #>> {keys}"
    return f"(CASE WHEN jsonb_typeof({value}) = 'string' THEN ({text}) END)"


def _text(dialect: str, path: tuple[str, ...]) -> str:
    """The field at ``path`` of ``data`` as each backend makes it text (migration 0007's session)."""
    if dialect == "sqlite":
        return f"json_extract(data, '$.{'.'.join(path)}')"
    if len(path) == 1:
        return f"(data ->> '{path[0]}')"
    return f"(data #>> '{{{','.join(path)}}}')"


def _recreate(field: str) -> None:
    op.execute("DROP INDEX ix_flow_events_session")
    op.execute(f"CREATE INDEX ix_flow_events_session ON flow_events ({field}) WHERE {_BEGINNING}")


def upgrade() -> None:
    """Rebuild the session index on the owner session key only where it is a JSON string."""
    dialect = op.get_bind().dialect.name
    _recreate(f"coalesce({', '.join(_string(dialect, path) for path in _PATHS)})")


def downgrade() -> None:
    """Rebuild the session index on the key as each backend makes it text, as migration 0007 made it."""
    dialect = op.get_bind().dialect.name
    _recreate(f"coalesce({', '.join(_text(dialect, path) for path in _PATHS)})")
