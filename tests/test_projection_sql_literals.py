"""The fold guard reads SQL as each database does: a COMMIT after a tricky literal is refused, and the
word COMMIT inside a literal, a quoted name or a comment is not a COMMIT."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventstore import ProjectionFailed, RecordedEvent, Transaction

from .conftest import Target
from .test_projection_transaction_control import REFUSED
from .test_projection_user_errors import Seen, append, positions

PG, LITE = "postgresql", "sqlite"

ENDS_HIDDEN = [
    (PG, "SELECT E'a\\'b', 'c'; COMMIT; SELECT 'd'"),  # a backslash escape, then a quote that opens nothing
    (PG, "SELECT 1 AS a$t$, 2; COMMIT; SELECT 3 AS b$t$"),  # a name may hold $: no dollar quote there
    (PG, "SELECT 1 /* a /* nested */ ; */; COMMIT"),  # PostgreSQL's comments nest
    (PG, "SELECT $tag$ it's $tag$; ROLLBACK"),
    (LITE, "/* it's */ COMMIT"),
    (LITE, "-- it's\nEND"),
    (PG, "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END; COMMIT"),
    (PG, "CREATE FUNCTION g() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$; END"),  # no block: END ends
]

WORDS_ONLY = [
    (PG, "SELECT E'it\\'s; COMMIT'"),
    (PG, "SELECT e'\\\\', 'x; end'"),  # an escaped backslash: the quote after it closes the literal
    (PG, "SELECT $body$ '; COMMIT $body$, $$ x; end $$"),
    (PG, "SELECT 1 /* outer /* inner */ ; COMMIT */"),
    (PG, "SELECT 'a''; rollback', U&'d\\0061t; end'"),
    (LITE, "SELECT 1 AS [a; commit]"),
    (LITE, "SELECT 1 AS `b; end`"),
    (LITE, "SELECT 'it''s; COMMIT', \"x;end\""),
    # a SQL-standard function body (PostgreSQL 14+): its statements and END are the CREATE's own
    (PG, "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END"),
    (PG, "create or replace procedure p() language sql begin atomic select case when true then 1 end; end"),
    (PG, "CREATE FUNCTION g(n int) RETURNS int\nBEGIN ATOMIC\nSELECT (CASE n WHEN 1 THEN 2 END);\nEND"),
    (LITE, "CREATE TEMP TRIGGER t AFTER INSERT ON seen BEGIN SELECT CASE WHEN 1 THEN 2 END; END"),
]


class RunsTheSql(Seen):
    """Writes its row, then runs the event's SQL on the fold's connection."""

    def on_E(self, tx: Transaction, event: RecordedEvent) -> None:
        super().on_E(tx, event)
        if "sql" in event.data:
            tx.connection.exec_driver_sql(event.data["sql"])


def _target(dialect: str, request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if dialect == LITE:
        return Target(f"sqlite:///{tmp_path / 'events.db'}")
    pg: Target = request.getfixturevalue("pg_target")
    return pg


@pytest.mark.parametrize(("dialect", "sql"), ENDS_HIDDEN)
def test_an_end_hidden_after_a_tricky_literal_is_refused(
    dialect: str, sql: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with _target(dialect, request, tmp_path).open(projections=[RunsTheSql()]) as store:
        append(store, {})
        with pytest.raises(ProjectionFailed, match=REFUSED):
            append(store, {"sql": sql})
        assert (store.revision("f"), positions(store)) == (1, [1])


@pytest.mark.parametrize(("dialect", "sql"), WORDS_ONLY)
def test_an_end_inside_a_literal_name_or_comment_is_allowed(
    dialect: str, sql: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with _target(dialect, request, tmp_path).open(projections=[RunsTheSql()]) as store:
        append(store, {"sql": sql})
        assert (store.revision("f"), positions(store)) == (1, [1])
