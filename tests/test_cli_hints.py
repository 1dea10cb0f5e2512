"""Messages a new user meets: a missing export, FLOW@REV for prove, a path or postgres:// given as a
URL, a directory that is not there, plurals and an empty list of holds."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from eventstore import EventStore, InvalidInput, NewEvent
from eventstore import checkpoints as cp
from eventstore.cli import main
from eventstore.integrations.langgraph import EventStoreSaver


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.output


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A SQLite store holding flow f of one event, with a checkpoint of it."""
    url = f"sqlite:///{tmp_path / 'events.db'}"
    with EventStore.open(url) as store:
        store.append("f", [NewEvent("Noted", {})])
        cp.take_checkpoint(store, cp.generate_key())
    return url


@pytest.mark.parametrize("command", ["import", "verify-export"])
def test_a_missing_export_is_named_as_the_file_not_its_manifest(
    url: str, tmp_path: Path, command: str
) -> None:
    missing = tmp_path / "jan.jsonl.gz"
    out = run("--url", url, command, str(missing), code=1)
    assert out == f"error: no export at {missing}: the file is not there\n"


def test_a_missing_manifest_beside_its_export_is_still_named(url: str, tmp_path: Path) -> None:
    export = tmp_path / "jan.jsonl"
    export.write_bytes(b"")
    out = run("verify-export", str(export), code=1)
    assert f"no export manifest at {export}.manifest.json" in out


def test_prove_takes_flow_at_revision_as_audit_why_does(url: str) -> None:
    out = run("--url", url, "prove", "f@1")
    assert out.startswith("event f@1 at position 1\n") and "verified:" in out
    assert "no event f@2" in run("--url", url, "prove", "f@2", code=1)


@pytest.mark.parametrize(
    ("given", "hint"),
    [
        ("/tmp/w.db", "not a database URL: '/tmp/w.db'; did you mean sqlite:////tmp/w.db?"),
        ("checkpoints.db", "not a database URL: 'checkpoints.db'; did you mean sqlite:///checkpoints.db?"),
        ("postgres://app@db/audit", "unsupported database 'postgres': did you mean postgresql://?"),
    ],
)
def test_a_url_a_user_may_have_meant_is_suggested(given: str, hint: str) -> None:
    assert run("--url", given, "flows", code=1) == f"error: {hint}\n"
    with pytest.raises(InvalidInput) as raised:
        EventStoreSaver.from_url(given)
    assert str(raised.value) == hint


def test_the_library_names_a_missing_directory_as_the_cli_does(tmp_path: Path) -> None:
    said = f"no directory {tmp_path / 'nodir'} to create the store in: check the URL"
    with pytest.raises(InvalidInput) as raised:
        EventStoreSaver.from_url(f"sqlite:///{tmp_path / 'nodir' / 'x.db'}")
    assert str(raised.value) == said
    assert (
        run("--url", f"sqlite:///{tmp_path / 'nodir' / 'x.db'}", "db", "upgrade", code=1)
        == f"error: {said}\n"
    )
    assert not (tmp_path / "nodir").exists()


def test_verify_counts_in_the_singular(url: str) -> None:
    assert run("--url", url, "verify") == "OK: 1 event in 1 flow checked\n"


def test_holds_says_there_are_none(url: str) -> None:
    assert run("--url", url, "holds") == "no holds: no flow is under legal hold\n"
