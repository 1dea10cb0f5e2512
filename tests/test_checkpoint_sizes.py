"""Tree size 0: no checkpoint is of an empty log, so no proof is from one, at any entry point."""

from __future__ import annotations

import dataclasses

import pytest

from eventstore import EventStore, InvalidInput, InvalidProof
from eventstore import checkpoints as cp
from eventstore.merkle import EMPTY_ROOT

from .conftest import Target
from .test_checkpoints import KEY, fill, run

NO_EMPTY_CHECKPOINT = "is 0: there is no checkpoint of an empty log"


def two_checkpoints(store: EventStore) -> tuple[cp.Checkpoint, cp.Checkpoint]:
    fill(store, "a", 1)
    first = cp.take_checkpoint(store, KEY)
    fill(store, "a", 2)
    return first, cp.take_checkpoint(store, KEY)


def of_the_empty_log(checkpoint: cp.Checkpoint) -> cp.Checkpoint:
    """What a checkpoint of the empty log would be, were one ever made (it is not)."""
    return dataclasses.replace(checkpoint, tree_size=0, root_hash=EMPTY_ROOT)


class TestTreeSizeZero:
    def test_a_proof_from_or_to_it_is_refused_before_reading_the_log(self, store: EventStore) -> None:
        first, second = two_checkpoints(store)
        empty = of_the_empty_log(first)
        for old, new in [(empty, second), (first, empty), (empty, empty)]:
            with pytest.raises(InvalidInput, match=f"a checkpoint's tree size {NO_EMPTY_CHECKPOINT}"):
                cp.consistency_proof(store, old, new)

    def test_no_proof_of_it_can_be_made_or_parsed(self) -> None:
        with pytest.raises(InvalidInput, match=f"proof's old tree size {NO_EMPTY_CHECKPOINT}"):
            cp.ConsistencyProof(0, 3, ())
        with pytest.raises(InvalidInput, match="proof's new tree size must be an int >= 1, not -1"):
            cp.ConsistencyProof(1, -1, ())
        document = {"format": cp.CONSISTENCY_FORMAT, "old_size": 0, "new_size": 3, "path": []}
        with pytest.raises(InvalidInput, match="malformed consistency proof export"):
            cp.ConsistencyProof.from_dict(document)

    def test_a_proof_does_not_verify_against_it(self, store: EventStore) -> None:
        first, second = two_checkpoints(store)
        proof = cp.consistency_proof(store, first, second)
        with pytest.raises(InvalidProof, match="checkpoint of tree size 0: a checkpoint covers at least one"):
            proof.verify(of_the_empty_log(first), second)
        with pytest.raises(InvalidProof, match="tree size 0 is out of range"):
            cp.verify_checkpoint_signature(of_the_empty_log(first))
        with pytest.raises(InvalidInput, match="malformed checkpoint export"):
            cp.Checkpoint.from_dict(of_the_empty_log(first).to_dict())

    def test_every_proof_made_round_trips_through_its_export_and_verifies(self, store: EventStore) -> None:
        first, second = two_checkpoints(store)
        for old, new in [(first, second), (first, first), (second, second)]:
            proof = cp.consistency_proof(store, old, new)
            assert cp.ConsistencyProof.from_dict(proof.to_dict()) == proof
            cp.ConsistencyProof.from_dict(proof.to_dict()).verify(old, new)

    def test_the_command_line_says_so_without_a_traceback(self, target: Target) -> None:
        with target.open() as store:
            two_checkpoints(store)
        for sizes in (("0", "3"), ("1", "0")):
            output = run(target, "prove", "--consistency", *sizes, code=1)
            assert f"error: tree_size {NO_EMPTY_CHECKPOINT}" in output
        assert f"error: tree_size {NO_EMPTY_CHECKPOINT}" in run(
            target, "prove", "1", "--checkpoint", "0", code=1
        )
        assert "error: tree_size" in run(target, "checkpoint", "--export", "-", "--size", "0", code=1)

    def test_a_lookup_of_it_is_told_there_is_none_not_that_nothing_needs_proving(
        self, target: Target
    ) -> None:
        with target.open() as store:
            two_checkpoints(store)
            with pytest.raises(InvalidInput, match=f"tree_size {NO_EMPTY_CHECKPOINT}") as raised:
                cp.get_checkpoint(store, 0)
        assert "prove" not in str(raised.value)
        output = run(target, "checkpoint", "--export", "-", "--size", "0", code=1)
        assert f"error: tree_size {NO_EMPTY_CHECKPOINT}" in output and "prove" not in output
