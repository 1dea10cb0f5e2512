"""The law: for any command history, inline read models equal a rebuild from the log."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import EventStore, EventStoreError, NewEvent
from eventstore.flow_fold import FlowView, view_to_dict
from eventstore.timetravel import fork, replay, state_at
from projections import FlowProjection, FlowQueries, FlowService

from .conftest import Target
from .readmodels import assert_matches_rebuild, snapshot

FLOWS = 3
STEPS = 3
_runs = itertools.count()

command = st.one_of(
    st.tuples(st.just("start"), st.integers(0, FLOWS - 1), st.sampled_from(["s-a", "s-b"])),
    st.tuples(
        st.just("advance"),
        st.integers(0, FLOWS - 1),
        st.dictionaries(st.sampled_from("xyz"), st.one_of(st.none(), st.integers(0, 9)), max_size=2),
    ),
    st.tuples(st.just("schedule"), st.integers(0, FLOWS - 1), st.integers(0, STEPS - 1)),
    st.tuples(
        st.sampled_from(["start_step", "complete", "fail", "retry", "skip", "gate", "approve", "reject"]),
        st.integers(0, FLOWS - 1),
        st.integers(0, STEPS - 1),
    ),
    st.tuples(
        st.sampled_from(["wait", "resume", "finish", "fail_flow", "cancel", "decide", "raw"]),
        st.integers(0, FLOWS - 1),
        st.just(0),
    ),
)


def run(service: FlowService, prefix: str, op: str, flow: int, arg: Any) -> None:
    f = f"{prefix}-{flow}"
    step = f"step-{arg}" if isinstance(arg, int) else ""
    actions = {
        "start": lambda: service.start_flow(f, controller_id="c", goal="g", owner_session_key=str(arg)),
        "advance": lambda: service.advance(f, current_step="x", state_patch=arg),
        "schedule": lambda: service.schedule_step(
            f, step_id=step, name="n", run_id=f"{step}-{next(_runs) % 2}", position=arg
        ),
        "start_step": lambda: service.start_step(f, step),
        "complete": lambda: service.complete_step(f, step, result={"v": arg}),
        "fail": lambda: service.fail_step(f, step, error="boom"),
        "retry": lambda: service.retry_step(f, step),
        "skip": lambda: service.skip_step(f, step),
        "gate": lambda: service.open_gate(f, step, prompt="ok?", options=[{"value": "y", "label": "Yes"}]),
        "approve": lambda: service.approve_gate(f, step, by="ann", selections=["y"]),
        "reject": lambda: service.reject_gate(f, step, by="bob"),
        "wait": lambda: service.wait(f, waiting_for="human"),
        "resume": lambda: service.resume(f, by="ann"),
        "finish": lambda: service.finish(f, result={"ok": True}),
        "fail_flow": lambda: service.fail(f, error="boom"),
        "cancel": lambda: service.cancel(f),
        "decide": lambda: service.record_decision(f, actor="agent", decision="go"),
        "raw": lambda: service.store.append(f, [NewEvent("Note", {"text": "outside the vocabulary"})]),
    }
    with contextlib.suppress(
        EventStoreError
    ):  # refused commands write nothing; the law is about the accepted
        actions[op]()


_examples = itertools.count()
RAW_EVENTS = [  # appended as they are, by a writer with the flow projection or one without it
    NewEvent("FlowStarted", {"controller_id": "c", "goal": "g", "owner_session_key": "s-a"}),
    NewEvent("FlowStarted", {"controller_id": "c", "goal": "h", "owner_session_key": "s-b"}),
    NewEvent("FlowAdvanced", {"state_patch": {"x": 1}}),
    NewEvent("StepScheduled", {"step_id": "step-0", "name": "n", "run_id": "r"}),
    NewEvent("StepStarted", {"step_id": "step-0"}),
    NewEvent("StepCompleted", {"step_id": "step-0", "result": {"v": 1}}),
    NewEvent("FlowFinished", {"result": {}}),
    NewEvent("Note", {"text": "outside the vocabulary"}),
]
writes = st.one_of(
    command.map(lambda c: ("service", c[1], c)),
    st.tuples(
        st.sampled_from(["inline", "bare"]),
        st.integers(0, FLOWS - 1),
        st.lists(st.sampled_from(RAW_EVENTS), min_size=1, max_size=3),
    ),
    st.tuples(st.sampled_from(["inline fork", "bare fork"]), st.integers(0, FLOWS - 1), st.integers(0, 2)),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(commands=st.lists(command, min_size=1, max_size=30))
def test_inline_read_models_equal_a_rebuild(
    flow_store: EventStore, commands: list[tuple[str, int, Any]]
) -> None:
    service = FlowService(flow_store)
    prefix = f"ex{next(_examples)}"
    for op, flow, arg in commands:
        run(service, prefix, op, flow, arg)
    assert flow_store.verify().ok
    assert_matches_rebuild(flow_store)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(commands=st.lists(command, min_size=1, max_size=30))
def test_replaying_one_flow_gives_its_read_model(
    flow_store: EventStore, commands: list[tuple[str, int, Any]]
) -> None:
    service = FlowService(flow_store)
    prefix = f"replay{next(_examples)}"
    for op, flow, arg in commands:
        run(service, prefix, op, flow, arg)
    queries = FlowQueries(flow_store)
    rows = snapshot(flow_store)
    for flow in range(FLOWS):
        view = FlowView()
        for event in flow_store.read_flow(f"{prefix}-{flow}"):
            view.apply(event)
        stored = [r for r in rows["flows"] if r["flow_id"] == f"{prefix}-{flow}"]
        if view.flow is None:
            assert stored == []
            continue
        assert queries.flow(view.flow.flow_id) == view.flow
        assert {s.step_id: s for s in queries.steps(view.flow.flow_id)} == view.steps


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    commands=st.lists(command, min_size=1, max_size=30),
    every=st.integers(1, 4),
    first=st.integers(1, 30),
)
def test_replaying_from_a_snapshot_gives_the_fold_from_the_start(
    flow_store: EventStore, commands: list[tuple[str, int, Any]], every: int, first: int
) -> None:
    """Each state replay yields is the fold of the log up to it, even if the caller changes the one before."""
    service = FlowService(flow_store)
    flow_id = f"tail{next(_examples)}-0"
    for op, _, arg in commands:
        run(service, flow_id.removesuffix("-0"), op, 0, arg)
    head = flow_store.revision(flow_id)
    if head == 0:  # every command was refused
        return
    state_at(flow_store, flow_id, snapshot_every=every)  # snapshots for the replay to start from
    first = min(first, head)
    view, expected = FlowView(), []
    for event in flow_store.read_flow(flow_id):
        view.apply(event)
        if event.revision >= first:
            expected.append(view_to_dict(view))
    states = replay(flow_store, flow_id, from_revision=first)
    for wanted in expected:
        _, state = next(states)
        assert view_to_dict(state) == wanted
        if state.flow is not None:
            state.flow.state["changed"] = True
        for step in state.steps.values():
            step.status = "changed"  # before the next state is folded
    assert next(states, None) is None


@pytest.fixture
def writers(target: Target) -> Iterator[tuple[EventStore, EventStore]]:
    """Two writers on one log: one with the flow projection, one without it."""
    with target.open(projections=[FlowProjection()]) as store, target.open() as bare:
        yield store, bare


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=st.lists(writes, min_size=1, max_size=25))
def test_writers_with_and_without_the_projection_leave_the_read_models_a_rebuild_gives(
    writers: tuple[EventStore, EventStore], history: list[tuple[Any, ...]]
) -> None:
    """Once the writer with the projection appends to each flow again, whatever the other wrote."""
    store, bare = writers
    prefix = f"mixed{next(_examples)}"
    for writer, flow, *args in history:
        chosen = bare if writer.startswith("bare") else store
        with contextlib.suppress(EventStoreError):  # refused writes write nothing
            if writer == "service":
                run(FlowService(store), prefix, *args[0])
            elif writer.endswith("fork"):
                fork(chosen, f"{prefix}-{args[0]}", at_revision=1, new_flow_id=f"{prefix}-{flow}")
            else:
                chosen.append(f"{prefix}-{flow}", args[0])
    for flow in range(FLOWS):  # a flow nothing touches again stays behind until a rebuild
        store.append(f"{prefix}-{flow}", [NewEvent("Note", {})])
    assert_matches_rebuild(store)
