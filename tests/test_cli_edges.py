"""What a user sees from odd command lines: a position past the log, a negative revision, a
schema out of date, an unknown session, a directory given as the store."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from eventstore import EventStore, NewEvent, migrate
from eventstore.exchange import export_events
from projections import FlowProjection, FlowService

from .conftest import Target
from .test_cli_messages import finished, run

__all__ = ["finished"]  # the fixture, used by name


class TestTailFrom:
    def test_a_position_past_the_end_is_refused(self, finished: Target) -> None:
        out = run(finished, "tail", "--from", "99", "--until-idle", code=1)
        assert out == "error: --from 99 is past the end of the log (last position 2): give 0 to 2\n"

    def test_the_last_position_is_followed(self, finished: Target) -> None:
        assert run(finished, "tail", "--from", "2", "--until-idle") == ""
        assert run(finished, "tail", "--from", "1", "--until-idle", "--json").count("\n") == 1


class TestNegativeRevisions:
    @pytest.mark.parametrize(
        "args", [["diff", "f", "-1", "2"], ["diff", "f", "1", "-2"], ["state", "f", "--at", "-1"]]
    )
    def test_are_refused_clearly(self, finished: Target, args: list[str]) -> None:
        out = run(finished, *args, code=1)
        assert out.startswith("error: revision -") and "not supported" in out and out.count("\n") == 1

    def test_fork_says_at_is_a_revision(self, finished: Target) -> None:
        out = run(finished, "fork", "f", "--at", "-1", "--new", "g", code=2)
        assert "-1 is not in the range x>=0" in out and "No such option" not in out

    def test_other_options_still_parse(self, finished: Target) -> None:
        assert '"changes"' in run(finished, "diff", "f", "1", "2", "--json")
        assert "No such option" in run(finished, "diff", "f", "1", "2", "--jsno", code=2)


class TestSchemaMessages:
    def test_a_database_without_the_schema_says_what_to_run(self, target: Target) -> None:
        if target.dialect == "sqlite":
            with sa.create_engine(target.url).begin() as conn:
                migrate.upgrade(conn, "0013")
        out = run(target, "flows", code=1)
        assert "with `eventstore db upgrade`" in out or "run `eventstore db upgrade`" in out
        assert "create=True" not in out

    def test_a_newer_database_says_to_upgrade_the_library(self, finished: Target) -> None:
        with finished.open() as store, store.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
        out = run(finished, "flows", code=1)
        assert "newer than this library" in out and "upgrade agent-eventstore" in out
        assert "db upgrade" not in out and "create=True" not in out


class TestUnknownSession:
    def test_flows_and_audit_both_refuse_it(self, finished: Target) -> None:
        assert run(finished, "flows", "--session", "nope", code=1) == "error: no session 'nope'\n"
        assert run(finished, "audit", "--session", "nope", code=1) == "error: no session 'nope'\n"

    def test_a_known_session_with_no_match_is_an_empty_page(self, finished: Target) -> None:
        out = run(finished, "flows", "--session", "s", "--status", "failed")
        assert out.endswith("0 flows, showing none\n")


class TestDirectoryAsStore:
    @pytest.mark.parametrize("args", [["flows"], ["db", "upgrade"], ["db", "current"]])
    def test_is_refused_by_name(self, tmp_path: Path, args: list[str]) -> None:
        out = run(Target(f"sqlite:///{tmp_path}"), *args, code=1)
        assert out == f"error: {tmp_path} is a directory, not a SQLite file: check --url\n"

    def test_a_missing_directory_is_named(self, tmp_path: Path) -> None:
        out = run(Target(f"sqlite:///{tmp_path / 'no' / 'e.db'}"), "db", "upgrade", code=1)
        assert out == f"error: no directory {tmp_path / 'no'} to create the store in: check the URL\n"

    @pytest.mark.parametrize("args", [["flows"], ["db", "upgrade"], ["db", "current"], ["import", "e.jsonl"]])
    def test_a_file_name_too_long_for_the_file_system_is_named(self, tmp_path: Path, args: list[str]) -> None:
        with EventStore.open(f"sqlite:///{tmp_path / 'source.db'}") as source:
            source.append("f", [NewEvent("Noted", {})])
            export_events(source, tmp_path / "e.jsonl")
        args = [str(tmp_path / arg) if arg == "e.jsonl" else arg for arg in args]
        database = tmp_path / ("a" * 300 + ".db")
        out = run(Target(f"sqlite:///{database}"), *args, code=1)
        said = f"error: cannot use {database} as a SQLite file: File name too long; check --url\n"
        assert out.splitlines(keepends=True)[-1] == said  # (import says "verifying" first)


@pytest.mark.parametrize("command", ["export", "import", "verify-export"])
def test_an_empty_export_path_is_a_usage_error_naming_it(finished: Target, command: str) -> None:
    output = run(finished, command, "", code=2)
    assert output.endswith("Error: Invalid value for 'PATH': an empty path: give a file name\n")


@pytest.mark.parametrize("option", ["--since", "--until"])
def test_audit_refuses_an_empty_time(finished: Target, option: str) -> None:
    assert run(finished, "audit", option, "", code=1).startswith("error: '' is not a time")


def test_fork_onto_an_existing_flow_says_it_exists(finished: Target) -> None:
    with finished.open(projections=[FlowProjection()]) as store:
        FlowService(store).start_flow("g", controller_id="c", goal="g", owner_session_key="s")
    out = run(finished, "fork", "f", "--at", "1", "--new", "g", code=1)
    assert out == "error: flow 'g' exists already: give --new a new flow id\n"


def test_export_to_a_name_that_is_not_utf8_is_refused_and_writes_nothing(
    finished: Target, tmp_path: Path
) -> None:
    out = run(finished, "export", str(tmp_path / "\udcff.jsonl"), code=1)
    assert out.startswith("error: an export's file name must be valid UTF-8")
    assert not [path for path in tmp_path.iterdir() if path.name.endswith("jsonl")]


def test_export_of_an_unknown_session_is_refused_like_audit(finished: Target, tmp_path: Path) -> None:
    out = run(finished, "export", str(tmp_path / "s.jsonl"), "--session", "nope", code=1)
    assert out == "error: no session 'nope'\n" and list(tmp_path.glob("s.jsonl*")) == []


def test_export_over_a_file_names_the_option_not_the_keyword(finished: Target, tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").touch()
    out = run(finished, "export", str(tmp_path / "a.jsonl"), code=1)
    assert (
        out
        == f"error: {tmp_path / 'a.jsonl'} exists already: export to a new file, or replace it with --force\n"
    )


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["flows", "--session", "\udcff"], "--session"),
        (["audit", "--correlation", ""], "--correlation"),
        (["audit", "--actor", ""], "--actor"),
        (["tail", "--type", "", "--until-idle"], "--type"),
        (["fork", "f", "--at", "1", "--new", "g", "--actor", ""], "--actor"),
    ],
)
def test_bad_text_names_the_option(finished: Target, args: list[str], option: str) -> None:
    out = run(finished, *args, code=1)
    assert out.startswith(f"error: {option} must ") and out.count("\n") == 1


def test_tail_interval_nan_is_a_usage_error(finished: Target) -> None:
    out = run(finished, "tail", "--interval", "nan", "--until-idle", code=2)
    assert "Invalid value for '--interval': nan is not a number of seconds" in out
