"""A database URL's query parameters: a value the driver could not take is InvalidInput, naming it,
before connecting; and with create=False only a missing file reads as "does not exist"."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from eventstore import EventStore, InvalidInput
from eventstore.cli import main

from .conftest import Target

BAD_SQLITE = [
    ("timeout=abc", "timeout in a SQLite URL must be a number of seconds, not 'abc'"),
    ("timeout=-1", r"timeout \(in the SQLite URL\) must be a number of seconds, 0 or more"),
    ("timeout=nan", r"timeout \(in the SQLite URL\) must be a number of seconds, 0 or more"),
    ("timeout=1e400", r"timeout \(in the SQLite URL\) must be a number of seconds, 0 or more"),
    ("timeout=1e7", r"timeout \(in the SQLite URL\) must be at most 2147483.647 seconds"),
    ("timeout=1&timeout=2", "timeout appears 2 times in the SQLite URL: give it once"),
    ("uri=maybe", "uri in a SQLite URL must be true or false, not 'maybe'"),
    ("check_same_thread=abc", "check_same_thread in a SQLite URL must be true or false"),
    ("cached_statements=abc", "cached_statements in a SQLite URL must be a whole number from 0 to"),
    ("cached_statements=99999999999", "cached_statements in a SQLite URL must be a whole number"),
    ("detect_types=-1", "detect_types in a SQLite URL must be a whole number from 0 to 3"),
]


class TestSqliteUrlParameters:
    @pytest.mark.parametrize(("query", "message"), BAD_SQLITE)
    @pytest.mark.parametrize("create", [True, False])
    def test_a_bad_value_is_refused_by_name_and_creates_nothing(
        self, tmp_path: Path, query: str, message: str, create: bool
    ) -> None:
        with pytest.raises(InvalidInput, match=message):
            EventStore.open(f"sqlite:///{tmp_path / 'new.db'}?{query}", create=create)
        assert list(tmp_path.iterdir()) == []

    def test_the_cli_says_so_without_a_traceback(self, tmp_path: Path) -> None:
        EventStore.open(f"sqlite:///{tmp_path / 'a.db'}").close()
        before = (tmp_path / "a.db").read_bytes()
        result = CliRunner().invoke(main, ["--url", f"sqlite:///{tmp_path / 'a.db'}?timeout=abc", "flows"])
        assert (result.exit_code, result.output) == (
            1,
            "error: timeout in a SQLite URL must be a number of seconds, not 'abc'\n",
        )
        assert (tmp_path / "a.db").read_bytes() == before

    @pytest.mark.parametrize("query", ["mode=ro", "timout=60", "cache=shared&timeout=5"])
    @pytest.mark.parametrize("create", [True, False])
    def test_a_parameter_the_driver_would_ignore_is_refused_by_name(
        self, tmp_path: Path, query: str, create: bool
    ) -> None:
        """Without uri=true, SQLAlchemy drops what sqlite3.connect does not take, with only a warning:
        ``?mode=ro`` would open the file read-write, ``?timout=60`` (a typo) the default timeout."""
        EventStore.open(f"sqlite:///{tmp_path / 'a.db'}").close()
        before = sorted(tmp_path.iterdir())
        name = query.split("=")[0]
        with pytest.raises(
            InvalidInput, match=f"'{name}' in a SQLite URL is not a parameter of sqlite3.connect"
        ):
            EventStore.open(f"sqlite:///{tmp_path / 'a.db'}?{query}", create=create)
        assert sorted(tmp_path.iterdir()) == before

    def test_a_uri_parameter_needs_uri_true_and_the_cli_says_so(self, tmp_path: Path) -> None:
        EventStore.open(f"sqlite:///{tmp_path / 'a.db'}").close()
        result = CliRunner().invoke(main, ["--url", f"sqlite:///{tmp_path / 'a.db'}?mode=ro", "stats"])
        assert result.exit_code == 1 and len(result.output.splitlines()) == 1, result.output
        assert "SQLite's own URI parameters (mode=ro, ...) need uri=true and a file: path" in result.output
        url = f"sqlite:///file:{tmp_path / 'a.db'}?mode=ro&uri=true"
        with EventStore.open(url, create=False) as store:
            assert store.last_position() == 0

    def test_good_values_open(self, tmp_path: Path) -> None:
        query = "timeout=2.5&check_same_thread=false&cached_statements=10&detect_types=0"
        with EventStore.open(f"sqlite:///{tmp_path / 'a.db'}?{query}") as store:
            assert store.last_position() == 0


class TestUriStoreThatCannotBeOpened:
    """create=False asks SQLite whether a uri=true file opens: only "not there" is "does not exist"."""

    def test_an_unknown_vfs_is_sqlites_own_message_not_a_missing_file(self, tmp_path: Path) -> None:
        EventStore.open(f"sqlite:///{tmp_path / 't.db'}").close()
        before = sorted(tmp_path.iterdir())
        for name in ("t.db", "missing.db"):
            url = f"sqlite:///file:{tmp_path / name}?uri=true&vfs=nosuch"
            with pytest.raises(InvalidInput, match=r"cannot open the SQLite file .*: 'no such vfs: nosuch'"):
                EventStore.open(url, create=False)
        assert sorted(tmp_path.iterdir()) == before

    def test_a_directory_is_not_reported_missing(self, tmp_path: Path) -> None:
        (tmp_path / "dir.db").mkdir()
        with pytest.raises(InvalidInput, match=r"cannot open the SQLite file .*dir\.db': '"):
            EventStore.open(f"sqlite:///file:{tmp_path / 'dir.db'}?uri=true", create=False)
        assert [p.name for p in tmp_path.iterdir()] == ["dir.db"]

    @pytest.mark.parametrize("form", ["file:{}", "file://{}", "file://localhost{}"])
    def test_a_missing_file_in_every_uri_form_is_still_missing(self, tmp_path: Path, form: str) -> None:
        name = form.format(tmp_path / "missing.db")
        with pytest.raises(InvalidInput, match=r"no store at .*missing\.db: the file does not exist"):
            EventStore.open(f"sqlite:///{name}?uri=true", create=False)
        assert list(tmp_path.iterdir()) == []


class TestPostgresqlUrlParameters:
    @pytest.mark.parametrize(
        ("query", "message"),
        [
            ("connect_timeout=abc", "connect_timeout in a PostgreSQL URL must be a whole number, not 'abc'"),
            ("port=abc", "port in a PostgreSQL URL must be a whole number, not 'abc'"),
            (
                "nosuchoption=1",
                r"not a PostgreSQL URL libpq takes: 'invalid connection option \"nosuchoption\"'",
            ),
            (
                "nosuchoption=1&nosuchoption=2",
                "nosuchoption is given 2 times in the PostgreSQL URL: give it once",
            ),
            (
                "application_name=x&application_name=y",
                "application_name is given 2 times in the PostgreSQL URL: give it once",
            ),
        ],
    )
    def test_a_bad_parameter_is_refused_before_connecting(
        self, pg_target: Target, query: str, message: str
    ) -> None:
        url = f"{pg_target.url}{'&' if '?' in pg_target.url else '?'}{query}"
        with pytest.raises(InvalidInput, match=message):
            EventStore.open(url, **{**pg_target.options, "create": True})
        with pg_target.open(create=False, check_schema=False) as store:
            assert store.schema_revision() is None
