"""A SQLite store that cannot be written (a read-only file, directory or URL) says what SQLite needs."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from eventstore import EventStore, NewEvent, StorageError
from eventstore.cli import main

NEEDS = "the store must write {file} and create {file}-wal and {file}-shm beside it"


@pytest.fixture
def read_only_url(tmp_path: Path) -> str:
    """A store with an event, opened read-only as a file mode or directory that is not writable would
    open it: ``mode=ro`` gives the same SQLite error without depending on who runs the test."""
    with EventStore.open(f"sqlite:///{tmp_path / 'audit.db'}") as store:
        store.append("f", [NewEvent("Noted", {})])
    return f"sqlite:///file:{tmp_path / 'audit.db'}?mode=ro&uri=true"


def test_a_write_names_the_files_sqlite_must_write(read_only_url: str, tmp_path: Path) -> None:
    with EventStore.open(read_only_url, create=False) as store:
        with pytest.raises(StorageError, match="attempt to write a readonly database") as refused:
            store.append("f", [NewEvent("Noted", {})], expected_revision=1)
        assert store.last_position() == 1
    assert NEEDS.format(file=tmp_path / "audit.db") in str(refused.value)
    assert "mode=ro" in str(refused.value)  # the other reason a URL may be read-only


def test_a_maintenance_run_says_so_in_one_line(read_only_url: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--url", read_only_url, "maintain", "--once", "integrity"])
    assert result.exit_code == 1, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert NEEDS.format(file=tmp_path / "audit.db") in line
