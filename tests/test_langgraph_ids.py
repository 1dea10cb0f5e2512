"""Ids with a NUL, which no database text holds: a read or a delete finds nothing, a write is refused.

The same on SQLite and PostgreSQL (whose driver refuses such a parameter
outright), as LangGraph's SqliteSaver answers lookups.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from eventstore import InvalidInput
from eventstore.integrations.langgraph import EventStoreSaver
from tests.conftest import Target
from tests.test_langgraph_saver import put

Call = Callable[[EventStoreSaver, Any], Any]


def conf(**configurable: str) -> Any:
    return {"configurable": {"thread_id": "t", "checkpoint_ns": "", **configurable}}


@pytest.fixture
def saver(target: Target) -> Iterator[EventStoreSaver]:
    with EventStoreSaver.from_url(target.url, **target.options) as made:
        yield made


LOOKUPS: list[tuple[str, Call, Any]] = [
    ("get-thread", lambda s, c: s.get_tuple(conf(thread_id="t\x00")), None),
    ("get-namespace", lambda s, c: s.get_tuple(conf(checkpoint_ns="\x00")), None),
    ("get-checkpoint", lambda s, c: s.get_tuple(conf(checkpoint_id="x\x00")), None),
    ("list-thread", lambda s, c: list(s.list(conf(thread_id="t\x00"))), []),
    ("list-checkpoint", lambda s, c: list(s.list(conf(checkpoint_id="x\x00"))), []),
    ("delete-thread", lambda s, c: s.delete_thread("t\x00"), None),
    ("delete-runs", lambda s, c: s.delete_for_runs(["r\x00"]), None),
    ("prune", lambda s, c: s.prune(["t\x00"]), None),
    ("prune-delete", lambda s, c: s.prune(["t\x00"], strategy="delete"), None),
    ("copy-from", lambda s, c: s.copy_thread("t\x00", "new"), None),
]


@pytest.mark.parametrize(("call", "expected"), [pytest.param(f, e, id=name) for name, f, e in LOOKUPS])
def test_an_id_with_a_nul_finds_nothing(saver: EventStoreSaver, call: Call, expected: Any) -> None:
    config = put(saver, "t", {"a": 1}, {"a": 1}, metadata={"run_id": "r"})
    before = saver.store.last_position()
    assert call(saver, config) == expected
    assert saver.store.last_position() == before
    assert saver.get_tuple(config) is not None


def test_listing_before_an_id_with_a_nul_lists_the_ids_up_to_its_prefix(saver: EventStoreSaver) -> None:
    first = put(saver, "t", {}, {})
    second = put(saver, "t", {}, {}, parent=first)
    put(saver, "t", {}, {}, parent=second)
    bound: Any = {"configurable": {"checkpoint_id": second["configurable"]["checkpoint_id"] + "\x00z"}}
    assert [t.config for t in saver.list(conf(), before=bound)] == [second, first]


WRITES: list[tuple[str, Call, str]] = [
    ("writes-task", lambda s, c: s.put_writes(c, [("a", 2)], "t\x00"), "task_id contains a NUL"),
    ("writes-path", lambda s, c: s.put_writes(c, [("a", 2)], "t", "p\x00"), "task_path contains a NUL"),
    (
        "writes-checkpoint",
        lambda s, c: s.put_writes(conf(checkpoint_id="x\x00"), [("a", 2)], "t"),
        r"\['checkpoint_id'\] contains a NUL",
    ),
    ("put-thread", lambda s, c: put(s, "t\x00", {}, {}), r"\['thread_id'\] contains a NUL"),
    ("copy-to", lambda s, c: s.copy_thread("t", "new\x00"), "target_thread_id contains a NUL"),
]


@pytest.mark.parametrize(("call", "message"), [pytest.param(f, m, id=name) for name, f, m in WRITES])
def test_a_write_naming_an_id_with_a_nul_is_refused(saver: EventStoreSaver, call: Call, message: str) -> None:
    config = put(saver, "t", {"a": 1}, {"a": 1})
    before = saver.store.last_position()
    with pytest.raises(InvalidInput, match=message):
        call(saver, config)
    assert saver.store.last_position() == before
