"""The shape a fork's snapshot is checked against names the fields of the flow and step states, in order.

``FlowForked.snapshot`` is what ``view_to_dict`` writes from a ``FlowState`` and its
``StepState``s; ``eventstore.flows`` checks it with pydantic models that forbid any other
member. The two lists are declared twice on purpose (the snapshot's types are its JSON form:
times as text, statuses as literals, 32-bit counters), so this pins them to each other.
"""

from __future__ import annotations

import dataclasses

import pytest

from eventstore import flow_fold, flows


@pytest.mark.parametrize(
    ("model", "state"),
    [(flows._SnapshotFlow, flow_fold.FlowState), (flows._SnapshotStep, flow_fold.StepState)],
)
def test_the_snapshot_models_have_the_fields_of_the_states_they_describe(model: type, state: type) -> None:
    assert list(model.model_fields) == [field.name for field in dataclasses.fields(state)]
