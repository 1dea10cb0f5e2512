"""Behind a connection pooler: what PgBouncer changes about a connection, on the real server.

No PgBouncer here: each test makes a real PostgreSQL connection look as it
does behind one. What was measured through PgBouncer itself is in
docs/operations.md, "Behind PgBouncer".
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from eventstore import EventStore, InvalidInput, NewEvent, StorageError
from tests.conftest import Target


def _with_query(target: Target, query: str) -> str:
    return f"{target.url}?{query}"


def test_prepare_threshold_none_in_the_url_never_prepares(pg_target: Target) -> None:
    """``?prepare_threshold=none`` reaches psycopg as None: no statement is prepared on the server.

    PgBouncer 1.18 in transaction mode hands a psycopg connection another
    server session, where the statement it prepared is missing or another's
    has its name ("prepared statement "_pg3_0" already exists").
    """
    url = _with_query(pg_target, "prepare_threshold=none")
    with EventStore.open(url, **pg_target.options) as store:
        for n in range(10):  # psycopg prepares from the 5th run of a statement by default
            store.append("f", [NewEvent("A", {"n": n})], expected_revision=n)
        with store.reading() as conn:
            assert conn.connection.dbapi_connection.prepare_threshold is None
            for _ in range(10):
                conn.exec_driver_sql("SELECT count(*) FROM pg_prepared_statements").scalar()
            assert conn.exec_driver_sql("SELECT count(*) FROM pg_prepared_statements").scalar() == 0
        assert [e.data["n"] for e in store.read_flow("f")] == list(range(10))


def test_prepare_threshold_takes_a_whole_number(pg_target: Target) -> None:
    url = _with_query(pg_target, "prepare_threshold=2")
    with EventStore.open(url, **pg_target.options) as store, store.reading() as conn:
        assert conn.connection.dbapi_connection.prepare_threshold == 2


# "\uff15", a full-width 5: a digit to str.isdigit, but only ASCII digits are taken
@pytest.mark.parametrize("value", ["x", "-1", "1.5", "\uff15"])
def test_a_bad_prepare_threshold_is_invalid_input_and_creates_nothing(pg_target: Target, value: str) -> None:
    with pytest.raises(InvalidInput, match="prepare_threshold"):
        EventStore.open(_with_query(pg_target, f"prepare_threshold={value}"), **pg_target.options)
    with psycopg.connect(pg_target.url, options=f"-c search_path={pg_target.options['schema']}") as conn:
        assert conn.execute("SELECT to_regclass('flow_events')").fetchone() == (None,)


def _drop_options(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
    """What PgBouncer with ``ignore_startup_parameters = options`` does: the server never sees them."""
    cparams.pop("options", None)


def test_settings_a_pooler_dropped_are_a_storage_error_not_a_write_elsewhere(pg_target: Target) -> None:
    """Without its ``options`` the store would work in ``public``, with no lock or idle limit."""
    with EventStore.open(pg_target.url, **pg_target.options) as store:
        store.append("f", [NewEvent("A", {})], expected_revision=0)
        sa.event.listen(store.engine, "do_connect", _drop_options)
        store.engine.dispose()  # the next connection is a new one, without its settings
        with pytest.raises(StorageError) as caught:
            store.append("g", [NewEvent("A", {})], expected_revision=0)
        message = str(caught.value)
        assert "did not get the settings" in message
        assert f"the schema in use is 'public', not '{pg_target.options['schema']}'" in message
        assert "lock_timeout is 0 ms, not 10000 ms" in message
        assert "Behind PgBouncer" in message
        sa.event.remove(store.engine, "do_connect", _drop_options)
        store.engine.dispose()
        assert [e.flow_id for e in store.read_all()] == ["f"]
    with psycopg.connect(pg_target.url) as admin:
        assert admin.execute("SELECT to_regclass('public.flow_events')").fetchone() == (None,)


def test_a_schema_the_role_may_not_use_is_named_as_such_not_blamed_on_a_pooler(pg_target: Target) -> None:
    """Without USAGE on it, the schema is set and exists, yet ``current_schema()`` is NULL."""
    role = f"no_usage_{pg_target.options['schema']}"
    schema = pg_target.options["schema"]
    with psycopg.connect(pg_target.url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        try:
            url = sa.make_url(pg_target.url).set(username=role).render_as_string(hide_password=False)
            with pytest.raises(StorageError) as caught:
                EventStore.open(url, schema=schema, create=True)
            message = str(caught.value)
            assert f"the role '{role}' may not use the schema '{schema}'" in message
            assert "GRANT USAGE" in message and "PgBouncer" not in message
        finally:
            admin.execute(f'DROP ROLE "{role}"')
