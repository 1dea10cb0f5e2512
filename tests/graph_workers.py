"""Real StateGraphs run by threads, tasks and ``spawn`` children, for the saver's load and crash tests.

``run_refunds`` is one production worker: it runs the refund graph of
``test_langgraph_graph`` (a subgraph, an ``interrupt()`` answered by a
person) on its own threads, start to end. ``fan_out`` is a graph whose two
tasks run in one step: ``run_until_killed`` runs it in a child until
``fast``'s writes are saved while ``slow`` is still running, tells the
parent, and waits to be SIGKILLed there. Entry points are module-level so
they pickle.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command

from eventstore.integrations.langgraph import EventStoreSaver

from .test_langgraph_graph import build

ASKED = [{"question": "refund approved?", "total": 4}]
DONE = {"items": ["plan", "plan", "enrich", "review:yes", "done"], "total": 14, "approved": True}
"""What the refund graph asks, and its end state once approved (as on LangGraph's InMemorySaver)."""


def config(thread: str, actor: str | None = None) -> Any:
    return {"configurable": {"thread_id": thread, **({"actor": actor} if actor else {})}}


def run_refund(graph: CompiledStateGraph[Any], thread: str) -> tuple[Any, ...]:
    """Start a thread, answer its question as human:ann: what each call gave, the end state, the history."""
    asked = graph.invoke({"items": [], "total": 1}, config(thread))
    done = graph.invoke(Command(resume="yes"), config(thread, "human:ann"))
    history = [s.metadata["step"] for s in graph.get_state_history(config(thread))]
    return [i.value for i in asked["__interrupt__"]], done, graph.get_state(config(thread)).values, history


async def arun_refund(graph: CompiledStateGraph[Any], thread: str) -> tuple[Any, ...]:
    """``run_refund`` through ``ainvoke`` and ``aget_state``, with the last step for the history."""
    asked = await graph.ainvoke({"items": [], "total": 1}, config(thread))
    done = await graph.ainvoke(Command(resume="yes"), config(thread, "human:ann"))
    state = await graph.aget_state(config(thread))
    return [i.value for i in asked["__interrupt__"]], done, state.values, state.metadata["step"]


def run_refunds(url: str, options: dict[str, Any], name: str, threads: int, graphs: int) -> list[Any]:
    """A worker process: one saver, ``threads`` threads each running ``graphs`` threads of its own."""
    with EventStoreSaver.from_url(url, **options) as saver, ThreadPoolExecutor(threads) as pool:
        graph = build(saver)
        runs = [f"{name}-{t}-{g}" for t in range(threads) for g in range(graphs)]
        return list(pool.map(lambda thread: run_refund(graph, thread), runs))


# -- a step of two tasks, killed between them ------------------------------------------------
class Fan(TypedDict, total=False):
    items: Annotated[list[str], operator.add]


def fan_out(
    checkpointer: BaseCheckpointSaver[Any], runs: Path, *, hold: Callable[[], None] | None = None
) -> CompiledStateGraph[Any]:
    """``fast`` and ``slow`` in one step, then ``join``; each run of a node adds a line to ``runs/<node>``.

    With ``hold``, ``slow`` calls it before it returns.
    """

    def ran(node: str) -> None:
        with (runs / node).open("a") as out:
            out.write("ran\n")

    def fast(state: Fan) -> Fan:
        ran("fast")
        return {"items": ["fast"]}

    def slow(state: Fan) -> Fan:
        ran("slow")
        if hold is not None:
            hold()
        return {"items": ["slow"]}

    def join(state: Fan) -> Fan:
        ran("join")
        return {"items": ["join"]}

    builder = StateGraph(Fan)
    for name, node in (("fast", fast), ("slow", slow), ("join", join)):
        builder.add_node(name, node)
    builder.add_edge(START, "fast")
    builder.add_edge(START, "slow")
    builder.add_edge(["fast", "slow"], "join")
    builder.add_edge("join", END)
    return builder.compile(checkpointer=checkpointer)


def _saved(checkpointer: BaseCheckpointSaver[Any], thread: str, write: tuple[str, Any]) -> bool:
    """Whether the thread's latest checkpoint (the running step's) holds this pending ``(channel, value)``.

    By value: the input's checkpoint holds a write to the same channel, from ``__start__``.
    """
    saved = checkpointer.get_tuple(config(thread))
    return saved is not None and any(tuple(pending[1:]) == write for pending in saved.pending_writes or [])


def run_until_killed(url: str, options: dict[str, Any], runs: str, thread: str, tell: Connection) -> None:
    """Run ``fan_out`` until ``fast`` is saved and ``slow`` under way; tell the parent, wait to be killed."""
    saver = EventStoreSaver.from_url(url, **options)
    never = threading.Event()

    def hold() -> None:
        while not _saved(saver, thread, ("items", ["fast"])):
            never.wait(0.01)  # LangGraph's background thread saves fast's writes
        tell.send("ready")
        never.wait()  # killed here

    graph = fan_out(saver, Path(runs), hold=hold)
    graph.invoke({"items": []}, config(thread))
    tell.send("done")  # never reached: the parent kills the child first
