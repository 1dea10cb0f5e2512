"""Half-written backups: a backup that died leaves ``PATH.<random>.partial``; the next one removes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from eventstore import EventStore, NewEvent
from eventstore.housekeeping import backup
from eventstore.maintenance import Maintenance
from eventstore.maintenance_config import MaintenanceConfig

ROOT = Path(__file__).resolve().parents[1]

# A backup in a process of its own that stops after its first step, the partial copy written
# and locked, and says so; it goes on only when its standard input closes.
COPYING = """
import sys
from eventstore import EventStore
from eventstore.housekeeping import backup

def wait(left, total):
    print("copying", flush=True)
    sys.stdin.read()

with EventStore.open(f"sqlite:///{sys.argv[1]}", create=False) as store:
    backup(store, sys.argv[2], progress=wait)
"""


def a_store(tmp_path: Path) -> Path:
    live = tmp_path / "live.db"
    with EventStore.open(f"sqlite:///{live}") as store:
        store.append("notes", [NewEvent("Noted", {"text": "x" * 5000}) for _ in range(20)])
    return live


@contextmanager
def copying(live: Path, target: Path) -> Iterator[subprocess.Popen[str]]:
    """A backup process to ``target``, stopped in the middle of its copy."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", COPYING, str(live), str(target)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "copying\n"
        yield child
    finally:
        child.kill()
        child.wait()


def partials(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.partial"))


def test_a_killed_backup_leaves_a_partial_that_the_next_backup_to_that_path_removes(tmp_path: Path) -> None:
    live, target = a_store(tmp_path), tmp_path / "copy.db"
    with copying(live, target) as child:
        (left,) = partials(tmp_path)
        child.send_signal(signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL
    assert left.exists() and not target.exists()
    with EventStore.open(f"sqlite:///{live}", create=False) as store:
        done = backup(store, target)
    assert partials(tmp_path) == [] and not list(tmp_path.glob("copy.db.*"))
    assert done.removed_partials == (left,)
    with EventStore.open(f"sqlite:///{target}", create=False) as copy:
        assert copy.verify().ok


def test_a_backup_leaves_the_partial_of_a_live_backup_to_the_same_path_alone(tmp_path: Path) -> None:
    live, target = a_store(tmp_path), tmp_path / "copy.db"
    with copying(live, target):
        (theirs,) = partials(tmp_path)
        with EventStore.open(f"sqlite:///{live}", create=False) as store:
            assert backup(store, target).removed_partials == ()
        assert partials(tmp_path) == [theirs]
    assert target.exists()


def test_the_backup_job_removes_the_partial_of_a_run_that_was_killed(tmp_path: Path) -> None:
    live, directory = a_store(tmp_path), tmp_path / "backups"
    directory.mkdir()
    with copying(live, directory / "eventstore-20300101T000000000000Z.db") as child:
        (left,) = partials(directory)
        child.send_signal(signal.SIGKILL)
    config = MaintenanceConfig.parse({"backup": {"directory": str(directory)}})
    with EventStore.open(f"sqlite:///{live}", create=False) as store:
        result = Maintenance(store, config).run_once("backup")
    assert partials(directory) == []
    assert (result.status, result.details["removed_partials"]) == ("ok", [left.name])
