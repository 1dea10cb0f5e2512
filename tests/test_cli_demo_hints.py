"""The demo's own showcase: its hints reach the store it used, and its audit answers who did what."""

from __future__ import annotations

import shlex
from pathlib import Path

from click.testing import CliRunner

from eventstore.cli import main

from .conftest import Target


def demo(*prefix: str) -> str:
    result = CliRunner().invoke(main, [*prefix, "demo", "--flow", "r 1"], env={"EVENTSTORE_URL": None})
    assert result.exit_code == 0, result.output
    return result.output


def hints(out: str) -> list[list[str]]:
    lines = out.split("\nnext: ", 1)[1].splitlines()
    return [shlex.split(line) for line in lines if line.strip().startswith("eventstore ")]


def test_the_hints_name_the_sqlite_store_and_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo 2.db'}"
    commands = hints(demo("--url", url))
    assert [words[:3] for words in commands] == [["eventstore", "--url", url]] * 3
    for words in commands:
        result = CliRunner().invoke(main, words[1:])
        assert result.exit_code == 0, (words, result.output)


def test_the_hints_name_the_schema_and_never_the_password(pg_target: Target) -> None:
    schema = pg_target.options["schema"]
    with_password = pg_target.url.replace("root@", "root:s3cret@")
    out = demo("--url", with_password, "--schema", schema)
    assert "s3cret" not in out
    commands = hints(out)
    assert commands[0][:5] == ["eventstore", "--url", pg_target.url, "--schema", schema]
    assert "password is left out" in out
    for words in commands:
        result = CliRunner().invoke(main, words[1:])
        assert result.exit_code == 0, (words, result.output)


def test_the_demo_audit_names_who_opened_each_gate(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    out = demo("--url", url)
    assert "human:ann approved (selected: approve) after seeing" in out
    result = CliRunner().invoke(main, ["--url", url, "audit", "--session", "session-r 1"])
    assert result.exit_code == 0, result.output
    assert " by -" not in result.output and "GATE        -" not in result.output
    assert "opened at r 1@10 by agent:refund-bot" in result.output


def test_a_password_given_as_a_url_parameter_is_never_shown_either(pg_target: Target) -> None:
    schema = pg_target.options["schema"]
    separator = "&" if "?" in pg_target.url else "?"
    out = demo("--url", f"{pg_target.url}{separator}password=s3cret", "--schema", schema)
    assert "s3cret" not in out
    assert hints(out)[0][:5] == ["eventstore", "--url", pg_target.url, "--schema", schema]
    assert "password is left out" in out
