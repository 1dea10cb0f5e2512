"""A LangGraph thread in the audit trail: who was asked what, who answered, which task failed."""

from __future__ import annotations

import itertools
import operator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypedDict

import pytest
from click.testing import CliRunner
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Send, interrupt

from eventstore.audit import FailureEntry, InterruptEntry, audit_trail
from eventstore.cli import main
from eventstore.integrations.langgraph import EventStoreSaver, flow_id_for

from .conftest import Target


class State(TypedDict):
    amount: int


def ask(state: State) -> State:
    answer = interrupt({"question": "refund?", "amount": state["amount"]})
    return {"amount": state["amount"] if answer == "yes" else 0}


def pay(state: State) -> State:
    raise RuntimeError("refund API down")


def run_refund(saver: EventStoreSaver) -> None:
    graph = StateGraph(State)
    graph.add_node("ask", ask)
    graph.add_node("pay", pay)
    graph.add_edge(START, "ask")
    graph.add_edge("ask", "pay")
    graph.add_edge("pay", END)
    app = graph.compile(checkpointer=saver)
    app.invoke({"amount": 40}, {"configurable": {"thread_id": "refund-7"}})
    try:
        app.invoke(Command(resume="yes"), {"configurable": {"thread_id": "refund-7", "actor": "human:ann"}})
    except RuntimeError:
        pass
    else:
        raise AssertionError("pay should have raised")


def cli(target: Target, *args: str) -> Any:
    schema = ["--schema", target.options["schema"]] if "schema" in target.options else []
    return CliRunner().invoke(main, ["--url", target.url, *schema, *args])


def test_the_audit_shows_who_answered_an_interrupt_and_which_task_failed(target: Target) -> None:
    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        run_refund(saver)
        entries = list(audit_trail(saver.store, flow_id=flow_id_for("refund-7")))
        answers = list(audit_trail(saver.store, actor="human:ann", types=["ResumeRecorded"]))
    asked = [e for e in entries if isinstance(e, InterruptEntry) and e.action == "asked"]
    assert [(e.actor, e.thread_id) for e in asked] == [("langgraph", "refund-7")]
    assert asked[0].values[0][0]["value"] == {"question": "refund?", "amount": 40}
    assert answers and all(e.action == "answered" and e.actor == "human:ann" for e in answers)
    assert "yes" in [answers[0].values[0], *answers[0].values[0]]
    (failed,) = [e for e in entries if isinstance(e, FailureEntry)]
    assert (failed.type, failed.error) == ("TaskFailed", "RuntimeError: refund API down")
    assert failed.details["thread_id"] == "refund-7"
    shown = cli(target, "audit", "--actor", "human:ann", "--type", "interrupt")
    assert shown.exit_code == 0, shown.output
    assert "ANSWERED" in shown.output and '"yes"' in shown.output
    asked_line = cli(target, "audit", "--type", "interrupt", "--flow", flow_id_for("refund-7"))
    assert "ASKED" in asked_line.output and '{"amount":40' in asked_line.output
    assert "TASK FAILED" in (failures := cli(target, "audit", "--type", "failure").output)
    assert "RuntimeError: refund API down" in failures


def _asking() -> Any:
    sub = StateGraph(State)
    sub.add_node("ask", ask)
    sub.add_edge(START, "ask")
    sub.add_edge("ask", END)
    return sub


def _subgraph_app(saver: EventStoreSaver, *, own_checkpointer: bool) -> Any:
    graph = StateGraph(State)
    graph.add_node("review", _asking().compile(checkpointer=True if own_checkpointer else None))
    graph.add_edge(START, "review")
    graph.add_edge("review", END)
    return graph.compile(checkpointer=saver)


@pytest.mark.parametrize("own_checkpointer", [False, True], ids=["subgraph", "subgraph-checkpointer"])
def test_a_subgraphs_question_is_one_question_with_its_answer(target: Target, own_checkpointer: bool) -> None:
    """LangGraph saves a subgraph's question twice (in its namespace, then as the writes of the node
    that ran it, same interrupt id): the trail shows it once, where it was asked, and its answer."""
    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        app = _subgraph_app(saver, own_checkpointer=own_checkpointer)
        app.invoke({"amount": 40}, {"configurable": {"thread_id": "sub-1"}})
        app.invoke(Command(resume="yes"), {"configurable": {"thread_id": "sub-1", "actor": "human:bob"}})
        assert app.get_state({"configurable": {"thread_id": "sub-1"}}).values == {"amount": 40}
        trail = list(audit_trail(saver.store, types=["InterruptRecorded", "ResumeRecorded"]))
        root = list(audit_trail(saver.store, flow_id=flow_id_for("sub-1"), types=["InterruptRecorded"]))
    assert [(e.action, e.actor) for e in trail] == [("asked", "langgraph"), ("answered", "human:bob")]
    assert trail[0].flow_id == trail[1].flow_id != flow_id_for("sub-1")  # the subgraph's namespace
    assert [(e.action, e.flow_id) for e in root] == [("asked", flow_id_for("sub-1"))]  # its own view
    shown = cli(target, "audit", "--type", "interrupt")
    assert "2 entries: 1 question, 1 answer" in shown.stderr


def test_a_trail_that_starts_after_the_subgraph_asked_shows_the_relayed_question(target: Target) -> None:
    """A window that leaves out where the subgraph asked keeps the parent's copy of the question:
    before, the copy was left out for a question the trail did not show either. A page of a trail
    (``after_position``) does not show it again: an earlier page showed the original."""
    moments = (datetime(2030, 1, 1, tzinfo=UTC) + timedelta(seconds=s) for s in itertools.count())
    with EventStoreSaver.from_url(target.url, clock=lambda: next(moments), **target.options) as saver:
        app = _subgraph_app(saver, own_checkpointer=False)
        app.invoke({"amount": 40}, {"configurable": {"thread_id": "sub-2"}})
        (asked,) = audit_trail(saver.store, types=["InterruptRecorded"])
        root = list(audit_trail(saver.store, flow_id=flow_id_for("sub-2"), types=["InterruptRecorded"]))
        (relay,) = root
        assert asked.flow_id != flow_id_for("sub-2") and asked.recorded_at < relay.recorded_at
        since = asked.recorded_at + timedelta(microseconds=1)
        later = list(audit_trail(saver.store, types=["InterruptRecorded"], since=since))
        after = list(audit_trail(saver.store, types=["InterruptRecorded"], after_position=asked.position))
        before = list(audit_trail(saver.store, types=["InterruptRecorded"], until=relay.recorded_at))
    assert [(e.action, e.flow_id, e.position) for e in later] == [("asked", relay.flow_id, relay.position)]
    assert after == []  # a page after the original's: the trail showed the question on that page
    assert [(e.action, e.position) for e in before] == [("asked", asked.position)]  # the copy, outside


@pytest.mark.parametrize("nested", [False, True], ids=["root", "nested"])
def test_a_question_from_a_subgraph_run_by_send_is_one_question(target: Target, nested: bool) -> None:
    """A ``Send`` runs the subgraph as a task whose path names no node: its relay is found by task id,
    also under a subgraph's namespace. Each of the two Sends' questions is shown once, then its answer."""
    fan_out = StateGraph(Summed)
    fan_out.add_node("fan", lambda state: {})
    fan_out.add_node("review", _asking().compile())
    fan_out.add_edge(START, "fan")
    fan_out.add_conditional_edges("fan", lambda state: [Send("review", {"amount": n}) for n in (1, 2)])
    fan_out.add_edge("review", END)
    graph = fan_out
    if nested:
        graph = StateGraph(Summed)
        graph.add_node("outer", fan_out.compile())
        graph.add_edge(START, "outer")
        graph.add_edge("outer", END)
    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        app = graph.compile(checkpointer=saver)
        config = {"configurable": {"thread_id": "send-1"}}
        app.invoke({"amount": 0}, config)
        app.invoke(Command(resume={i.id: "yes" for i in app.get_state(config).interrupts}), config)
        trail = list(audit_trail(saver.store, types=["InterruptRecorded", "ResumeRecorded"]))
        copies = [e for e in saver.store.read_all() if e.type == "InterruptRecorded"]
        final = app.get_state(config).values
    asked = [e for e in trail if e.action == "asked"]
    assert len(asked) == 2 and len(copies) > 2  # each saved in its namespace and relayed up
    assert all(e.flow_id.startswith(f"{flow_id_for('send-1')}/") for e in asked)
    assert sorted(e.values[0][0]["value"]["amount"] for e in asked) == [1, 2]
    assert sum(e.action == "answered" for e in trail) >= 1
    assert final == {"amount": 3}


class Summed(TypedDict):
    amount: Annotated[int, operator.add]
