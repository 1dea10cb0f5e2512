"""A LangGraph thread's flow, given to the per-flow commands: they say what it is and what reads it.

A thread's flow holds checkpoints, not a flow ``FlowService`` started: ``show``,
``state``, ``diff`` and ``fork`` used to call it missing or empty, ``history``
of the bare thread id said nothing of its flow, and ``stats`` counted no threads.
"""

from __future__ import annotations

import operator
from typing import Annotated, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from eventstore import FlowNotFound, ThreadNotAFlow
from eventstore.integrations.langgraph import EventStoreSaver, flow_id_for
from eventstore.timetravel import fork

from .conftest import Target
from .test_audit_langgraph import cli, run_refund

FLOW = flow_id_for("refund-7")


@pytest.fixture
def refunded(target: Target) -> Target:
    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        run_refund(saver)
    return target


@pytest.mark.parametrize(
    "args",
    [
        ["show", FLOW],
        ["state", FLOW, "--at", "4"],
        ["state", FLOW],
        ["diff", FLOW, "1", "4"],
        ["fork", FLOW, "--at", "4", "--new", "x"],
    ],
)
def test_a_per_flow_command_says_a_threads_flow_is_no_flow_and_what_reads_it(
    refunded: Target, args: list[str]
) -> None:
    result = cli(refunded, *args)
    assert result.exit_code == 1, result.output
    assert "holds the checkpoints of LangGraph thread 'refund-7': it is not a flow" in result.output
    assert "eventstore history langgraph/refund-7" in result.output and "get_state_history" in result.output
    assert "Traceback" not in result.output and cli(refunded, "history", FLOW).exit_code == 0


def test_fork_of_a_threads_flow_raises_thread_not_a_flow(refunded: Target) -> None:
    with (
        EventStoreSaver.from_url(refunded.url, **refunded.options) as saver,
        pytest.raises(ThreadNotAFlow, match="not a flow") as raised,
    ):
        fork(saver.store, FLOW, at_revision=4, new_flow_id="x")
    assert (raised.value.flow_id, raised.value.thread_id) == (FLOW, "refund-7")


def test_a_bare_thread_id_is_not_found_with_a_hint_naming_its_flow(refunded: Target) -> None:
    for command in ("history", "show"):
        result = cli(refunded, command, "refund-7")
        assert result.exit_code == 1
        assert "flow 'refund-7' does not exist: 'refund-7' is a LangGraph thread" in result.output
        assert "eventstore history langgraph/refund-7" in result.output
    plain = cli(refunded, "history", "refund-8")
    assert plain.output == "error: flow 'refund-8' does not exist\n"
    with (
        EventStoreSaver.from_url(refunded.url, **refunded.options) as saver,
        pytest.raises(FlowNotFound) as raised,
    ):
        saver.store.verify("refund-7")
    assert raised.value.hint is not None and FLOW in raised.value.hint


def test_a_thread_id_too_long_for_a_flow_id_is_refused_naming_its_hashed_flow(target: Target) -> None:
    thread_id = "t" * 250
    graph = StateGraph(Counted)
    graph.add_node("count", lambda state: {"n": state["n"] + 1})
    graph.add_edge(START, "count")
    graph.add_edge("count", END)
    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        graph.compile(checkpointer=saver).invoke({"n": 1}, {"configurable": {"thread_id": thread_id}})
    hashed = flow_id_for(thread_id)
    assert hashed.startswith("langgraph#")
    result = cli(target, "history", thread_id)
    assert result.exit_code == 1
    assert result.output == (
        "error: a flow id may have at most 200 characters, not 250 (a LangGraph thread id this long has "
        f"its events in flow {hashed!r})\n"
    )
    assert cli(target, "history", hashed).exit_code == 0


class Counted(TypedDict):
    n: int


def test_stats_counts_langgraph_threads(refunded: Target) -> None:
    shown = cli(refunded, "stats", "--days", "0")
    assert "flows      0" in shown.output
    assert "threads    1 LangGraph thread, not flows: `eventstore threads`" in shown.output
    assert '"langgraph_threads":1' in cli(refunded, "stats", "--json").output.replace(" ", "")


def test_history_summarises_checkpoints_and_writes_and_json_stays_raw(refunded: Target) -> None:
    shown = cli(refunded, "history", FLOW).output
    assert '{"blobs"' not in shown and '"data":' not in shown
    assert "step -1 (input)" in shown and "step 1 (loop) channels: amount" in shown
    assert 'writes of task ask: __interrupt__ [{"amount":40,"question":"refund?"}]' in shown
    assert 'writes of the run\'s input: __resume__ "yes"' in shown
    assert 'writes of task pay: __error__ "RuntimeError: refund API down"' in shown
    assert '"blobs":[' in cli(refunded, "history", FLOW, "--json").output


class Fanned(TypedDict):
    items: list[int]
    done: Annotated[list[int], operator.add]


def test_history_names_a_sends_task_by_its_id_not_by_its_index(target: Target) -> None:
    """A task a Send started has no node in its path (``~__pregel_push, 0000000001, ...``)."""
    graph = StateGraph(Fanned)
    graph.add_node("work", lambda state: {"done": [state["n"] * 2]})
    graph.add_conditional_edges(START, lambda state: [Send("work", {"n": n}) for n in state["items"]])
    graph.add_edge("work", END)
    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        graph.compile(checkpointer=saver).invoke({"items": [1, 2]}, {"configurable": {"thread_id": "fan"}})
        events = saver.store.read_flow(flow_id_for("fan"))
        tasks = [e.data["task_id"] for e in events if e.type == "WritesSaved"]
    shown = cli(target, "history", flow_id_for("fan"))
    assert shown.exit_code == 0, shown.output
    assert "task 0000000000" not in shown.output
    sent = [task for task in tasks if f"writes of a Send's task {task[:8]}: done" in shown.output]
    assert len(sent) == 2, shown.output
