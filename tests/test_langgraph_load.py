"""Real graphs on one store from many threads, tasks and processes, two resumes racing, a kill mid-step.

What a team running LangGraph workers in production does to a checkpointer:
every run must end in the state LangGraph's own savers give, with no
"database is locked" or driver error, the log must verify and the read model
must equal a rebuild of it.
"""

from __future__ import annotations

import asyncio
import operator
import threading
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, interrupt

from eventstore.audit import audit_trail
from eventstore.integrations.langgraph import EventStoreSaver
from projections import rebuild
from projections.langgraph import LangGraphProjection

from . import graph_workers
from .conftest import Target
from .graph_workers import ASKED, DONE, arun_refund, config, fan_out, run_refund
from .kill_workers import kill_during
from .test_langgraph_graph import build
from .test_langgraph_saver import tables
from .workers import BARRIER_TIMEOUT, Children

REFUND = (ASKED, DONE, DONE, [4, 3, 2, 1, 0, -1])
"""A refund thread run start to end: its question, the resume's result, the end state, its history."""


def assert_log_whole(saver: EventStoreSaver) -> None:
    assert saver.store.verify().ok
    inline = tables(saver.store)
    rebuild(saver.store, LangGraphProjection())
    assert tables(saver.store) == inline


@pytest.mark.parametrize("threads, graphs", [(8, 3), pytest.param(16, 20, marks=pytest.mark.slow)])
def test_threads_running_graphs_on_one_store_get_langgraphs_states(
    target: Target, threads: int, graphs: int
) -> None:
    """Half the threads share a saver, half open their own, as separate workers do."""
    with EventStoreSaver.from_url(target.url, **target.options) as shared:
        results: dict[str, Any] = {}

        def worker(n: int) -> None:
            own = None if n % 2 else EventStoreSaver.from_url(target.url, **target.options)
            graph = build(own or shared)
            try:
                for g in range(graphs):
                    results[f"w{n}-{g}"] = run_refund(graph, f"w{n}-{g}")
            finally:
                if own is not None:
                    own.close()

        workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join(BARRIER_TIMEOUT)
        assert results == {f"w{n}-{g}": REFUND for n in range(threads) for g in range(graphs)}
        assert_log_whole(shared)


@pytest.mark.parametrize("tasks", [50, pytest.param(200, marks=pytest.mark.slow)])
def test_tasks_running_graphs_on_one_async_saver_get_langgraphs_states(target: Target, tasks: int) -> None:
    async def main() -> list[Any]:
        async with EventStoreSaver.from_url(target.url, **target.options) as saver:
            graph = build(saver)
            return await asyncio.gather(*(arun_refund(graph, f"task-{n}") for n in range(tasks)))

    assert asyncio.run(main()) == [(ASKED, DONE, DONE, 4)] * tasks
    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        assert_log_whole(saver)


@pytest.mark.parametrize(
    "processes, threads, graphs", [(3, 2, 1), pytest.param(4, 4, 10, marks=pytest.mark.slow)]
)
def test_worker_processes_running_graphs_on_one_store_get_langgraphs_states(
    target: Target, processes: int, threads: int, graphs: int
) -> None:
    """The processes open the store at once, a new one, and run their graphs on threads."""
    with Children(timeout=600.0) as children:
        for p in range(processes):
            children.start(graph_workers.run_refunds, target.url, target.options, f"p{p}", threads, graphs)
        assert children.results() == [[REFUND] * threads * graphs] * processes
    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        assert saver.threads().total == processes * threads * graphs
        assert_log_whole(saver)


# -- two workers resume one thread at once ------------------------------------------------
class Ask(TypedDict, total=False):
    answer: str
    log: Annotated[list[str], operator.add]


def approval(saver: EventStoreSaver, both_resumed: threading.Barrier) -> CompiledStateGraph[Any]:
    """Asks once; resumed, waits until the other resume has read the question too."""

    def ask(state: Ask) -> Ask:
        answer = interrupt("approve?")
        both_resumed.wait(BARRIER_TIMEOUT)
        return {"answer": answer, "log": [answer]}

    builder = StateGraph(Ask)
    builder.add_node("ask", ask)
    builder.add_edge(START, "ask")
    builder.add_edge("ask", END)
    return builder.compile(checkpointer=saver)


def test_two_resumes_of_one_thread_at_once_both_run_and_both_are_logged(target: Target) -> None:
    """As on LangGraph's own savers: no error, each worker gets its run, the thread forks, the last wins."""
    both_resumed = threading.Barrier(2)
    with (
        EventStoreSaver.from_url(target.url, **target.options) as ann_saver,
        EventStoreSaver.from_url(target.url, **target.options) as bob_saver,
    ):
        ann, bob = approval(ann_saver, both_resumed), approval(bob_saver, both_resumed)
        ann.invoke({"log": []}, config("t"))
        got: dict[str, Any] = {}

        def resume(graph: CompiledStateGraph[Any], who: str, answer: str) -> None:
            got[who] = graph.invoke(Command(resume=answer), config("t", who))

        workers = [
            threading.Thread(target=resume, args=(ann, "human:ann", "yes")),
            threading.Thread(target=resume, args=(bob, "human:bob", "no")),
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(BARRIER_TIMEOUT)
        assert got == {
            "human:ann": {"answer": "yes", "log": ["yes"]},
            "human:bob": {"answer": "no", "log": ["no"]},
        }
        assert ann.get_state(config("t")).values in got.values()  # the later checkpoint id wins
        history = list(ann.get_state_history(config("t")))
        ends = {s.values["answer"]: s.parent_config for s in history if "answer" in s.values}
        assert ends.keys() == {"yes", "no"} and ends["yes"] == ends["no"]  # two branches of one checkpoint
        answers = audit_trail(ann_saver.store, types=["ResumeRecorded"])
        assert sorted((a.actor, a.values) for a in answers) == [
            ("human:ann", ("yes",)),
            ("human:bob", ("no",)),
        ]
        assert_log_whole(ann_saver)


# -- a worker killed mid-step -------------------------------------------------------------------
def test_a_graph_killed_mid_step_resumes_in_another_process_as_langgraph_does(
    target: Target, tmp_path: Path
) -> None:
    """Killed after ``fast``'s writes were saved, ``slow`` still running: a resume elsewhere runs ``slow``
    again and not ``fast`` (its saved writes are used), as on LangGraph's own savers."""
    finished = kill_during(
        graph_workers.run_until_killed, (target.url, target.options, str(tmp_path), "t"), 0.0
    )
    assert not finished
    ran = {node: len((tmp_path / node).read_text().splitlines()) for node in ("fast", "slow")}
    assert ran == {"fast": 1, "slow": 1}
    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        graph = fan_out(saver, tmp_path)
        assert graph.invoke(None, config("t")) == {"items": ["fast", "slow", "join"]}
        ran = {node: len((tmp_path / node).read_text().splitlines()) for node in ("fast", "slow", "join")}
        assert ran == {"fast": 1, "slow": 2, "join": 1}
        history = [(s.metadata["step"], s.next, s.values) for s in graph.get_state_history(config("t"))]
        assert [step for step, _, _ in history] == [2, 1, 0, -1], history
        assert_log_whole(saver)
