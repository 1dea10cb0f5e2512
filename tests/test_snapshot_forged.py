"""A snapshot rewritten with hashes to match but holding no state the fold wrote: the head is
ignored (the log answers), a part is an IntegrityViolation; neither is a JSON or TypeError traceback."""

from __future__ import annotations

import hashlib

import orjson
import pytest
import sqlalchemy as sa

from eventstore import EventStore, IntegrityViolation, NewEvent
from eventstore.timetravel import state_at

from .test_snapshot_parts import folded, step_events


@pytest.fixture
def snapshotted(store: EventStore) -> EventStore:
    """Flow f: started, then three steps (revisions 2 to 10); snapshots at revisions 4 and 8."""
    start = NewEvent("FlowStarted", {"controller_id": "c", "goal": "g", "owner_session_key": "s"})
    store.append("f", [start, *step_events(0, 3)])
    state_at(store, "f", snapshot_every=4)
    return store


def sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def forge_head(store: EventStore, state: str) -> None:
    """What someone who knows the format does: the snapshot at 8 rewritten, its hash to match."""
    with store.engine.connect() as conn:
        conn.execute(
            sa.text("UPDATE flow_snapshots SET state = :state, state_hash = :hash WHERE revision = 8"),
            {"state": state, "hash": sha256(state)},
        )
        conn.commit()


@pytest.mark.parametrize(
    "forged",
    ["{not json", "[]", '{"flow": {"x": 1}, "parts": []}', '{"flow": null, "parts": [["zz", 5]]}'],
)
def test_a_snapshot_that_hashes_but_is_no_state_is_ignored(snapshotted: EventStore, forged: str) -> None:
    forge_head(snapshotted, forged)
    assert state_at(snapshotted, "f", revision=9, snapshot_every=0) == folded(snapshotted, 9)
    assert state_at(snapshotted, "f", revision=8, snapshot_every=0) == folded(snapshotted, 8)


@pytest.mark.parametrize("forged", ["{not json", '{"s0000": 5, "s0001": 5, "s0002": 5}'])
def test_a_part_that_hashes_but_holds_no_steps_is_an_integrity_violation(
    snapshotted: EventStore, forged: str
) -> None:
    """The part, and the snapshot at 8 that lists it, rewritten with their hashes to match."""
    with snapshotted.engine.connect() as conn:
        head = conn.execute(sa.text("SELECT state FROM flow_snapshots WHERE revision = 8")).scalar_one()
        ((listed, ids),) = orjson.loads(head)["parts"]
        assert ids == ["s0000", "s0001", "s0002"]
        old = bytes.fromhex(listed)
        conn.execute(
            sa.text("UPDATE snapshot_parts SET body = :body, hash = :new WHERE hash = :old"),
            {"body": forged, "new": sha256(forged), "old": old},
        )
        conn.commit()
    forge_head(snapshotted, head.replace(old.hex(), sha256(forged).hex()))
    with pytest.raises(
        IntegrityViolation, match=r"a snapshot part cannot be read .*the snapshot was altered"
    ):
        state_at(snapshotted, "f", revision=9, snapshot_every=0)  # revision 9 changes a step of the part
