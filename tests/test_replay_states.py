"""Replayed states share the steps no event changed, yet each is its own: changing one changes no other."""

from __future__ import annotations

import copy
from itertools import islice
from typing import Any

import pytest

from eventstore import EventStore, IntegrityViolation, NewEvent
from eventstore.flow_fold import FlowView, view_to_dict
from eventstore.timetravel import replay, state_at

from .test_snapshot_parts import EVERY, STEPS, step_events
from .test_tamper import drop_guards, sql

FIRST = 1530  # from the snapshot at 1500; step s0512, the first of the third part, is scheduled at 1538


def folds(store: EventStore, first: int) -> list[dict[str, Any]]:
    """The flow's states from revision ``first`` on, folded from revision 1, as plain JSON."""
    view, states = FlowView(), []
    for event in store.read_flow("f"):
        view.apply(event)
        if event.revision >= first:
            states.append(view_to_dict(view))
    return states


def change_everything(view: FlowView) -> None:
    assert view.flow is not None
    view.flow.state["changed"] = True
    for step in view.steps.values():
        step.status = "changed"
        step.result = {"changed": True}
    view.steps["added"] = copy.copy(view.steps["s0000"])
    del view.steps["s0001"]


@pytest.fixture
def snapshotted(store: EventStore) -> EventStore:
    """Flow f: 522 steps in three parts, 1567 revisions, snapshots every 300 up to 1500."""
    start = NewEvent("FlowStarted", {"controller_id": "c", "goal": "g", "owner_session_key": "s"})
    store.append("f", [start, *step_events(0, STEPS)])
    state_at(store, "f", snapshot_every=EVERY)
    return store


def test_each_state_is_the_fold_from_the_start_and_changing_one_changes_no_other(
    snapshotted: EventStore,
) -> None:
    expected = folds(snapshotted, FIRST)
    kept = [view for _, view in replay(snapshotted, "f", from_revision=FIRST)]
    assert [view_to_dict(view) for view in kept] == expected
    for changed in (len(kept) - 1, 0, len(kept) // 2):
        change_everything(kept[changed])
        others = [n for n in range(len(kept)) if n not in (len(kept) - 1, 0, len(kept) // 2)]
        assert [view_to_dict(kept[n]) for n in others] == [expected[n] for n in others]


def test_a_caller_changing_each_state_as_it_comes_changes_none_after_it(snapshotted: EventStore) -> None:
    expected = iter(folds(snapshotted, FIRST))
    for _, view in replay(snapshotted, "f", from_revision=FIRST):
        assert view_to_dict(view) == next(expected)
        change_everything(view)
    assert next(expected, None) is None


def test_states_share_the_steps_no_event_changed(snapshotted: EventStore) -> None:
    first, second = (view for _, view in islice(replay(snapshotted, "f", from_revision=FIRST), 2))
    old, new = dict(first.steps.read_items()), dict(second.steps.read_items())
    assert old["s0000"] is new["s0000"], "a step neither state handed out is held once"
    assert old["s0509"] is not new["s0509"], "revision 1531 completed s0509: each state has its own"
    assert first.steps["s0000"] is not second.steps["s0000"], "handed out, a shared step is copied first"


@pytest.mark.parametrize("damage", ["UPDATE snapshot_parts SET body = '{}'", "DELETE FROM snapshot_parts"])
def test_a_damaged_or_missing_part_under_a_replay_is_folded_from_the_log(
    snapshotted: EventStore, damage: str
) -> None:
    sql(snapshotted, damage)
    kept = [view_to_dict(view) for _, view in replay(snapshotted, "f", from_revision=FIRST)]
    assert kept == folds(snapshotted, FIRST)


def test_a_step_the_snapshot_lists_but_the_log_lost_stops_the_replay(snapshotted: EventStore) -> None:
    drop_guards(snapshotted)
    sql(snapshotted, "DELETE FROM snapshot_parts")
    sql(snapshotted, "DELETE FROM flow_events WHERE flow_id = 'f' AND revision = 5")  # s0001 scheduled
    with pytest.raises(IntegrityViolation, match="'f' has no event at revision 5 though it has later"):
        list(replay(snapshotted, "f", from_revision=FIRST))
