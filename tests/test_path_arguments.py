"""File paths given to the library: anything but a str or os.PathLike path without NUL is InvalidInput.

Python's own ``open`` takes an int as a file descriptor: a config "path" of 5
would read, then close, whatever file descriptor 5 was (a store's database).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from eventstore import EventStore, InvalidInput, NewEvent, StorageError
from eventstore.exchange import export_events
from eventstore.housekeeping import backup
from eventstore.maintenance_config import MaintenanceConfig
from eventstore.signing import generate_key, load_public_key, load_signing_key, save_key_pair

NOT_PATHS = [5, None, b"/tmp/x", "x\x00y"]


class TestPathArguments:
    def test_a_file_descriptor_is_no_config_path_and_is_left_open(self, tmp_path: Path) -> None:
        config = tmp_path / "m.toml"
        config.write_text("")
        descriptor = os.open(config, os.O_RDONLY)
        try:
            with pytest.raises(InvalidInput, match="the maintenance config must be a file's path"):
                MaintenanceConfig.load(descriptor)  # type: ignore[arg-type]  # the wrong type is the test
            os.fstat(descriptor)  # still open: not read and closed as if it were the file's
        finally:
            os.close(descriptor)

    @pytest.mark.parametrize("path", [p for p in NOT_PATHS if not isinstance(p, int)])  # an int: above
    def test_a_config_that_is_not_a_path_is_refused(self, path: Any) -> None:
        with pytest.raises(InvalidInput, match="the maintenance config must be a file's path"):
            MaintenanceConfig.load(path)

    @pytest.mark.parametrize("path", NOT_PATHS)
    def test_key_files_that_are_not_paths_are_refused(self, tmp_path: Path, path: Any) -> None:
        with pytest.raises(InvalidInput, match="a key file must be a file's path"):
            save_key_pair(generate_key(), path)
        for load in (load_signing_key, load_public_key):
            with pytest.raises(InvalidInput, match="a key file must be a file's path"):
                load(path)
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize("path", NOT_PATHS)
    def test_a_backup_that_is_not_a_path_is_refused(self, tmp_path: Path, path: Any) -> None:
        with EventStore.open(f"sqlite:///{tmp_path / 'live.db'}") as store:
            store.append("f", [NewEvent("Noted", {})])
            with pytest.raises(InvalidInput, match="a backup must be a file's path"):
                backup(store, path)
            assert store.last_position() == 1
        assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("live.db")) == []


class TestNamesTooLong:
    """A file name over the file system's limit (255 bytes on most): a clean error, and no file left."""

    def test_an_export_to_a_name_too_long_is_a_storage_error(self, store: EventStore, tmp_path: Path) -> None:
        store.append("f", [NewEvent("Noted", {})])
        out = tmp_path / "out"
        out.mkdir()
        with pytest.raises(StorageError, match="File name too long"):
            export_events(store, out / ("a" * 300 + ".jsonl"))
        assert list(out.iterdir()) == []

    def test_a_backup_to_a_name_too_long_is_a_storage_error(self, tmp_path: Path) -> None:
        with EventStore.open(f"sqlite:///{tmp_path / 'live.db'}") as store:
            store.append("f", [NewEvent("Noted", {})])
            out = tmp_path / "out"
            out.mkdir()
            with pytest.raises(StorageError, match="File name too long"):
                backup(store, out / ("a" * 300 + ".db"))
        assert list(out.iterdir()) == []
