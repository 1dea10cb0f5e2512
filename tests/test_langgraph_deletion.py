"""A deleted thread stays deleted, and says who deleted it, until a checkpoint or a copy brings it back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from eventstore import NewEvent
from eventstore.integrations.langgraph import EventStoreSaver, flow_id_for
from projections import rebuild
from projections.langgraph import LangGraphProjection
from tests.conftest import Target
from tests.test_langgraph_saver import put, tables

LATEST: Any = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}


@pytest.fixture
def saver(target: Target) -> Iterator[EventStoreSaver]:
    with EventStoreSaver.from_url(target.url, **target.options) as made:
        yield made


def assert_the_read_model_equals_a_rebuild(saver: EventStoreSaver) -> None:
    inline = tables(saver.store)
    rebuild(saver.store, LangGraphProjection())
    assert tables(saver.store) == inline


def test_a_write_after_the_deletion_leaves_the_thread_deleted(saver: EventStoreSaver) -> None:
    """A task of a run still going (durability='async') saves its writes after delete_thread."""
    config = put(saver, "t", {"x": 1}, {"x": 1})
    saver.delete_thread("t", actor="ops:eve")
    (deleted,) = saver.threads(include_deleted=True).items
    saver.put_writes(config, [("x", 2)], "late-task")
    assert saver.threads().items == []
    assert saver.threads(include_deleted=True).items == [deleted]
    assert (deleted.deleted_by, deleted.checkpoints) == ("ops:eve", 0)
    assert saver.get_tuple(LATEST) is None
    assert_the_read_model_equals_a_rebuild(saver)


def test_a_checkpoint_or_a_copy_brings_a_deleted_thread_back(saver: EventStoreSaver) -> None:
    config = put(saver, "t", {"x": 1}, {"x": 1})
    put(saver, "src", {"y": 1}, {"y": 1})
    for bring_back in (
        lambda: put(saver, "t", {"x": 2}, {"x": 2}),
        lambda: saver.copy_thread("src", "t"),
    ):
        saver.delete_thread("t", actor="ops:eve")
        saver.put_writes(config, [("x", 3)], "late-task")
        bring_back()
        (live,) = [t for t in saver.threads().items if t.thread_id == "t"]
        assert (live.checkpoints, live.deleted_at, live.deleted_by) == (1, None, None)
    assert saver.get_tuple(LATEST) is not None
    assert_the_read_model_equals_a_rebuild(saver)


def test_a_write_after_the_deletion_does_not_come_back_with_a_copy(saver: EventStoreSaver) -> None:
    """Restoring a deleted thread from a backup gives the backup's writes, not a late task's."""
    config = put(saver, "t", {"x": 1}, {"x": 1})
    saver.put_writes(config, [("x", "before")], "task-1")
    saver.copy_thread("t", "backup")
    saver.delete_thread("t")
    saver.put_writes(config, [("x", "late")], "task-2")
    assert [e.type for e in saver.store.read_flow(flow_id_for("t"))][-1] == "WritesSaved"  # in the log
    saver.copy_thread("backup", "t")
    restored = saver.get_tuple(LATEST)
    assert restored is not None and restored.pending_writes == [("task-1", "x", "before")]
    assert_the_read_model_equals_a_rebuild(saver)


def test_delete_for_runs_deletes_a_namespace_it_empties(saver: EventStoreSaver) -> None:
    put(saver, "t", {"x": 1}, {"x": 1}, metadata={"run_id": "r1"})
    put(saver, "t", {"x": 2}, {"x": 2}, metadata={"run_id": "r2"})
    put(saver, "t", {"y": 1}, {"y": 1}, configurable={"checkpoint_ns": "sub:1"}, metadata={"run_id": "r1"})
    put(saver, "gone", {"x": 1}, {"x": 1}, metadata={"run_id": "r1"})
    saver.delete_for_runs(["r1"], actor="ops:eve")
    (live,) = saver.threads().items
    assert (live.thread_id, live.namespaces, live.checkpoints) == ("t", 1, 1)
    (gone,) = [t for t in saver.threads(include_deleted=True).items if t.thread_id == "gone"]
    assert gone.deleted_by == "ops:eve"
    saver.copy_thread("t", "copy")
    assert list(saver.store.read_flow(flow_id_for("copy", "sub:1"))) == []
    saver.delete_thread("t")
    assert list(saver.store.read_flow(flow_id_for("t", "sub:1")))[-1].type == "CheckpointsDeleted"
    assert_the_read_model_equals_a_rebuild(saver)


def test_a_namespace_holding_nothing_is_not_copied(saver: EventStoreSaver) -> None:
    """As an older version's delete_for_runs left one: live, without a checkpoint or a write."""
    put(saver, "t", {"x": 1}, {"x": 1})
    empty = {"thread_id": "t", "checkpoint_ns": "sub:1", "checkpoint_id": "1", "task_id": "a", "writes": []}
    saver.store.append(flow_id_for("t", "sub:1"), [NewEvent("WritesSaved", empty)])
    saver.copy_thread("t", "copy")
    assert list(saver.store.read_flow(flow_id_for("copy", "sub:1"))) == []
    assert [t.namespaces for t in saver.threads().items if t.thread_id == "copy"] == [1]
