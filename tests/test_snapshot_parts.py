"""Snapshots keep steps in shared, hash-checked parts that load only when a step is used."""

from __future__ import annotations

import copy

import pytest

from eventstore import EventStore, IntegrityViolation, NewEvent, StorageError, StoreClosed
from eventstore.flow_fold import FlowView, StepState
from eventstore.snapshots import PART_SIZE, Steps, decode_part
from eventstore.timetravel import diff, diff_states, state_at

STEPS = 2 * PART_SIZE + 10  # three parts
EVERY = 300


def step_events(first: int, last: int) -> list[NewEvent]:
    events = []
    for n in range(first, last):
        sid = f"s{n:04d}"
        events += [
            NewEvent("StepScheduled", {"step_id": sid, "name": "tool", "run_id": f"r{n}", "position": n}),
            NewEvent("StepStarted", {"step_id": sid}),
            NewEvent("StepCompleted", {"step_id": sid, "result": {"n": n}}),
        ]
    return events


@pytest.fixture
def long_flow(store: EventStore) -> EventStore:
    start = NewEvent("FlowStarted", {"controller_id": "c", "goal": "g", "owner_session_key": "s"})
    store.append("f", [start, *step_events(0, STEPS)])
    return store


def folded(store: EventStore, revision: int) -> FlowView:
    view = FlowView()
    for event in store.read_flow("f", to_revision=revision):
        view.apply(event)
    return view


def parts_stored(store: EventStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM snapshot_parts").scalar_one())


def test_a_state_read_from_a_snapshot_loads_only_the_parts_it_uses(long_flow: EventStore) -> None:
    head = long_flow.revision("f")
    state_at(long_flow, "f", snapshot_every=EVERY)  # leaves snapshots every 300 revisions
    view = state_at(long_flow, "f", revision=1201, snapshot_every=EVERY)  # the snapshot at 1200, +1
    # revision 1201 completes s0399, in the second part: only that part was read
    assert repr(view.steps) == "<Steps: 400 in 2 parts, 1 loaded>"
    assert len(view.steps) == 400 and list(view.steps)[:2] == ["s0000", "s0001"]
    assert repr(view.steps) == "<Steps: 400 in 2 parts, 1 loaded>", "listing the ids reads no part"
    assert view.steps["s0000"].status == "completed"
    assert repr(view.steps) == "<Steps: 400 in 2 parts, 2 loaded>"
    assert view == folded(long_flow, 1201), "and every step reads back as the fold has it"
    assert state_at(long_flow, "f", snapshot_every=EVERY) == folded(long_flow, head)


def test_snapshots_share_the_parts_that_did_not_change(long_flow: EventStore) -> None:
    state_at(long_flow, "f", snapshot_every=EVERY)
    with long_flow.engine.connect() as conn:
        listed = conn.exec_driver_sql("SELECT count(*) FROM flow_snapshots WHERE flow_id = 'f'").scalar_one()
    assert listed == long_flow.revision("f") // EVERY == 5
    # each snapshot stores only the parts its 300 revisions (100 steps) changed: at most two
    assert parts_stored(long_flow) <= 2 * listed


@pytest.mark.parametrize("damage", ["UPDATE snapshot_parts SET body = '{}'", "DELETE FROM snapshot_parts"])
def test_a_damaged_or_missing_part_is_folded_from_the_log(long_flow: EventStore, damage: str) -> None:
    state_at(long_flow, "f", snapshot_every=EVERY)
    with long_flow.engine.connect() as conn:
        conn.exec_driver_sql(damage)
        conn.commit()
    assert state_at(long_flow, "f", revision=1250, snapshot_every=0) == folded(long_flow, 1250)


def test_parts_loaded_after_the_store_closed_are_store_closed(long_flow: EventStore) -> None:
    state_at(long_flow, "f", snapshot_every=EVERY)
    view = state_at(long_flow, "f", revision=1201, snapshot_every=0)
    long_flow.close()
    with pytest.raises(StoreClosed):
        view.steps["s0000"]


def test_database_errors_in_snapshot_reads_are_storage_errors(long_flow: EventStore) -> None:
    state_at(long_flow, "f", snapshot_every=EVERY)
    view = state_at(long_flow, "f", revision=1201, snapshot_every=0)
    with long_flow.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE snapshot_parts")
        conn.exec_driver_sql("DROP TABLE flow_snapshots")
    with pytest.raises(StorageError, match="snapshot_parts"):
        view.steps["s0000"]  # parts load when a step is first used
    with pytest.raises(StorageError, match="flow_snapshots"):
        state_at(long_flow, "f", revision=1201)


def test_a_copy_is_independent(long_flow: EventStore) -> None:
    state_at(long_flow, "f", snapshot_every=EVERY)
    view = state_at(long_flow, "f", revision=1201, snapshot_every=0)
    kept = view.copy()
    view.steps["s0000"].status = "edited"
    view.steps["new"] = copy.copy(view.steps["s0001"])
    assert kept.steps["s0000"].status == "completed" and "new" not in kept.steps
    assert kept == folded(long_flow, 1201)


def test_a_diff_compares_only_the_steps_its_events_touched_and_misses_nothing(long_flow: EventStore) -> None:
    state_at(long_flow, "f", snapshot_every=EVERY)
    found = diff(long_flow, "f", 1190, 1210)
    assert len(found.events) == 20
    everything = diff_states(folded(long_flow, 1190), folded(long_flow, 1210))
    assert found.changes == everything and everything


class TestStepsMapping:
    def step(self, step_id: str) -> StepState:
        return StepState("f", step_id, "n", step_id, {}, None, 0, 0, None)

    def test_behaves_as_an_ordered_dict(self) -> None:
        steps = Steps(self.step(f"s{n}") for n in range(PART_SIZE + 3))
        steps["s1"] = self.step("s1")
        del steps["s0"]
        assert len(steps) == PART_SIZE + 2 and list(steps)[:2] == ["s1", "s2"]
        assert "s0" not in steps and steps.get("s0") is None
        assert steps == {s: self.step(s) for s in list(steps)}
        with pytest.raises(KeyError):
            steps["s0"]

    def test_encodes_only_parts_changed_since_the_last_encoding(self) -> None:
        steps = Steps(self.step(f"s{n}") for n in range(PART_SIZE + 3))
        listed, bodies = steps.encode_parts()
        assert len(listed) == len(bodies) == 2
        steps["late"] = self.step("late")
        listed_again, bodies_again = steps.encode_parts()
        assert listed_again[0] == listed[0] and len(bodies_again) == 1


def test_a_part_whose_body_lacks_a_step_it_lists_is_an_integrity_violation() -> None:
    """Only a snapshot rewritten whole (its part's and its own hashes made to match) gets here."""
    body = '{"s0001": {}}'
    with pytest.raises(IntegrityViolation, match="lists step 's0002' but holds no state for it"):
        decode_part(body, ["s0002"])
