"""Reads a long trail repeats keep their index when PostgreSQL plans them once for any value.

psycopg prepares a statement run five times, and PostgreSQL may then use one generic plan for
every value: a partial index whose predicate a bound parameter stands in for is out of its reach.
"""

from __future__ import annotations

import re

import psycopg.sql

from eventstore import NewEvent
from eventstore.causation import _OPENINGS
from eventstore.statements import compiled_sql

from .conftest import Target


def test_a_gate_openings_lookup_uses_the_audit_index_under_a_generic_plan(pg_target: Target) -> None:
    with pg_target.open() as store:
        store.append("g", [NewEvent("GateOpened", {"step_id": "s", "prompt": "p"})])
        with store.reading() as conn:
            asked = {"flows": ["g"], "befores": [10], "steps": ["s"]}
            sql, values = compiled_sql(conn.dialect, _OPENINGS[False], asked)
            names = list(values)
            numbered = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m.group(1)) + 1}", sql)
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            cursor.execute("SET plan_cache_mode = force_generic_plan")
            cursor.execute(f"PREPARE opening AS {numbered}")
            arguments = psycopg.sql.SQL(", ").join(psycopg.sql.Literal(values[name]) for name in names)
            cursor.execute(psycopg.sql.SQL("EXPLAIN EXECUTE opening({})").format(arguments))
            plan = "\n".join(row[0] for row in cursor.fetchall())
            cursor.execute("DEALLOCATE opening")
            cursor.execute("RESET plan_cache_mode")
    assert "ix_flow_events_audit " in plan + " ", plan
