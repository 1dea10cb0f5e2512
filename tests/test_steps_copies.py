"""The law of ``Steps`` copies: a ``Steps`` and its copies behave as dicts of steps and their deep copies.

Copies share the parts and states that neither side changed; that must never
show. Parts are made tiny here so that a few steps span many of them.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore import snapshots
from eventstore.flow_fold import StepState, copy_step
from eventstore.snapshots import Steps

IDS = [f"s{n}" for n in range(10)]

operation = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 9), st.sampled_from(IDS), st.integers(0, 99)),
    st.tuples(st.just("change"), st.integers(0, 9), st.sampled_from(IDS), st.integers(0, 99)),
    st.tuples(st.just("change held"), st.integers(0, 99), st.just(""), st.integers(0, 99)),
    st.tuples(st.just("delete"), st.integers(0, 9), st.sampled_from(IDS), st.just(0)),
    st.tuples(st.just("copy"), st.integers(0, 9), st.just(""), st.just(0)),
)


def step(step_id: str, value: int) -> StepState:
    return StepState("f", step_id, f"n{value}", step_id, {"v": value}, None, value, 0, None)


@settings(max_examples=300, deadline=None)
@given(operations=st.lists(operation, max_size=60))
def test_copies_behave_as_deep_copies(operations: list[tuple[str, int, str, int]]) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(snapshots, "PART_SIZE", 3)
        steps: list[Steps] = [Steps()]
        model: list[dict[str, StepState]] = [{}]
        held: list[tuple[StepState, StepState]] = []  # states handed out, and the model's same ones
        for op, which, step_id, value in operations:
            n = which % len(steps)
            if op == "set":
                steps[n][step_id] = step(step_id, value)
                model[n][step_id] = step(step_id, value)
            elif op == "change" and step_id in model[n]:
                pair = (steps[n][step_id], model[n][step_id])
                held.append(pair)
                change(pair, value)
            elif op == "change held" and held:
                change(held[which % len(held)], value)
            elif op == "delete" and step_id in model[n]:
                del steps[n][step_id], model[n][step_id]
            elif op == "copy":
                steps.append(copy.deepcopy(steps[n]))
                model.append(copy.deepcopy(model[n]))
            for mine, expected in zip(steps, model, strict=True):
                assert list(mine) == list(expected) and len(mine) == len(expected)
                assert dict(mine.read_items()) == expected
        assert [dict(mine.items()) for mine in steps] == model


def change(pair: tuple[StepState, StepState], value: int) -> None:
    for state in pair:
        state.status = f"changed {value}"
        state.task["v"] = value
        state.result = {"v": value}


class TestACopy:
    def held(self) -> tuple[Steps, StepState, Steps]:
        steps = Steps(step(f"s{n}", n) for n in range(300))
        held = steps["s1"]
        return steps, held, copy.deepcopy(steps)

    def test_keeps_a_step_handed_out_before_it_as_it_was(self) -> None:
        steps, held, kept = self.held()
        held.status = "changed"
        assert steps["s1"].status == "changed" and kept["s1"].status == "scheduled"

    def test_does_not_see_a_step_the_original_adds_or_deletes(self) -> None:
        steps, _, kept = self.held()
        steps["new"] = step("new", 0)
        del steps["s2"]
        kept["other"] = step("other", 0)
        assert "new" not in kept and "s2" in kept and "other" not in steps
        assert (len(steps), len(kept)) == (300, 301)

    def test_of_a_copy_is_independent_of_both(self) -> None:
        steps, _, kept = self.held()
        again = copy.deepcopy(kept)
        again["s5"].task["v"] = "changed"
        values: list[Any] = [s["s5"].task["v"] for s in (steps, kept, again)]
        assert values == [5, 5, "changed"]


def test_copy_step_copies_every_container_of_a_step() -> None:
    step = StepState(
        "f", "s", "n", "r", {"a": [1]}, None, 0, 0, None,
        result={"r": {"x": 1}}, output={"o": 1}, gate_options=[{"value": "y", "label": "Yes"}],
        gate_selections=["y"],
    )  # fmt: skip
    before = copy.deepcopy(step)
    clone = copy_step(step)
    assert clone == step
    containers = [name for name, field in StepState.__dataclass_fields__.items() if "[" in str(field.type)]
    assert containers and all(getattr(clone, name) is not getattr(step, name) for name in containers)
    clone.task["a"].append(2)
    clone.result["r"]["x"] = 2  # type: ignore[index]  # set above
    clone.gate_options[0]["value"] = "n"  # type: ignore[index]  # set above
    assert step == before
