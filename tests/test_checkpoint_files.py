"""The files the checkpoint commands write: exports and key pairs are never written over anything."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import orjson
import pytest

from eventstore import InvalidInput
from eventstore import checkpoints as cp

from .conftest import Target
from .test_checkpoints import KEY, fill, run


@pytest.fixture
def signed(tmp_path: Path) -> Target:
    """A SQLite store holding one checkpoint (the store's own files are SQLite's)."""
    target = Target(f"sqlite:///{tmp_path / 'events.db'}")
    with target.open() as store:
        fill(store, "a", 3)
        cp.take_checkpoint(store, KEY)
    return target


class TestExport:
    def test_an_existing_file_is_refused_and_kept(self, signed: Target, tmp_path: Path) -> None:
        private, _ = cp.save_key_pair(cp.generate_key(), tmp_path / "k.pem")
        before = private.read_bytes()
        out = run(signed, "checkpoint", "--export", str(private), code=1)
        assert out == f"error: {private} exists already: export to a new file, or replace it (--force)\n"
        assert private.read_bytes() == before

    @pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
    def test_the_stores_own_files_are_refused_even_with_force(self, signed: Target, suffix: str) -> None:
        database = Path(signed.url.removeprefix("sqlite:///") + suffix)
        link = database.with_name("link.json")
        link.symlink_to(database)
        for path in (database, link):
            out = run(signed, "checkpoint", "--export", str(path), "--force", code=1)
            assert f"it would overwrite {database}, a file of this store's database" in out
        with signed.open() as store:
            assert store.verify().ok and len(cp.list_checkpoints(store)) == 1

    def test_force_replaces_a_file_whole_and_leaves_no_temporary_file(
        self, signed: Target, tmp_path: Path
    ) -> None:
        exported = tmp_path / "out" / "cp.json"
        exported.parent.mkdir()
        exported.write_text("old")
        run(signed, "checkpoint", "--export", str(exported), "--force")
        assert orjson.loads(exported.read_bytes())["tree_size"] == 3
        assert [p.name for p in exported.parent.iterdir()] == ["cp.json"]

    def test_force_never_replaces_what_is_not_a_regular_file(self, signed: Target, tmp_path: Path) -> None:
        fifo = tmp_path / "fifo.json"  # as /dev/null is to root: os.replace put a file in its place
        os.mkfifo(fifo)
        out = run(signed, "checkpoint", "--export", str(fifo), "--force", code=1)
        assert out == f"error: {fifo} is not a regular file: not replacing it\n"
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and not list(tmp_path.glob("*partial*"))

    def test_size_and_force_without_export_are_usage_errors(self, signed: Target, tmp_path: Path) -> None:
        key = tmp_path / "k.pem"
        cp.save_key_pair(KEY, key)
        with signed.open() as store:
            fill(store, "b", 2)
            assert "--size goes with --export FILE" in run(
                signed, "checkpoint", "--size", "3", "--key", str(key), code=2
            )
            assert "--force goes with --export FILE" in run(signed, "checkpoint", "--force", "--list", code=2)
            assert [c.tree_size for c in cp.list_checkpoints(store)] == [3]


class TestKeygen:
    def test_an_existing_public_key_leaves_no_private_key_behind(self, tmp_path: Path) -> None:
        key = tmp_path / "k.pem"
        Path(f"{key}.pub").write_text("another key's")
        with pytest.raises(InvalidInput, match=r"k.pem.pub exists already; not overwriting a key"):
            cp.save_key_pair(KEY, key)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pem.pub"]
        Path(f"{key}.pub").unlink()
        private, public = cp.save_key_pair(KEY, key)  # the retry is not refused
        assert cp.key_id(cp.load_signing_key(private).public_key()) == cp.key_id(cp.load_public_key(public))

    @pytest.mark.parametrize("path", ["", ".", "..", "/"])
    def test_a_path_without_a_file_name_is_refused(self, path: str) -> None:
        with pytest.raises(InvalidInput, match="a key file needs a file name"):
            cp.save_key_pair(KEY, path)

    def test_keygen_of_an_empty_path_is_a_usage_error_naming_it(self, signed: Target) -> None:
        output = run(signed, "keygen", "", code=2)
        assert output.endswith("Error: Invalid value for 'PATH': an empty path: give a file name\n")
        assert "Traceback" not in output
