"""One human answer is one ANSWERED entry, linked to its question; a task's failure is the runtime's.

LangGraph writes ``Command(resume=...)`` twice: as its null task's input
(``00000000-...``), then as the ``__resume__`` write of the task that asked
(the list of answers its interrupts took). The audit used to list both, and
to put a task that raised in a resumed run under the resuming person.
"""

from __future__ import annotations

import contextlib
from typing import TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from eventstore.audit import FailureEntry, InterruptEntry, audit_trail
from eventstore.integrations.langgraph import EventStoreSaver

from .conftest import Target
from .test_audit_langgraph import cli


class State(TypedDict, total=False):
    amount: int
    note: str


def graph(
    saver: EventStoreSaver, *, asks: int = 1, raises_after_answer: bool = False, pay_raises: bool = False
):  # type: ignore[no-untyped-def]
    def check(state: State) -> State:
        return {"amount": 40}

    def approve(state: State) -> State:
        answers = [interrupt({"question": f"q{n}"}) for n in range(asks)]
        if raises_after_answer:
            raise ValueError("bad answer")
        return {"note": ",".join(answers)}

    def pay(state: State) -> State:
        if pay_raises:
            raise RuntimeError("refund API down")
        return {}

    builder = StateGraph(State)
    for name, node in (("check", check), ("approve", approve), ("pay", pay)):
        builder.add_node(name, node)
    builder.add_edge(START, "check")
    builder.add_edge("check", "approve")
    builder.add_edge("approve", "pay")
    builder.add_edge("pay", END)
    return builder.compile(checkpointer=saver)


def resume(app, answer: str, actor: str) -> None:  # type: ignore[no-untyped-def]
    with contextlib.suppress(RuntimeError, ValueError):  # the graphs that raise do so in this run
        app.invoke(Command(resume=answer), {"configurable": {"thread_id": "tk-1", "actor": actor}})


def trail(target: Target, **scope: str) -> list[tuple[str, str | None, str | None, tuple[object, ...]]]:
    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        entries = list(audit_trail(saver.store, **scope))  # type: ignore[arg-type]
    return [
        (e.type, e.actor, e.task_id, e.values)
        if isinstance(e, InterruptEntry)
        else (e.type, e.actor, None, ())
        for e in entries
    ]


def test_one_answer_is_one_entry_on_the_task_that_asked(target: Target) -> None:
    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        app = graph(saver)
        app.invoke({}, {"configurable": {"thread_id": "tk-1"}})
        resume(app, "yes", "human:ann")
    (asked, answered) = trail(target)
    assert (asked[0], answered[0], answered[1], answered[3]) == (
        "InterruptRecorded",
        "ResumeRecorded",
        "human:ann",
        ("yes",),
    )
    assert asked[2] == answered[2] != "00000000-0000-0000-0000-000000000000"
    shown = cli(target, "audit", "--type", "interrupt")
    assert shown.output.count("ANSWERED") == 1 and "00000000" not in shown.output
    assert shown.output.endswith("2 entries: 1 question, 1 answer\n")
    raw = cli(target, "history", "langgraph/tk-1", "--json").output
    assert raw.count('"type":"ResumeRecorded"') == 2  # both writes stay in the log


def test_a_second_question_after_an_answer_is_its_own_entry(target: Target) -> None:
    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        app = graph(saver, asks=2)
        app.invoke({}, {"configurable": {"thread_id": "tk-1"}})
        resume(app, "a", "human:ann")
        resume(app, "b", "human:bob")
    found = trail(target)
    questions = [values[0][0]["value"] for t, _, _, values in found if t == "InterruptRecorded"]
    assert [(t, actor) for t, actor, *_ in found] == [
        ("InterruptRecorded", "langgraph"),
        ("ResumeRecorded", "human:ann"),
        ("InterruptRecorded", "human:ann"),  # asked again in ann's run, by the same task
        ("ResumeRecorded", "human:bob"),
    ]
    assert questions == [{"question": "q0"}, {"question": "q1"}]
    assert [values for t, _, _, values in found if t == "ResumeRecorded"] == [("a",), ("b",)]
    assert len({task for _, _, task, _ in found}) == 1


def test_a_task_failure_is_the_runtimes_in_a_run_by_the_person(target: Target) -> None:
    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        app = graph(saver, pay_raises=True)
        app.invoke({}, {"configurable": {"thread_id": "tk-1"}})
        resume(app, "yes", "human:zoe")
    assert [t for t, *_ in trail(target, actor="human:zoe")] == ["ResumeRecorded"]
    assert [(t, a) for t, a, *_ in trail(target, actor="langgraph")][-1] == ("TaskFailed", "langgraph")
    shown = cli(target, "audit", "--type", "failure").output
    assert (
        "TASK FAILED langgraph" in shown and "RuntimeError: refund API down (in a run by human:zoe)" in shown
    )
    assert "TASK FAILED" not in cli(target, "audit", "--actor", "human:zoe").output


def test_a_task_that_took_an_answer_then_raised_gives_both_entries(target: Target) -> None:
    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        app = graph(saver, raises_after_answer=True)
        app.invoke({}, {"configurable": {"thread_id": "tk-1"}})
        resume(app, "no", "human:zoe")
    assert [(t, a) for t, a, *_ in trail(target)] == [
        ("InterruptRecorded", "langgraph"),
        ("ResumeRecorded", "human:zoe"),
        ("TaskFailed", "langgraph"),
    ]
    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        (failed,) = audit_trail(saver.store, types=["TaskFailed"])
    assert isinstance(failed, FailureEntry) and failed.details["resumed"] is True
    shown = cli(target, "audit", "--type", "failure", "--limit", "1").output
    assert "ValueError: bad answer (in a run resumed by human:zoe)" in shown


def test_pages_of_a_trail_never_split_the_entries_of_one_event(target: Target) -> None:
    """An answer and the next question share one event: a page ending between them lost the question."""
    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        app = graph(saver, asks=2)
        app.invoke({}, {"configurable": {"thread_id": "tk-1"}})
        resume(app, "a", "human:ann")
        resume(app, "b", "human:bob")
        whole = [(e.position, e.type) for e in audit_trail(saver.store)]
        for limit in (1, 2, 3):
            paged: list[tuple[int, str]] = []
            while page := list(
                audit_trail(saver.store, after_position=(paged or [(0,)])[-1][0], limit=limit)
            ):
                paged += [(e.position, e.type) for e in page]
            assert paged == whole, limit
        assert len(list(audit_trail(saver.store, limit=2))) == 1  # the next event's two would not fit
