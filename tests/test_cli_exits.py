"""How commands end: a failed write, a missing store, a closed pipe, Ctrl-C: one line, the right status."""

from __future__ import annotations

import errno
import importlib.metadata
import os
import pty
import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from eventstore import EventStore, NewEvent, migrate
from eventstore.cli import main
from eventstore.cli.docs import main as docs_main
from eventstore.exchange import export_events
from projections import FlowProjection, FlowService

from .conftest import Target


def invoke(target: Target, *args: str) -> tuple[int, str]:
    schema = target.options.get("schema")
    prefix = ["--url", target.url, *(["--schema", schema] if schema else [])]
    result = CliRunner().invoke(main, [*prefix, *args], env={"EVENTSTORE_ARCHIVE_DIR": None})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def foreign_database(path: Path) -> Path:
    """A SQLite database of another program's, in rollback-journal (DELETE) mode."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.commit()
    return path


def journal_mode(path: Path) -> str:
    with closing(sqlite3.connect(path)) as conn:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])


def tail_export(tmp_path: Path) -> Path:
    """A time range export holding flow f from its revision 2 on: it continues a store, never starts one."""
    moments = iter(datetime(2030, 1, 1, tzinfo=UTC) + timedelta(hours=h) for h in range(10))
    with EventStore.open(f"sqlite:///{tmp_path / 'source.db'}", clock=lambda: next(moments)) as store:
        store.append("f", [NewEvent("Noted", {})])
        store.append("f", [NewEvent("Noted", {})])
        export_events(store, tmp_path / "tail.jsonl", since=datetime(2030, 1, 1, 0, 30, tzinfo=UTC))
    return tmp_path / "tail.jsonl"


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Target:
    """A SQLite store holding a finished flow f."""
    target = Target(f"sqlite:///{tmp_path / 'events.db'}")
    with target.open(projections=[FlowProjection()]) as store:
        FlowService(store).start_flow("f", controller_id="c", goal="g", owner_session_key="s")
        FlowService(store).finish("f")
    return target


class TestFailedWrites:
    """Cleaning up a half-written file fails too (a read-only disk): the first error is reported."""

    @pytest.mark.parametrize("command", ["export", "backup"])
    def test_an_unwritable_path_is_one_line(self, sqlite_store: Target, tmp_path: Path, command: str) -> None:
        blocker = tmp_path / "a-file"
        blocker.write_text("")  # its "children" can be neither created nor unlinked: ENOTDIR
        code, out = invoke(sqlite_store, command, str(blocker / "out"))
        assert code == 1 and out.startswith("error: ") and len(out.splitlines()) == 1

    def test_prune_on_a_read_only_disk(
        self, sqlite_store: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def read_only(*_args: object, **_kwargs: object) -> None:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))

        monkeypatch.setattr("eventstore.exportfile.os.fsync", read_only)
        monkeypatch.setattr(Path, "unlink", read_only)
        archives = str(tmp_path / "archives")
        code, out = invoke(sqlite_store, "prune", "--policy", "finished=0", "--archive-dir", archives)
        assert code == 1 and out.startswith("error: ") and "Read-only file system" in out


class TestExportTarget:
    def test_never_the_store_and_another_file_only_with_force(
        self, sqlite_store: Target, tmp_path: Path
    ) -> None:
        database = tmp_path / "events.db"
        for args in (["export", str(database)], ["export", "--force", f"{database}-wal"]):
            code, out = invoke(sqlite_store, *args)
            assert (
                code == 1
                and out.startswith(f"error: cannot export to {database}")
                and "store's database" in out
            )
        assert invoke(sqlite_store, "verify")[0] == 0
        path = str(tmp_path / "f.jsonl")
        assert invoke(sqlite_store, "export", path)[0] == 0
        code, out = invoke(sqlite_store, "export", path)
        assert code == 1 and out.startswith(f"error: {path} exists already")
        assert invoke(sqlite_store, "export", "--force", path)[0] == 0


class TestMissingStore:
    @pytest.mark.parametrize(
        "args",
        [
            ["verify"],
            ["db", "current"],
            ["flows"],
            ["history", "f"],
            ["backup", "b.db"],
            ["maintain", "--status"],
        ],
    )
    def test_a_mistyped_path_is_refused_and_not_created(self, tmp_path: Path, args: list[str]) -> None:
        typo = tmp_path / "typo.db"
        code, out = invoke(Target(f"sqlite:///{typo}"), *args)
        assert (code, out) == (
            1,
            f"error: no store at {typo}: check --url, or create one with `eventstore db upgrade`\n",
        )
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize("args", [["flows"], ["show", "f"], ["audit"], ["stats"], ["verify"]])
    def test_a_file_that_is_no_store_is_refused_and_left_untouched(
        self, tmp_path: Path, args: list[str]
    ) -> None:
        """Reads wrote the store's tables (and WAL mode) into an empty file or another program's database."""
        other = tmp_path / "other.db"
        with closing(sqlite3.connect(other)) as conn:
            conn.execute("CREATE TABLE notes (body TEXT)")
            conn.commit()
        (tmp_path / "empty.db").touch()
        for path in (tmp_path / "empty.db", other):
            before = path.read_bytes()
            code, out = invoke(Target(f"sqlite:///{path}"), *args)
            assert (code, out) == (
                1,
                f"error: no store at {path}: the file holds no event store (empty, or "
                "another program's database); check --url, or create one with `eventstore db upgrade`\n",
            )
            assert path.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db", "other.db"]

    def test_db_current_on_another_programs_database_says_so_and_leaves_its_journal_mode(
        self, tmp_path: Path
    ) -> None:
        """`db current` switched another program's database to WAL mode, then called it "(empty)"."""
        other = foreign_database(tmp_path / "other.db")
        before = other.read_bytes()
        for args in (["db", "current"], ["db", "current", "--json"]):
            code, out = invoke(Target(f"sqlite:///{other}"), *args)
            assert (code, out) == (
                1,
                f"error: no store at {other}: the file holds no event store (empty, or "
                "another program's database); check --url, or create one with `eventstore db upgrade`\n",
            )
        assert journal_mode(other) == "delete" and other.read_bytes() == before

    def test_inspecting_another_programs_database_leaves_its_journal_mode(self, tmp_path: Path) -> None:
        other = foreign_database(tmp_path / "other.db")
        with EventStore.open(f"sqlite:///{other}", create=False, check_schema=False) as store:
            assert store.schema_revision() is None
        assert journal_mode(other) == "delete"
        with EventStore.open(f"sqlite:///{tmp_path / 'events.db'}") as store:  # a store of our own is WAL
            assert journal_mode(tmp_path / "events.db") == "wal"

    def test_a_store_at_an_older_schema_is_not_upgraded_by_a_read(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'old.db'}"
        with sa.create_engine(url).begin() as conn:
            migrate.upgrade(conn, "0013")
        code, out = invoke(Target(url), "flows")
        assert code == 1 and "schema is at 0013" in out and "run `eventstore db upgrade`" in out
        with sa.create_engine(url).connect() as conn:
            assert migrate.current_revision(conn) == "0013"

    def test_an_import_makes_a_store_only_from_a_file_that_verifies(
        self, sqlite_store: Target, tmp_path: Path
    ) -> None:
        new = Target(f"sqlite:///{tmp_path / 'new.db'}")
        code, out = invoke(new, "import", str(tmp_path / "missing.jsonl"))
        assert code == 1 and out.startswith("error: no export at ") and "the file is not there" in out
        export = tmp_path / "f.jsonl"
        assert invoke(sqlite_store, "export", str(export))[0] == 0
        sound = export.read_bytes()
        export.write_bytes(sound.replace(b'"revision":1', b'"revision":2'))
        code, out = invoke(new, "import", str(export))
        assert code == 1 and "error: " in out and "does not verify" in out
        assert not (tmp_path / "new.db").exists()
        export.write_bytes(sound)
        assert invoke(new, "import", str(export))[0] == 0 and (tmp_path / "new.db").exists()

    def test_an_import_that_cannot_fit_a_new_store_does_not_make_one(self, tmp_path: Path) -> None:
        export = tail_export(tmp_path)
        code, out = invoke(Target(f"sqlite:///{tmp_path / 'new.db'}"), "import", str(export))
        assert code == 1 and "cannot import flow 'f': the export starts at revision 2" in out, out
        assert not (tmp_path / "new.db").exists()

    @pytest.mark.parametrize("args", [["db", "upgrade"], ["demo", "--flow", "d"]])
    def test_the_commands_that_make_a_store_create_it(self, tmp_path: Path, args: list[str]) -> None:
        code, out = invoke(Target(f"sqlite:///{tmp_path / 'new.db'}"), *args)
        assert code == 0, out
        assert (tmp_path / "new.db").exists()


class TestEndings:
    def test_a_reader_that_stops_early_is_not_an_error(self, sqlite_store: Target) -> None:
        with EventStore.open(sqlite_store.url) as store:
            store.append("big", [NewEvent("Noted", {"text": "x" * 500}) for _ in range(1000)])
        command = [sys.executable, "-m", "eventstore", "--url", sqlite_store.url, "history", "big", "--json"]
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as reader:
            assert reader.stdout is not None and reader.stderr is not None
            reader.stdout.readline()  # `| head -1`
            reader.stdout.close()
            assert reader.wait(timeout=60) == 0
            assert reader.stderr.read() == b""

    def test_ctrl_c_exits_130_with_one_line(
        self, sqlite_store: Target, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def interrupted(*_args: object, **_kwargs: object) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(EventStore, "verify", interrupted)
        assert invoke(sqlite_store, "verify") == (130, "interrupted\n")

    @pytest.mark.parametrize("during", ["sqlalchemy", "alembic", "click"])
    def test_ctrl_c_while_the_command_line_imports_exits_130_with_one_line(
        self, sqlite_store: Target, during: str
    ) -> None:
        """A real SIGINT, sent by an import hook as the launcher's imports reach ``during``: the second
        or so before any command runs is no exception."""
        interrupt_on_import = f"""
import os, signal, sys
class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == {during!r}:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, Interrupt())
sys.argv = ["eventstore", "--url", {sqlite_store.url!r}, "verify"]
from eventstore.__main__ import run
run()
"""
        done = subprocess.run([sys.executable, "-c", interrupt_on_import], capture_output=True, check=False)
        assert (done.returncode, done.stdout, done.stderr) == (130, b"", b"interrupted\n")

    def test_importing_the_package_leaves_the_heavy_imports_to_the_command_line(self) -> None:
        """What lets the launcher catch that Ctrl-C: ``import eventstore`` alone imports no SQLAlchemy,
        and every public name still resolves (when first used)."""
        check = (
            "import sys, eventstore; assert 'sqlalchemy' not in sys.modules, 'imported early'; "
            "missing = [n for n in eventstore.__all__ if getattr(eventstore, n, None) is None]; "
            "assert not missing, missing; print(eventstore.EventStore.__module__)"
        )
        done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=False)
        assert (done.returncode, done.stdout, done.stderr) == (0, "eventstore.store\n", "")

    def test_the_installed_command_runs_through_the_launcher(self) -> None:
        scripts = importlib.metadata.entry_points(group="console_scripts", name="eventstore")
        assert [script.value for script in scripts] == ["eventstore.__main__:run"]

    def test_rebuild_progress_goes_to_a_terminal(self, sqlite_store: Target) -> None:
        primary, secondary = pty.openpty()
        command = [sys.executable, "-m", "eventstore", "--url", sqlite_store.url, "rebuild"]
        with os.fdopen(primary, "rb") as terminal:
            done = subprocess.run(command, stdout=subprocess.PIPE, stderr=secondary, check=False)
            os.close(secondary)
            assert done.returncode == 0
            shown = terminal.read1(65536)
        assert b"\rflows: 2/2 events" in shown and b"rebuilt flows from 2 events" in shown

    def test_the_docs_generator_has_a_help(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(tmp_path)
        with pytest.raises(SystemExit) as exited:
            docs_main(["--help"])
        assert exited.value.code == 0 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "command", [["backup"], ["keygen"], ["checkpoint", "--export"], ["maintain", "--config"]]
)
def test_an_empty_file_path_is_a_usage_error(
    sqlite_store: Target, tmp_path: Path, command: list[str]
) -> None:
    before = sorted(tmp_path.iterdir())
    code, out = invoke(sqlite_store, *command, "")
    assert code == 2 and "an empty path: give a file name" in out and "exists" not in out, out
    assert sorted(tmp_path.iterdir()) == before
