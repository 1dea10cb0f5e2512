"""Checkpoint records whose numbers no signature can cover: refused, or reported as broken, never a crash."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from eventstore import InvalidInput, InvalidProof
from eventstore import checkpoints as cp

from .conftest import Target
from .test_checkpoints import KEY, fill, run
from .test_tamper import sql

GOOD = cp.Checkpoint(5, b"\1" * 32, 1000, "", b"", b"")


class TestOutOfRange:
    @pytest.mark.parametrize("field", ["tree_size", "timestamp_ms"])
    def test_an_export_past_eight_bytes_is_malformed(self, field: str) -> None:
        public = cp.raw_public_key(KEY.public_key())
        signed = dataclasses.replace(GOOD, key_id=cp.key_id(public), public_key=public, signature=b"\0" * 64)
        document = {**signed.to_dict(), field: 2**64}
        with pytest.raises(InvalidInput, match=r"expected an integer from \d to 2\*\*64 - 1"):
            cp.Checkpoint.from_dict(document)

    @pytest.mark.parametrize(
        ("field", "value"),
        [("tree_size", 0), ("tree_size", 2**64), ("timestamp_ms", -1), ("timestamp_ms", 2**64)],
    )
    def test_a_record_out_of_range_does_not_verify(self, field: str, value: int) -> None:
        record = dataclasses.replace(GOOD, **{field: value})
        with pytest.raises(InvalidProof, match=r"out of range .*so no signature covers it"):
            cp.verify_checkpoint_signature(record)


@pytest.mark.parametrize(
    "change", ["timestamp_ms = -5", "tree_size = -3", "timestamp_ms = 99999999999999999"]
)
def test_a_tampered_row_is_listed_and_reported_broken(target: Target, tmp_path: Path, change: str) -> None:
    key = tmp_path / "k.pem"
    cp.save_key_pair(KEY, key)
    with target.open() as store:
        fill(store, "a", 3)
        cp.take_checkpoint(store, KEY)
        sql(store, f"UPDATE log_checkpoints SET {change}")
    assert "root " in run(target, "checkpoint", "--list")
    assert run(target, "checkpoint", "--verify", code=2).startswith("BROKEN checkpoint ")
    assert run(target, "prove", "1", code=2).startswith("FAILED: checkpoint ")
    assert "FAILED: the latest checkpoint does not verify" in run(
        target, "checkpoint", "--key", str(key), code=2
    )
