"""Deletions dressed up as something the library does: verify must still report them.

An attacker with the database deletes a flow's last event (no chain breaks)
and then makes the count of positions come out right again: with a pruned
leaf that looks left behind by a restore, with a position recorded both as
stored and as pruned, or by setting the position counter back.
"""

from __future__ import annotations

import pytest

from eventstore import EventStore, IntegrityViolation, NewEvent
from eventstore.checkpoints import generate_key, take_checkpoint, verify_checkpoints

from .conftest import Target
from .test_exchange import run
from .test_tamper import drop_guards, sql


@pytest.fixture
def filled(store: EventStore) -> EventStore:
    """Positions 1-5 are a@1-5, 6-8 are b@1-3, 9-10 are c@1-2."""
    store.append("a", [NewEvent("T", {"i": i}) for i in range(5)])
    store.append("b", [NewEvent("T", {"i": i}) for i in range(3)])
    store.append("c", [NewEvent("T", {"i": i}) for i in range(2)])
    drop_guards(store)
    return store


def record_as_pruned(store: EventStore, position: int, *, leaf_of: int) -> None:
    """Record ``position`` as a pruned leaf that names the stored event at ``leaf_of``."""
    sql(
        store,
        "INSERT INTO pruned_events (position, flow_id, revision, hash) "
        f"SELECT {position}, flow_id, revision, hash FROM flow_events WHERE position = {leaf_of}",
    )


def kinds(store: EventStore) -> list[tuple[str, int, int, str]]:
    return [(p.flow_id, p.revision, p.position, p.kind) for p in store.verify().problems]


def test_a_deleted_tail_recorded_as_a_restored_flows_leaf_is_reported(
    filled: EventStore, target: Target
) -> None:
    sql(filled, "DELETE FROM flow_events WHERE position = 8")  # b@3, b's last event
    record_as_pruned(filled, 8, leaf_of=1)  # as if a@1 was pruned from 8 and restored: but it is at 1, before
    assert kinds(filled) == [("a", 1, 8, "pruned-without-tombstone")]
    assert "BROKEN a@1 (position 8): pruned-without-tombstone" in run(target, "verify", code=2)


def test_a_position_both_stored_and_recorded_as_pruned_is_reported(filled: EventStore) -> None:
    sql(filled, "DELETE FROM flow_events WHERE position = 8")
    record_as_pruned(filled, 3, leaf_of=9)  # c@1 "pruned from 3, restored at 9": but 3 holds a@3
    problems = filled.verify().problems
    assert [(p.flow_id, p.revision, p.position, p.kind) for p in problems] == [
        ("c", 1, 3, "position-doubled"),
        ("", 0, 10, "missing-events"),
    ]
    assert problems[0].detail == "position 3 holds a@3 and is also recorded as a pruned event of c@1"
    assert problems[1].detail == (
        "9 events are stored (and 1 pruned, 1 of them at a position also stored), "
        "but positions were handed out up to 10"
    )


def test_the_end_of_the_log_deleted_with_the_counter_set_back_is_reported_past_a_checkpoint(
    filled: EventStore, target: Target
) -> None:
    key = generate_key()
    take_checkpoint(filled, key)
    sql(filled, "DELETE FROM flow_events WHERE position = 10")
    sql(filled, "UPDATE event_positions SET last_position = 9")
    (problem,) = filled.verify().problems
    assert (problem.kind, problem.position) == ("missing-events", 10)
    assert problem.detail == (
        "a checkpoint covers 10 positions, but positions were handed out only up to 9: "
        "events were deleted and the position counter set back"
    )
    assert "missing-events: a checkpoint covers 10 positions" in run(target, "verify", code=2)
    with pytest.raises(
        IntegrityViolation, match=r"the log has 9 positions, fewer than the 10 events that checkpoint covers"
    ):
        take_checkpoint(filled, key)
    assert not verify_checkpoints(filled).ok


def test_a_prune_forged_over_a_flow_that_keeps_its_events_names_each_position(filled: EventStore) -> None:
    for position in (6, 7, 8):
        record_as_pruned(filled, position, leaf_of=position)  # b's leaves, and b's events left in place
    sql(
        filled,
        "INSERT INTO flow_tombstones "
        "(flow_id, last_revision, last_hash, archive_id, archive_sha256, pruned_at) "
        "SELECT flow_id, revision, hash, 'forged', '', '' FROM flow_events WHERE position = 8",
    )
    assert kinds(filled) == [("b", revision, revision + 5, "position-doubled") for revision in (1, 2, 3)]


def test_a_prune_forged_at_the_position_of_the_event_it_names_is_one_problem(filled: EventStore) -> None:
    """No tombstone, and the event it names is where it was: the record pads the count of
    positions (position-doubled); nothing was deleted, so it is not also pruned-without-tombstone."""
    record_as_pruned(filled, 7, leaf_of=7)  # b@2, still stored at 7
    problems = filled.verify().problems
    assert [(p.flow_id, p.revision, p.position, p.kind) for p in problems] == [
        ("b", 2, 7, "position-doubled")
    ]
    assert problems[0].detail == "position 7 holds b@2 and is also recorded as a pruned event of b@2"


def test_a_tail_recorded_as_the_prune_of_a_flow_that_never_existed_passes(filled: EventStore) -> None:
    """docs/operations.md, "Only the prune may delete": what writing the retention tables allows."""
    take_checkpoint(filled, generate_key())
    sql(
        filled,
        "INSERT INTO pruned_events (position, flow_id, revision, hash) "
        "SELECT position, 'ghost', 1, hash FROM flow_events WHERE position = 8",
    )
    sql(
        filled,
        "INSERT INTO flow_tombstones "
        "(flow_id, last_revision, last_hash, archive_id, archive_sha256, pruned_at) "
        "SELECT 'ghost', 1, hash, 'forged', '', '' FROM flow_events WHERE position = 8",
    )
    sql(filled, "DELETE FROM flow_events WHERE position = 8")
    assert filled.verify().ok and verify_checkpoints(filled).ok and filled.revision("b") == 2
