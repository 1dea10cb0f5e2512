"""Migrations: from the library, the command line, and an installed wheel."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.dialects import postgresql

from eventstore import EventStore, InvalidInput, NewEvent, SchemaError, migrate
from eventstore.aio import AsyncEventStore
from eventstore.cli import main
from eventstore.integrations.langgraph import EventStoreSaver
from eventstore.migrate import head_revision
from eventstore.schema import metadata

from .conftest import Target

ROOT = Path(__file__).resolve().parent.parent


def cli(target: Target, *args: str) -> str:
    env = {"EVENTSTORE_URL": target.url}
    schema = target.options.get("schema")
    prefix = ["--schema", schema] if schema else []
    result = CliRunner().invoke(main, [*prefix, *args], env=env)
    assert result.exit_code == 0, result.output
    return result.output


class TestMigrations:
    def test_postgres_is_not_created_implicitly(self, pg_target: Target) -> None:
        with pytest.raises(SchemaError, match="eventstore db upgrade"):
            EventStore.open(pg_target.url, schema=pg_target.options["schema"])

    def test_cli_upgrade_then_current(self, target: Target) -> None:
        if target.dialect == "sqlite":
            Path(target.url.removeprefix("sqlite:///")).touch()  # an empty database (`db current` needs one)
        assert "needs `eventstore db upgrade`" in cli(target, "db", "current")
        assert f"schema at {head_revision()}" in cli(target, "db", "upgrade")
        assert "up to date" in cli(target, "db", "current")
        assert f'"current":"{head_revision()}"' in cli(target, "db", "current", "--json")

    def test_open_upgrades_idempotently(self, target: Target) -> None:
        for _ in range(2):
            with target.open(create=True) as store:
                store.append("f", [NewEvent("A", {})])
                assert store.schema_revision() == head_revision()
        with target.open(create=False) as store:
            assert store.revision("f") == 2


def test_wheel_carries_the_migrations(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("agent_eventstore-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        assert "eventstore/_migrations/versions/0001_flow_events.py" in archive.namelist()
        archive.extractall(site)
    script = (
        "import eventstore, sys; from eventstore import EventStore, NewEvent\n"
        "assert eventstore.__file__.startswith(sys.argv[1]), eventstore.__file__\n"
        "with EventStore.open('sqlite:///' + sys.argv[2]) as s:\n"
        "    s.append('f', [NewEvent('A', {})]); print(s.schema_revision())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(site), str(tmp_path / "w.db")],
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == head_revision()


def test_a_database_from_a_newer_version_is_a_schema_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    EventStore.open(url).close()
    import sqlite3

    with sqlite3.connect(tmp_path / "newer.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(
        SchemaError, match="migrated by a newer agent-eventstore; upgrade the agent-eventstore"
    ) as caught:
        EventStore.open(url)  # create=True: it would migrate, but cannot go back down
    assert (caught.value.current, caught.value.required) == ("9999", migrate.head_revision())


class TestSchemaAdvice:
    def test_a_newer_schema_says_to_upgrade_the_library_not_the_database(self, target: Target) -> None:
        with target.open() as store, store.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
        with pytest.raises(SchemaError, match="migrated by a newer agent-eventstore") as refused:
            target.open(create=False)
        assert (refused.value.current, refused.value.required) == ("9999", head_revision())
        assert "upgrade the agent-eventstore library" in str(refused.value)
        assert "db upgrade" not in str(refused.value) and "create=True" not in str(refused.value)

    def test_an_older_schema_says_to_upgrade_the_database(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'old.db'}"
        with sa.create_engine(url).begin() as conn:
            migrate.upgrade(conn, "0013")
        with pytest.raises(SchemaError, match=r"run `eventstore db upgrade` or open with create=True") as old:
            EventStore.open(url, create=False)
        assert (old.value.current, old.value.required) == ("0013", head_revision())

    def test_a_missing_schema_says_there_is_none_yet(self, pg_target: Target) -> None:
        with pytest.raises(SchemaError, match=r"has no event store schema yet .*create=True") as missing:
            pg_target.open(create=False)
        assert (missing.value.current, missing.value.required) == (None, head_revision())


class TestMissingSqliteFile:
    """With create=False, a SQLite file that is not there is refused before connecting: none is made."""

    def test_open_refuses_it_and_leaves_no_file(self, tmp_path: Path) -> None:
        missing = tmp_path / "missing.db"
        refused = r"no store at .*missing\.db: the file does not exist.*create=True"
        with pytest.raises(InvalidInput, match=refused):
            EventStore.open(f"sqlite:///{missing}", create=False)
        assert sorted(tmp_path.iterdir()) == []

    def test_a_missing_directory_is_refused_the_same_way(self, tmp_path: Path) -> None:
        with pytest.raises(InvalidInput, match="the file does not exist"):
            EventStore.open(f"sqlite:///{tmp_path / 'no' / 'such.db'}", create=False, check_schema=False)
        assert sorted(tmp_path.iterdir()) == []

    def test_async_open_refuses_it_and_leaves_no_file(self, tmp_path: Path) -> None:
        with pytest.raises(InvalidInput, match="the file does not exist"):
            asyncio.run(AsyncEventStore.open(f"sqlite:///{tmp_path / 'missing.db'}", create=False))
        assert sorted(tmp_path.iterdir()) == []

    def test_the_langgraph_saver_refuses_it_and_leaves_no_file(self, tmp_path: Path) -> None:
        with pytest.raises(InvalidInput, match="the file does not exist"):
            EventStoreSaver.from_url(f"sqlite:///{tmp_path / 'missing.db'}", create=False)
        assert sorted(tmp_path.iterdir()) == []

    @pytest.mark.parametrize(
        "query",
        ["uri=true", "mode=rwc&uri=true", "mode=rw&uri=true", "uri=true&cache=shared", "uri=false"],
    )
    def test_every_sqlite_url_form_refuses_it_and_leaves_no_file(self, tmp_path: Path, query: str) -> None:
        for name in (f"file:{tmp_path / 'missing.db'}", str(tmp_path / "missing.db")):
            with pytest.raises(InvalidInput, match=r"no store at .*missing\.db.*: the file does not exist"):
                EventStore.open(f"sqlite:///{name}?{query}", create=False, check_schema=False)
            assert sorted(tmp_path.iterdir()) == []

    @pytest.mark.parametrize("query", ["uri=true", "mode=rwc&uri=true", "mode=ro&uri=true"])
    def test_a_uri_names_a_store_that_exists(self, tmp_path: Path, query: str) -> None:
        EventStore.open(f"sqlite:///{tmp_path / 'new.db'}").close()
        with EventStore.open(f"sqlite:///file:{tmp_path / 'new.db'}?{query}", create=False) as store:
            assert store.schema_revision() == head_revision()

    def test_in_memory_uris_are_refused_as_in_memory_not_as_missing(self, tmp_path: Path) -> None:
        for url in ("sqlite:///file::memory:?uri=true", "sqlite:///file:x?mode=memory&uri=true"):
            with pytest.raises(InvalidInput, match="in-memory database"):
                EventStore.open(url, create=False)
        assert sorted(tmp_path.iterdir()) == []

    def test_create_still_makes_the_file(self, tmp_path: Path) -> None:
        EventStore.open(f"sqlite:///{tmp_path / 'new.db'}").close()
        with EventStore.open(f"sqlite:///{tmp_path / 'new.db'}", create=False) as store:
            assert store.schema_revision() == head_revision()


def test_the_migrated_columns_have_the_declared_collations(pg_target: Target) -> None:
    """Autogenerate compares no collations: the code point columns are checked here."""
    dialect = postgresql.dialect()
    declared = {
        (table.name, column.name): getattr(column.type.dialect_impl(dialect), "collation", None)
        for table in metadata.sorted_tables
        for column in table.columns
    }
    with pg_target.open() as store, store.engine.connect() as conn:
        query = "SELECT table_name, column_name, collation_name FROM information_schema.columns "
        found = conn.exec_driver_sql(query + "WHERE table_schema = current_schema()").all()
    migrated = {(t, c): collation for t, c, collation in found if (t, c) in declared}
    assert migrated == declared
    assert declared["maintenance_jobs", "name"] == declared["flow_events", "flow_id"] == "C"


def test_0021_goes_down_and_up_again_on_a_store_with_events(target: Target) -> None:
    """The audit indexes lose the thread types going down, and hold them again, with the rows, going up."""
    from alembic import command

    from eventstore.audit import audit_trail

    def index_sql(conn: sa.Connection) -> str:
        if conn.dialect.name == "sqlite":
            query = "SELECT sql FROM sqlite_master WHERE name = 'ix_flow_events_audit_actor'"
        else:
            query = "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_flow_events_audit_actor'"
        return str(conn.exec_driver_sql(query).scalar_one())

    with target.open(create=True) as store:
        deleted = NewEvent("ThreadDeleted", {"thread_id": "t"})
        store.append("langgraph/t", [deleted], metadata={"actor": "ops:eve"})
        with store.engine.begin() as conn:
            assert "ThreadDeleted" in index_sql(conn)
            command.downgrade(migrate._config(conn), "0020")
        with store.engine.begin() as conn:
            assert migrate.current_revision(conn) == "0020"
            assert "ThreadDeleted" not in index_sql(conn) and "TaskFailed" in index_sql(conn)
            migrate.upgrade(conn)
        with store.engine.begin() as conn:
            assert migrate.current_revision(conn) == head_revision() and "ThreadDeleted" in index_sql(conn)
        found = [(e.type, e.actor) for e in audit_trail(store, actor="ops:eve")]
    assert found == [("ThreadDeleted", "ops:eve")]
