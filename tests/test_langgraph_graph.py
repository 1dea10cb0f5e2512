"""A real StateGraph on EventStoreSaver: the same states as LangGraph's SqliteSaver, and an audit trail.

The graph has no LLM: ``plan`` and ``finish`` are arithmetic, ``sub`` is a
compiled subgraph (its checkpoints live in their own namespace), and
``review`` asks a human with ``interrupt()``. A run is interrupted, resumed
by a named user, replayed from an earlier checkpoint and forked with
``update_state``; every state along the way must equal SqliteSaver's.
"""

from __future__ import annotations

import asyncio
import operator
import sqlite3
from pathlib import Path
from typing import Annotated, Any, TypedDict

from click.testing import CliRunner
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, StateSnapshot, interrupt

from eventstore.cli import main
from eventstore.integrations.langgraph import EventStoreSaver, flow_id_for
from tests.conftest import Target


class State(TypedDict, total=False):
    items: Annotated[list[str], operator.add]
    total: int
    approved: bool


def plan(state: State) -> State:
    return {"items": ["plan"], "total": state.get("total", 0) + 1}


def enrich(state: State) -> State:
    return {"items": ["enrich"], "total": state["total"] * 2}


def review(state: State) -> State:
    answer = interrupt({"question": "refund approved?", "total": state["total"]})
    return {"approved": answer == "yes", "items": [f"review:{answer}"]}


def finish(state: State) -> State:
    return {"items": ["done"], "total": state["total"] + 10}


def build(checkpointer: BaseCheckpointSaver[Any]) -> CompiledStateGraph[Any]:
    sub = StateGraph(State)
    sub.add_node("enrich", enrich)
    sub.add_edge(START, "enrich")
    sub.add_edge("enrich", END)
    graph = StateGraph(State)
    graph.add_node("plan", plan)
    graph.add_node("sub", sub.compile())
    graph.add_node("review", review)
    graph.add_node("finish", finish)
    for a, b in [(START, "plan"), ("plan", "sub"), ("sub", "review"), ("review", "finish"), ("finish", END)]:
        graph.add_edge(a, b)
    return graph.compile(checkpointer=checkpointer)


def _state(snapshot: StateSnapshot) -> tuple[Any, ...]:
    interrupts = [i.value for task in snapshot.tasks for i in task.interrupts]
    meta = snapshot.metadata or {}
    return snapshot.values, snapshot.next, meta.get("source"), meta.get("step"), meta.get("actor"), interrupts


def _result(values: dict[str, Any]) -> dict[str, Any]:
    return {k: [i.value for i in v] if k == "__interrupt__" else v for k, v in values.items()}


def _config(thread: str, actor: str | None = None, checkpoint: StateSnapshot | None = None) -> Any:
    conf = dict(checkpoint.config["configurable"]) if checkpoint else {"thread_id": thread}
    return {"configurable": {**conf, **({"actor": actor} if actor else {})}}


def transcript(graph: CompiledStateGraph[Any], thread: str = "refund-1042") -> list[Any]:
    """Interrupt, resume as human:ann, replay, fork, resume the fork as human:bob: every state seen."""
    seen: list[Any] = [_result(graph.invoke({"items": [], "total": 1}, _config(thread)))]
    seen.append(_state(graph.get_state(_config(thread))))
    seen.append(_result(graph.invoke(Command(resume="yes"), _config(thread, "human:ann"))))
    history = list(graph.get_state_history(_config(thread)))
    seen.append([_state(s) for s in history])
    before_finish = next(s for s in history if s.next == ("finish",))
    seen.append(_result(graph.invoke(None, _config(thread, checkpoint=before_finish))))  # replay
    before_review = next(s for s in history if s.next == ("review",))
    forked = graph.update_state(before_review.config, {"items": ["forked"]})
    seen.append(_result(graph.invoke(None, forked)))
    seen.append(_result(graph.invoke(Command(resume="no"), _config(thread, "human:bob"))))
    seen.append([_state(s) for s in graph.get_state_history(_config(thread))])
    return seen


def test_the_same_states_as_sqlite_saver(target: Target, tmp_path: Path) -> None:
    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        ours = transcript(build(saver))
        namespaces = {t.config["configurable"]["checkpoint_ns"] for t in saver.list(None)}
    with sqlite3.connect(tmp_path / "langgraph.db", check_same_thread=False) as conn:
        theirs_saver = SqliteSaver(conn)
        theirs = transcript(build(theirs_saver))
        their_namespaces = {t.config["configurable"]["checkpoint_ns"] for t in theirs_saver.list(None)}
    assert ours == theirs
    assert ours[2] == {
        "items": ["plan", "plan", "enrich", "review:yes", "done"],
        "total": 14,
        "approved": True,
    }
    assert len(namespaces) == len(their_namespaces) == 2  # the root graph's and the subgraph's


def test_async_runs_give_the_same_states(target: Target) -> None:
    async def run(saver: EventStoreSaver) -> list[Any]:
        graph = build(saver)
        config = _config("async-1")
        first = _result(await graph.ainvoke({"items": [], "total": 1}, config))
        resumed = _result(await graph.ainvoke(Command(resume="yes"), _config("async-1", "human:ann")))
        history = [_state(s) async for s in graph.aget_state_history(config)]
        return [first, resumed, history]

    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        result = asyncio.run(run(saver))
        sync = transcript(build(saver), thread="sync-1")
    assert result == [sync[0], sync[2], sync[3]]


def _cli(target: Target, *args: str) -> Any:
    schema = ["--schema", target.options["schema"]] if "schema" in target.options else []
    return CliRunner().invoke(main, ["--url", target.url, *schema, *args])


def test_the_log_verifies_and_shows_who_approved(target: Target) -> None:
    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        transcript(build(saver))
        assert saver.store.verify().ok
    history = _cli(target, "history", flow_id_for("refund-1042"), "--json")
    assert history.exit_code == 0, history.output
    lines = [line for line in history.output.splitlines() if line.startswith("{")]
    approval = [line for line in lines if '"type":"ResumeRecorded"' in line and '"actor":"human:ann"' in line]
    # Who approved, and what they answered. LangGraph saves the resume command's write and the
    # resumed task's (its resume values, a list) from parallel threads: either may come first.
    assert any('"value":"yes"' in line for line in approval)
    assert any('"type":"ResumeRecorded"' in line and '"actor":"human:bob"' in line for line in lines)
    assert any('"type":"InterruptRecorded"' in line and '"actor":"langgraph"' in line for line in lines)
    verify = _cli(target, "verify")
    assert verify.exit_code == 0, verify.output


def ask(state: State) -> State:
    return {"items": [interrupt(state["items"][-1])]}


def asking(checkpointer: BaseCheckpointSaver[Any]) -> CompiledStateGraph[Any]:
    graph = StateGraph(State)
    graph.add_node("ask", ask)
    graph.add_edge(START, "ask")
    graph.add_edge("ask", END)
    return graph.compile(checkpointer=checkpointer)


def test_a_nul_in_a_question_or_answer_is_kept_in_the_blob_only(target: Target) -> None:
    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        graph = asking(saver)
        asked = graph.invoke({"items": ["q \x00"]}, _config("nul"))
        answered = graph.invoke(Command(resume="a \x00"), _config("nul"))
        writes = [w for e in saver.store.read_flow(flow_id_for("nul")) for w in e.data.get("writes", [])]
    assert [i.value for i in asked["__interrupt__"]] == ["q \x00"]
    assert answered == {"items": ["q \x00", "a \x00"]}
    assert not any("value" in w for w in writes)


def subgraphs(checkpointer: BaseCheckpointSaver[Any]) -> CompiledStateGraph[Any]:
    """``plan``, then ``sub`` (a subgraph called afresh each run, asking a person), then ``kept``
    (a ``checkpointer=True`` subgraph, whose state outlives each call)."""
    sub = StateGraph(State)
    sub.add_node("ask", ask)
    sub.add_edge(START, "ask")
    sub.add_edge("ask", END)
    kept = StateGraph(State)
    kept.add_node("finish", finish)
    kept.add_edge(START, "finish")
    kept.add_edge("finish", END)
    graph = StateGraph(State)
    graph.add_node("plan", plan)
    graph.add_node("sub", sub.compile())
    graph.add_node("kept", kept.compile(checkpointer=True))
    for a, b in [(START, "plan"), ("plan", "sub"), ("sub", "kept"), ("kept", END)]:
        graph.add_edge(a, b)
    return graph.compile(checkpointer=checkpointer)


def test_prune_deletes_subgraph_calls_with_their_root_checkpoint(target: Target) -> None:
    """As LangGraph's PostgresSaver: a call goes unless it started from the root's kept checkpoint."""
    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        graph, thread = subgraphs(saver), _config("calls")
        for answer in ("a", "b"):
            graph.invoke({"items": ["q"], "total": 0}, thread)
            graph.invoke(Command(resume=answer), thread)
        graph.invoke({"items": ["q"], "total": 0}, thread)  # waits in the third call
        namespaces = [t.config["configurable"]["checkpoint_ns"] for t in saver.list(thread)]  # newest first
        calls = {ns for ns in namespaces if ns.startswith("sub:")}
        waiting = next(ns for ns in namespaces if ns in calls)
        saver.prune(["calls"], actor="ops:eve")
        left = [t.config["configurable"]["checkpoint_ns"] for t in saver.list(thread)]
        assert sorted(left) == ["", "kept", waiting] and len(calls) == 3
        assert saver.threads().items[0].namespaces == 3
        for ns in calls - {waiting}:
            deleted = list(saver.store.read_flow(flow_id_for("calls", ns)))[-1]
            assert (deleted.type, deleted.data["reason"], deleted.metadata["actor"]) == (
                "ThreadDeleted",
                "prune",
                "ops:eve",
            )
        assert graph.invoke(Command(resume="c"), thread)["items"][-4:] == ["q", "plan", "c", "done"]
        assert saver.store.verify().ok
