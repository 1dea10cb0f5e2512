"""EventStoreSaver beyond the conformance suite: what the log holds, deletion, copies, the read model."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.types import INTERRUPT

from eventstore import EventStore, InvalidInput, NewEvent, ProjectionError, RecordedEvent
from eventstore.cli import main
from eventstore.integrations.langgraph import EventStoreSaver, flow_id_for
from projections import Progress, Projection, rebuild
from projections import swap as swapping
from projections.langgraph import LangGraphProjection
from tests import workers
from tests.conftest import Target
from tests.workers import SPAWN, Children


@pytest.fixture
def saver(target: Target) -> Iterator[EventStoreSaver]:
    with EventStoreSaver.from_url(target.url, **target.options) as made:
        yield made


def put(
    saver: BaseCheckpointSaver[Any],
    thread: str,
    values: dict[str, Any],
    versions: dict[str, Any],
    *,
    new: list[str] | None = None,
    parent: dict[str, Any] | None = None,
    configurable: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Any:
    checkpoint = generate_checkpoint(channel_values=values, channel_versions=versions)
    conf = {"thread_id": thread, "checkpoint_ns": "", **(configurable or {})}
    if parent is not None:
        conf["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
    new_versions = {c: versions[c] for c in (versions if new is None else new)}
    return saver.put({"configurable": conf}, checkpoint, {"source": "loop", **(metadata or {})}, new_versions)


def events(saver: EventStoreSaver, thread: str) -> list[RecordedEvent]:
    return list(saver.store.read_flow(flow_id_for(thread)))


def tables(store: EventStore) -> dict[str, list[tuple[Any, ...]]]:
    with store.engine.connect() as conn:
        return {
            name: sorted(tuple(row) for row in conn.execute(sa.select(table)))
            for name, table in LangGraphProjection().tables.items()
        }


def test_unchanged_channels_are_not_written_again(saver: EventStoreSaver) -> None:
    document = {"pages": ["lorem ipsum " * 50] * 20}
    first = put(saver, "t", {"doc": document, "n": 1}, {"doc": 1, "n": 1})
    second = put(saver, "t", {"doc": document, "n": 2}, {"doc": 1, "n": 2}, new=["n"], parent=first)
    saved = [e for e in events(saver, "t") if e.type == "CheckpointSaved"]
    assert [[b["channel"] for b in e.data["blobs"]] for e in saved] == [["doc", "n"], ["n"]]
    assert len(tables(saver.store)["langgraph_blobs"]) == 3
    latest = saver.get_tuple({"configurable": {"thread_id": "t", "checkpoint_ns": ""}})
    assert latest is not None and latest.config == second
    assert latest.checkpoint["channel_values"] == {"doc": document, "n": 2}


def test_pending_writes_follow_langgraph_rules(saver: EventStoreSaver) -> None:
    config = put(saver, "t", {}, {})
    saver.put_writes(config, [("a", 1), ("b", 2)], "task-2", "path/2")
    saver.put_writes(config, [("a", 1), ("b", 2)], "task-2", "path/2")  # stored already: ignored
    saver.put_writes(config, [("c", 3)], "task-1", "path/1")
    saver.put_writes(config, [(INTERRUPT, "first")], "task-1", "path/1")
    saver.put_writes(config, [(INTERRUPT, "second")], "task-1", "path/1")  # special: replaces
    saver.put_writes(config, [(INTERRUPT, "second")], "task-1", "path/1")  # same value: nothing to do
    types = [e.type for e in events(saver, "t")]
    assert types == [
        "CheckpointSaved",
        "WritesSaved",
        "WritesSaved",
        "InterruptRecorded",
        "InterruptRecorded",
    ]
    stored = saver.get_tuple(config)
    assert stored is not None
    assert stored.pending_writes == [  # in LangGraph's order: task path, task id, idx (specials < 0)
        ("task-1", INTERRUPT, "second"),
        ("task-1", "c", 3),
        ("task-2", "a", 1),
        ("task-2", "b", 2),
    ]


def test_the_actor_comes_from_the_config(saver: EventStoreSaver) -> None:
    put(saver, "t", {}, {}, configurable={"actor": "human:ann"})
    put(saver, "t", {}, {}, metadata={"actor": "human:bob"})
    saver.put(
        {"configurable": {"thread_id": "t"}, "metadata": {"actor": "agent:x"}}, generate_checkpoint(), {}, {}
    )
    put(saver, "t", {}, {})
    actors = [e.metadata["actor"] for e in events(saver, "t")]
    assert actors == ["human:ann", "human:bob", "agent:x", "langgraph"]


def test_deleting_a_thread_is_recorded_and_the_log_stays(saver: EventStoreSaver) -> None:
    first = put(saver, "t", {"x": 1}, {"x": 1})
    saver.put_writes(put(saver, "t", {"x": 2}, {"x": 2}, parent=first), [("x", 3)], "task")
    put(saver, "other", {}, {})
    saver.delete_thread("t", actor="ops:eve")
    assert saver.get_tuple({"configurable": {"thread_id": "t", "checkpoint_ns": ""}}) is None
    *kept, deleted = events(saver, "t")
    assert [e.type for e in kept] == ["CheckpointSaved", "CheckpointSaved", "WritesSaved"]
    assert (deleted.type, deleted.metadata["actor"]) == ("ThreadDeleted", "ops:eve")
    assert (deleted.data["checkpoints"], deleted.data["writes"], deleted.data["reason"]) == (
        2,
        1,
        "delete_thread",
    )
    assert {name: len(rows) for name, rows in tables(saver.store).items() if name != "langgraph_threads"} == {
        "langgraph_checkpoints": 1,
        "langgraph_blobs": 0,
        "langgraph_writes": 0,
    }
    assert [t.thread_id for t in saver.threads().items] == ["other"]
    gone = [t for t in saver.threads(include_deleted=True).items if t.thread_id == "t"]
    assert gone[0].deleted_by == "ops:eve" and gone[0].checkpoints == 0
    saver.delete_thread("t")  # nothing left to delete: nothing recorded
    assert len(events(saver, "t")) == 4
    assert saver.store.verify().ok


def test_prune_keeps_the_latest_and_its_values(saver: EventStoreSaver) -> None:
    config = None
    for n in range(1, 4):
        config = put(
            saver, "t", {"x": n, "same": "s"}, {"x": n, "same": 1}, new=["x", "same"][: 2 if n == 1 else 1]
        )
    saver.prune(["t"], strategy="keep_latest", actor="ops:eve")
    assert [t.config for t in saver.list({"configurable": {"thread_id": "t"}})] == [config]
    blobs = tables(saver.store)["langgraph_blobs"]
    assert sorted((row[2], row[3]) for row in blobs) == [("same", "1"), ("x", "3")]
    pruned = events(saver, "t")[-1]
    assert (pruned.type, pruned.data["before"], pruned.data["checkpoints"]) == (
        "CheckpointsDeleted",
        config["configurable"]["checkpoint_id"],
        2,
    )


def test_copy_names_the_source_revision_and_hash(saver: EventStoreSaver) -> None:
    put(saver, "src", {"x": 1}, {"x": 1})
    saver.copy_thread("src", "dst", actor="ops:eve")
    (copied,) = events(saver, "dst")
    head = events(saver, "src")[-1]
    assert copied.type == "ThreadCopied"
    assert (copied.data["source_revision"], copied.data["source_hash"]) == (head.revision, head.hash)
    with pytest.raises(InvalidInput, match="already has checkpoints"):
        saver.copy_thread("src", "dst")


def test_copy_to_a_thread_with_only_pending_writes_says_so(saver: EventStoreSaver) -> None:
    put(saver, "src", {"x": 1}, {"x": 1})
    writes_only = {"configurable": {"thread_id": "dst", "checkpoint_ns": "", "checkpoint_id": "05"}}
    saver.put_writes(writes_only, [("x", 2)], task_id="t1")
    with pytest.raises(InvalidInput, match="already has checkpoints or pending writes"):
        saver.copy_thread("src", "dst")


@pytest.mark.parametrize("version", [1e16, -1e17, float("inf"), float("nan")])
def test_a_float_version_the_log_cannot_keep_as_written_is_refused(
    saver: EventStoreSaver, version: float
) -> None:
    with pytest.raises(InvalidInput, match="version must be a finite float below 1e16"):
        put(saver, "t", {"a": "v"}, {"a": version})
    assert saver.get_tuple({"configurable": {"thread_id": "t", "checkpoint_ns": ""}}) is None


def test_the_read_model_equals_a_rebuild(saver: EventStoreSaver) -> None:
    a1 = put(saver, "a", {"x": 1, "y": "big"}, {"x": 1, "y": 1}, metadata={"run_id": "r1"})
    a2 = put(
        saver, "a", {"x": 2, "y": "big"}, {"x": 2, "y": 1}, new=["x"], parent=a1, metadata={"run_id": "r2"}
    )
    saver.put_writes(a2, [("x", 5), (INTERRUPT, "ask")], "task")
    saver.copy_thread("a", "b")
    put(saver, "a", {"x": 3, "y": "big"}, {"x": 3, "y": 1}, new=["x"], parent=a2, metadata={"run_id": "r3"})
    saver.delete_for_runs(["r1"])
    saver.prune(["b"])
    put(saver, "c", {}, {})
    saver.delete_thread("c")
    inline = tables(saver.store)
    rebuild(saver.store, LangGraphProjection())
    assert tables(saver.store) == inline


def test_listing_pages_filters_and_limits(saver: EventStoreSaver) -> None:
    for n in range(230):
        put(saver, "t", {}, {}, metadata={"step": n, "kind": "even" if n % 2 == 0 else "odd"})
    config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    assert len(list(saver.list(config))) == 230
    odd = list(saver.list(config, filter={"kind": "odd"}, limit=110))
    assert [t.metadata["step"] for t in odd] == list(range(229, 9, -2))


def test_values_json_cannot_hold_are_kept_only_serialised(saver: EventStoreSaver) -> None:
    config = put(saver, "t", {}, {})
    odd = ["nul \x00", {"key \x00": 1}, "lone \ud800"]
    for n, value in enumerate(odd):
        saver.put_writes(config, [(INTERRUPT, value)], f"task-{n}")
    assert [w.get("value") for e in events(saver, "t")[1:] for w in e.data["writes"]] == [None] * 3
    stored = saver.get_tuple(config)  # LangGraph's serde itself cannot keep a lone surrogate
    assert stored is not None and [w[2] for w in stored.pending_writes][:2] == odd[:2]
    checkpoint = {**generate_checkpoint(), "note": "nul \x00"}  # a key outside LangGraph's own
    extra = saver.put({"configurable": {"thread_id": "u"}}, checkpoint, {}, {})
    found = saver.get_tuple(extra)
    assert found is not None and found.checkpoint["note"] == "nul \x00"


FILTERS: list[dict[str, Any]] = [
    {"absent": None},
    {"source": "loop", "absent": None},
    {"user": None},
    {"flag": 1},
    {"flag": 1.0},
    {"off": 0},
    {"one": True},
    {"nested": {"on": 1}},
    {"big": 2**63},
    {"user": "ann \ud800"},
    {"user": "ann \x00"},
    {"user": "ann", "flag": True},
]


def test_filters_give_in_memory_savers_answers(saver: EventStoreSaver) -> None:
    """Python equality, as LangGraph's InMemorySaver and SqliteSaver: None matches a missing key, 1 True."""
    reference = InMemorySaver()
    metadata = {"user": "ann", "flag": True, "off": False, "one": 1, "nested": {"on": True}, "big": 2**63}
    for each in (saver, reference):
        put(each, "t", {}, {}, metadata=metadata)
        put(each, "t", {}, {}, metadata={"user": "bob"})
    config = {"configurable": {"thread_id": "t"}}
    counts = [len(list(saver.list(config, filter=f))) for f in FILTERS]
    assert counts == [len(list(reference.list(config, filter=f))) for f in FILTERS]
    assert counts == [2, 2, 0, 1, 1, 1, 1, 1, 1, 0, 0, 1]


def test_keep_latest_refuses_delta_channel_threads(saver: EventStoreSaver) -> None:
    put(saver, "t", {}, {}, metadata={"counters_since_delta_snapshot": {"messages": [1, 1]}})
    put(saver, "t", {}, {})
    with pytest.raises(InvalidInput, match="DeltaChannel: t"):
        saver.prune(["t"])
    with pytest.raises(InvalidInput, match="unknown prune strategy"):
        saver.prune(["t"], strategy="everything")


Call = Callable[[EventStoreSaver, Any], Any]
T1 = {"configurable": {"thread_id": "t1", "checkpoint_ns": ""}}


class Opaque:
    """A value LangGraph's serde cannot serialise."""


BAD_CALLS: list[tuple[str, Call, str]] = [
    ("copy-to-none", lambda s, c: s.copy_thread("t1", None), "target_thread_id must be a non-empty string"),
    ("copy-to-empty", lambda s, c: s.copy_thread("t1", ""), "target_thread_id must be a non-empty string"),
    ("prune-none-id", lambda s, c: s.prune([None]), "each of thread_ids must be a non-empty string"),
    ("prune-none", lambda s, c: s.prune(None), "thread_ids must be a list of ids"),
    ("prune-int", lambda s, c: s.prune(5), "thread_ids must be a list of ids"),
    ("delete-none", lambda s, c: s.delete_thread(None), "thread_id must be a non-empty string"),
    ("delete-bad-actor", lambda s, c: s.delete_thread("t1", actor=5), "actor must be a non-empty string"),
    ("runs-int", lambda s, c: s.delete_for_runs(5), "run_ids must be a list of ids"),
    ("runs-none", lambda s, c: s.delete_for_runs(None), "run_ids must be a list of ids"),
    ("get-none", lambda s, c: s.get_tuple(None), "config must be a dict"),
    ("get-str", lambda s, c: s.get_tuple("t1"), "config must be a dict"),
    ("get-conf-list", lambda s, c: s.get_tuple({"configurable": [1]}), r"config\['configurable'\] must be"),
    ("get-surrogate", lambda s, c: s.get_tuple({"configurable": {"thread_id": "\ud800"}}), "lone surrogate"),
    ("list-str", lambda s, c: list(s.list("t1")), "config must be a dict"),
    ("list-limit-str", lambda s, c: list(s.list(T1, limit="2")), "limit must be None or an int >= 0"),
    ("list-limit-float", lambda s, c: list(s.list(T1, limit=1.5)), "limit must be None or an int >= 0"),
    ("list-limit-negative", lambda s, c: list(s.list(T1, limit=-1)), "limit must be None or an int >= 0"),
    ("list-filter-list", lambda s, c: list(s.list(T1, filter=[1])), "filter must be a dict"),
    ("list-filter-str", lambda s, c: list(s.list(T1, filter="source")), "filter must be a dict"),
    ("list-before-str", lambda s, c: list(s.list(T1, before="x")), "before must be a dict"),
    ("put-none", lambda s, c: s.put(T1, None, {}, {}), "checkpoint must be a LangGraph checkpoint"),
    ("put-empty", lambda s, c: s.put(T1, {}, {}, {}), "checkpoint must be a LangGraph checkpoint"),
    ("put-metadata-none", lambda s, c: s.put(T1, generate_checkpoint(), None, {}), "metadata must be a dict"),
    ("put-versions-none", lambda s, c: s.put(T1, generate_checkpoint(), {}, None), "new_versions must be"),
    ("put-versions-list", lambda s, c: s.put(T1, generate_checkpoint(), {}, [1]), "new_versions must be"),
    (
        "writes-task-surrogate",
        lambda s, c: s.put_writes(c, [("c", 1)], "\ud800"),
        "task_id is not valid Unicode",
    ),
    ("writes-none", lambda s, c: s.put_writes(c, None, "t"), "writes must be a list of"),
    ("writes-int", lambda s, c: s.put_writes(c, [1], "t"), r"writes must be \(channel, value\) pairs"),
    ("writes-short", lambda s, c: s.put_writes(c, [("c",)], "t"), r"writes must be \(channel, value\) pairs"),
    ("next-version", lambda s, c: s.get_next_version("abc", None), "a channel version must be"),
    (
        "put-value-serde",
        lambda s, c: put(s, "t1", {"a": Opaque()}, {"a": 2}, parent=c),
        "channel 'a' cannot be serialised by the saver's serde: TypeError: Type is not msgpack serializable",
    ),
    (
        "put-extra-serde",
        lambda s, c: s.put(T1, {**generate_checkpoint(), "odd": Opaque()}, {}, {}),
        "the checkpoint cannot be serialised by the saver's serde: TypeError",
    ),
    (
        "writes-value-serde",
        lambda s, c: s.put_writes(c, [("c", Opaque())], "t"),
        "write to channel 'c' cannot be serialised by the saver's serde: TypeError",
    ),
    ("flow-id-none", lambda s, c: flow_id_for(None), "thread_id and checkpoint_ns must be strings"),
]


@pytest.mark.parametrize(("call", "message"), [pytest.param(f, m, id=name) for name, f, m in BAD_CALLS])
def test_bad_input_is_refused_and_writes_nothing(saver: EventStoreSaver, call: Call, message: str) -> None:
    config = put(saver, "t1", {"a": 1}, {"a": 1})
    before = saver.store.last_position()
    with pytest.raises(InvalidInput, match=message):
        call(saver, config)
    assert saver.store.last_position() == before
    assert [t.thread_id for t in saver.threads(include_deleted=True).items] == ["t1"]


@pytest.mark.parametrize(
    ("options", "message"),
    [({"bogus": 1}, "unknown option 'bogus'"), ({"projections": 5}, "projections must be a list")],
)
def test_from_url_refuses_bad_options(
    saver: EventStoreSaver, target: Target, options: dict[str, Any], message: str
) -> None:
    before = saver.store.last_position()
    with pytest.raises(InvalidInput, match=message):
        EventStoreSaver.from_url(target.url, **target.options, **options)
    assert saver.store.last_position() == before


def test_async_calls_refuse_bad_input_too(saver: EventStoreSaver) -> None:
    async def calls() -> None:
        with pytest.raises(InvalidInput, match="thread_id must be a non-empty string"):
            await saver.adelete_thread(None)
        with pytest.raises(InvalidInput, match="limit must be None or an int >= 0"):
            [t async for t in saver.alist(T1, limit=-1)]

    asyncio.run(calls())


def test_int_thread_ids_in_a_config_are_read_as_text(saver: EventStoreSaver) -> None:
    """As LangGraph's own savers do: graphs often carry ``thread_id=7``."""
    put(saver, "7", {"a": 1}, {"a": 1})
    found = saver.get_tuple({"configurable": {"thread_id": 7}})
    assert found is not None and found.checkpoint["channel_values"] == {"a": 1}


def test_a_store_without_the_read_model_is_refused(target: Target) -> None:
    with target.open() as store, pytest.raises(ProjectionError, match="LangGraphProjection"):
        EventStoreSaver(store)


def test_threads_command_lists_threads(saver: EventStoreSaver, target: Target) -> None:
    put(saver, "refund-1042", {}, {}, configurable={"actor": "human:ann"})
    schema = ["--schema", target.options["schema"]] if "schema" in target.options else []
    result = CliRunner().invoke(main, ["--url", target.url, *schema, "threads"])
    assert result.exit_code == 0, result.output
    assert "refund-1042" in result.output and "human:ann" in result.output
    assert "langgraph/refund-1042" in result.output
    as_json = CliRunner().invoke(main, ["--url", target.url, *schema, "threads", "--json"])
    assert '"thread_id":"refund-1042"' in as_json.output and '"checkpoints":1' in as_json.output


def test_flow_ids_are_readable_and_unambiguous() -> None:
    assert flow_id_for("refund-1042") == "langgraph/refund-1042"
    assert flow_id_for("a/b", "sub:1") == "langgraph/a%2Fb/sub:1"
    assert flow_id_for("a", "b/sub:1") == "langgraph/a/b%2Fsub:1"
    assert flow_id_for("x" * 300).startswith("langgraph#") and len(flow_id_for("x" * 300)) == 74


def test_adding_the_saver_to_a_store_with_history_folds_only_graph_events(target: Target) -> None:
    with target.open() as store:
        store.append("flow-1", [NewEvent("FlowStarted", {"goal": "g"})])
    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        put(saver, "t", {"x": 1}, {"x": 1})
    with EventStoreSaver.from_url(target.url, **target.options) as saver:  # reopened: nothing rebuilt
        assert [t.thread_id for t in saver.threads().items] == ["t"]
        inline = tables(saver.store)
        rebuild(saver.store, LangGraphProjection())
        assert tables(saver.store) == inline


def test_concurrent_saves_to_one_thread_all_land(target: Target) -> None:
    """Parallel tasks' writes, from two savers (two processes' worth), each retried or queued, none lost."""
    with (
        EventStoreSaver.from_url(target.url, **target.options) as one,
        EventStoreSaver.from_url(target.url, **target.options) as two,
    ):
        config = put(one, "t", {}, {})

        async def save_all() -> None:
            await asyncio.gather(
                *(
                    saver.aput_writes(config, [("result", n)], f"task-{n:02}")
                    for n in range(20)
                    for saver in [(one, two)[n % 2]]
                )
            )

        asyncio.run(save_all())
        stored = one.get_tuple(config)
        assert stored is not None and stored.pending_writes is not None
        assert sorted(w[2] for w in stored.pending_writes) == list(range(20))
        assert len(events(one, "t")) == 21 and one.store.verify().ok


def test_processes_saving_writes_to_one_checkpoint_all_land(target: Target) -> None:
    """Savers in several processes race for the thread's next revision; each lost race waits and retries."""
    processes, writes = 8, 15
    start = SPAWN.Barrier(processes)
    with EventStoreSaver.from_url(target.url, **target.options) as saver, Children() as children:
        config = put(saver, "t", {}, {})
        for p in range(processes):
            children.start(
                workers.put_writes_to_one_checkpoint,
                target.url,
                target.options,
                f"p{p}",
                config,
                start,
                writes,
            )
        assert children.results() == [writes] * processes
        stored = saver.get_tuple(config)
        assert stored is not None and stored.pending_writes is not None
        expected = {f"p{p}-{n}" for p in range(processes) for n in range(writes)}
        assert sorted(w[2] for w in stored.pending_writes) == sorted(expected)
        assert len(events(saver, "t")) == 1 + processes * writes and saver.store.verify().ok


@contextmanager
def sending(store: EventStore, seen: Callable[[int, str], None]) -> Iterator[None]:
    """Meanwhile ``seen(backend_pid, statement)`` is called as the driver's cursors send each statement
    (psycopg only: SQLite has no round trips)."""
    import psycopg

    class Recording(psycopg.Cursor[Any]):
        def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
            seen(self.connection.info.backend_pid, str(query))
            return super().execute(query, *args, **kwargs)

    def record(dbapi_connection: Any, *args: Any) -> None:
        dbapi_connection.cursor_factory = Recording

    def restore(dbapi_connection: Any, *args: Any) -> None:
        dbapi_connection.cursor_factory = psycopg.Cursor

    sa.event.listen(store.engine, "checkout", record)
    sa.event.listen(store.engine, "checkin", restore)
    try:
        yield
    finally:
        sa.event.remove(store.engine, "checkout", record)
        sa.event.remove(store.engine, "checkin", restore)


def statements_during(store: EventStore, action: Any) -> list[str]:
    """What the driver's cursors executed during ``action``."""
    seen: list[str] = []
    with sending(store, lambda pid, statement: seen.append(statement)):
        action()
    return seen


def test_a_put_is_one_statement_on_postgresql(pg_target: Target) -> None:
    """With the thread's head cached, the event and its read-model rows go in one autocommit statement."""
    with EventStoreSaver.from_url(pg_target.url, **pg_target.options) as saver:
        first = put(saver, "t", {"doc": "d", "n": 1}, {"doc": 1, "n": 1})
        sent = statements_during(saver.store, lambda: put(saver, "t", {"n": 2}, {"n": 2}, parent=first))
        assert len(sent) == 1 and "langgraph_checkpoints" in sent[0] and "flow_events" in sent[0]
        latest = saver.get_tuple({"configurable": {"thread_id": "t", "checkpoint_ns": ""}})
        assert latest is not None and latest.checkpoint["channel_values"] == {"n": 2}
        assert [e.position for e in events(saver, "t")] == [1, 2]


def test_a_fused_put_after_a_newer_versions_swap_writes_nothing(pg_target: Target) -> None:
    """The fused statement only writes at the read models' generation its store last checked: after
    a newer version's swap it writes nothing, and the ordinary path refuses the older fold."""

    class Newer(LangGraphProjection):
        version = LangGraphProjection.version + 1

    with EventStoreSaver.from_url(pg_target.url, **pg_target.options) as old:
        first = put(old, "t", {"n": 1}, {"n": 1})
        second = put(old, "t", {"n": 2}, {"n": 2}, parent=first)
        with EventStore.open(pg_target.url, projections=[Newer()], **pg_target.options):
            pass  # rebuilds and swaps the tables in
        sent: list[str] = []
        with (
            sending(old.store, lambda _pid, statement: sent.append(statement)),
            pytest.raises(
                ProjectionError, match=f"rebuilt by version {Newer.version} while this process folds"
            ),
        ):
            put(old, "t", {"n": 3}, {"n": 3}, parent=second)
        assert any("appended AS" in statement for statement in sent)  # tried fused first
        assert [e.revision for e in events(old, "t")] == [1, 2]
    with EventStore.open(pg_target.url, projections=[Newer()], **pg_target.options) as store:
        latest = EventStoreSaver(store).get_tuple({"configurable": {"thread_id": "t", "checkpoint_ns": ""}})
        assert latest is not None and latest.checkpoint["channel_values"] == {"n": 2}


def test_a_stale_head_falls_back_and_loses_nothing(target: Target) -> None:
    """Two savers (two processes' head caches) taking turns on one thread: each fused guard that
    finds the head moved writes nothing, and the put is made again the ordinary way."""
    with (
        EventStoreSaver.from_url(target.url, **target.options) as one,
        EventStoreSaver.from_url(target.url, **target.options) as two,
    ):
        config = put(one, "t", {"n": 0}, {"n": 0})
        for n in range(1, 9):
            config = put((one, two)[n % 2], "t", {"n": n}, {"n": n}, parent=config)
        saved = [e for e in events(one, "t") if e.type == "CheckpointSaved"]
        assert [e.revision for e in saved] == list(range(1, 10))
        listed = list(one.list({"configurable": {"thread_id": "t"}}))
        assert [t.checkpoint["channel_values"]["n"] for t in listed] == list(range(8, -1, -1))
        inline = tables(one.store)
        rebuild(one.store, LangGraphProjection())
        assert tables(one.store) == inline
        assert one.store.verify().ok


class Saves(Projection):
    """A user's inline projection with a handler for checkpoints: it cannot fuse."""

    name = "test_saves"
    kind = "inline"

    def define_tables(self, metadata: sa.MetaData) -> None:
        sa.Table("test_saves", metadata, sa.Column("position", sa.BigInteger, primary_key=True))

    def on_CheckpointSaved(self, tx: Any, event: RecordedEvent) -> None:
        tx.connection.execute(self.table("test_saves").insert().values(position=event.position))


def test_a_projection_that_cannot_fuse_still_sees_every_put(target: Target) -> None:
    store = target.open(create=True, projections=[LangGraphProjection(), Saves()])
    with EventStoreSaver(store) as saver:
        config = put(saver, "t", {"n": 0}, {"n": 0})
        put(saver, "t", {"n": 1}, {"n": 1}, parent=config)
        with store.engine.connect() as conn:
            kept = conn.execute(sa.select(Saves().table("test_saves").c.position)).scalars().all()
        assert sorted(kept) == [e.position for e in events(saver, "t")]
    store.close()


REBUILDS, PUTS = 4, 10


def test_rebuilds_while_threads_put_lose_nothing(target: Target) -> None:
    """Each rebuild, mid-way, lets three threads put a round of checkpoints: they land before, and
    race, its swap. The swap takes the positions row, then the live tables; a fused put takes them
    the other way. A deadlock between them costs a retry (the put falls back, the swap folds its
    tail again), never an error for either, and the read model still equals the log."""
    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        parents = [put(saver, f"r{n}", {"n": 0}, {"n": 1}) for n in range(3)]  # the log has events
        made = [1, 1, 1]  # the puts each thread has made
        landed = threading.Condition()
        rounds = [threading.Semaphore(0) for _ in parents]
        failures: list[Exception] = []

        def writer(number: int) -> None:
            try:
                for _ in range(REBUILDS):
                    assert rounds[number].acquire(timeout=60)
                    for _ in range(PUTS):
                        n = made[number]
                        parents[number] = put(
                            saver, f"r{number}", {"n": n}, {"n": n + 1}, parent=parents[number]
                        )
                        with landed:
                            made[number] += 1
                            landed.notify_all()
            except BaseException as exc:
                with landed:
                    failures.append(exc)
                    landed.notify_all()

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        overlaps: list[tuple[int, int]] = []
        try:
            for _ in range(REBUILDS):
                reports: list[int] = []

                def midway(progress: Progress, reports: list[int] = reports) -> None:
                    if reports:
                        return  # the first report only: the last one comes after the swap
                    with landed:
                        reports.append(sum(made))
                        for gate in rounds:
                            gate.release()
                        landed.wait_for(lambda: sum(made) > reports[0] or bool(failures), timeout=30)
                        reports.append(sum(made))

                rebuild(saver.store, LangGraphProjection(), progress=midway)
                overlaps.append((reports[0], reports[1]))
        finally:
            for gate in rounds:
                gate.release(REBUILDS)  # if a rebuild failed, the writers still end
            for thread in threads:
                thread.join()
        assert failures == []
        assert len(overlaps) == REBUILDS and all(after > before for before, after in overlaps)
        inline = tables(saver.store)
        assert len(inline["langgraph_checkpoints"]) == sum(made) == 3 * (1 + REBUILDS * PUTS)
        for number in range(3):
            latest = saver.get_tuple({"configurable": {"thread_id": f"r{number}", "checkpoint_ns": ""}})
            assert latest is not None and latest.checkpoint["channel_values"] == {"n": REBUILDS * PUTS}
        rebuild(saver.store, LangGraphProjection())
        assert tables(saver.store) == inline


@contextmanager
def pg_scene(
    pg_target: Target, *, settings: str = "", **options: Any
) -> Iterator[tuple[EventStoreSaver, Any, Any]]:
    """A saver; an autocommit connection that watches the server (locks, deadlocks); and a session
    of the test's own on the saver's schema, standing in for a swap or a reader (``settings``:
    more ``-c name=value``)."""
    import psycopg

    url, schema = pg_target.url.replace("+psycopg", ""), pg_target.options["schema"]
    with (
        EventStoreSaver.from_url(pg_target.url, **{**pg_target.options, **options}) as saver,
        psycopg.connect(url, autocommit=True) as watch,
        psycopg.connect(url, options=f"-c search_path={schema} {settings}".strip()) as session,
    ):
        yield saver, watch, session


def deadlocks(watch: Any) -> int:
    """How many deadlocks PostgreSQL has reported in this database."""
    query = "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    return int(watch.execute(query).fetchone()[0])


def wait_until_blocked(watch: Any, pid: int, by: int) -> None:
    """Until backend ``pid`` waits for a lock that backend ``by`` holds. PostgreSQL has no event
    to wait on for that: ask it, for at most 10 seconds (the statement is already sent)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        (blockers,) = watch.execute("SELECT pg_blocking_pids(%s)", [pid]).fetchone()
        if by in blockers:
            return
    pytest.fail(f"backend {pid} never waited for a lock of backend {by}")


def test_a_fused_put_that_meets_a_swap_gives_way_and_falls_back(pg_alone_target: Target) -> None:
    """The order a rebuild's swap takes locks in (the positions row, then the live tables for
    DROP), against a fused put that has locked the tables and waits for the row: the put gives
    up its wait (its statement's short lock_timeout) before any deadlock check, then takes the
    ordinary path once the swap is done, and loses nothing."""
    with pg_scene(pg_alone_target) as (saver, watch, swap):
        first = put(saver, "t", {"n": 0}, {"n": 0})  # caches the thread's head: the next put fuses
        before = deadlocks(watch)
        swap.execute("SELECT last_position FROM event_positions WHERE id = 1 FOR UPDATE")
        sent: list[str] = []
        fused: list[int] = []  # the backend that runs the fused statement
        fusing = threading.Event()

        def seen(pid: int, statement: str) -> None:
            sent.append(statement)
            if "appended AS" in statement:
                fused.append(pid)
                fusing.set()

        done: list[Any] = []
        putting = threading.Thread(
            target=lambda: done.append(put(saver, "t", {"n": 1}, {"n": 1}, parent=first))
        )
        with sending(saver.store, seen):
            putting.start()
            assert fusing.wait(timeout=10)
            wait_until_blocked(watch, fused[0], swap.info.backend_pid)  # it holds the tables' locks
            swap.execute("LOCK TABLE langgraph_checkpoints IN ACCESS EXCLUSIVE MODE")  # the deadlock
            swap.commit()
            putting.join()
        assert len(done) == 1
        appends = [statement for statement in sent if "INSERT INTO flow_events" in statement]
        assert ["appended AS" in statement for statement in appends] == [True, False]  # then the fallback
        assert deadlocks(watch) == before  # it gave way: no deadlock had to be broken
        latest = saver.get_tuple({"configurable": {"thread_id": "t", "checkpoint_ns": ""}})
        assert latest is not None and latest.checkpoint["channel_values"] == {"n": 1}
        inline = tables(saver.store)
        rebuild(saver.store, LangGraphProjection())
        assert tables(saver.store) == inline


@pytest.mark.parametrize(
    ("settings", "fused"),
    [
        ("-c lock_timeout=10s", "200"),
        ("-c lock_timeout=50ms", "50"),
        ("-c lock_timeout=0", "200"),
        ("-c lock_timeout=1.5ms", "2"),
        ("-c lock_timeout=10s -c deadlock_timeout=300ms", "150"),
    ],
)
def test_a_fused_put_waits_for_the_positions_row_no_longer_than_the_store_would(
    pg_target: Target, settings: str, fused: str
) -> None:
    """The fused statement's own lock_timeout (what its guard sets) is 200 ms, or the store's
    lock_timeout where that is shorter (0 is PostgreSQL's "no limit", never a shorter one), and
    under half the server's deadlock_timeout: it must give way before any deadlock check."""
    import psycopg

    from eventstore.backends.postgresql import _FUSED_LOCK_WAIT

    with psycopg.connect(pg_target.url.replace("+psycopg", ""), options=settings) as conn:
        assert conn.execute(f"SELECT {_FUSED_LOCK_WAIT}").fetchone() == (fused,)


def test_the_swap_outlasts_fused_puts_queued_on_the_positions_row(pg_alone_target: Target) -> None:
    """Two fused puts have locked the read model's tables and wait for the positions row, which
    the swap holds; the swap then locks those tables for its DROP. PostgreSQL would break the
    cycle by aborting whoever's wait reached deadlock_timeout first, and with two puts queued that
    was the swap, every time. The fused puts give way first (their statement's lock_timeout), then
    land as ordinary transactions after the swap: no deadlock at all."""
    import psycopg

    from projections import base

    url = pg_alone_target.url.replace("+psycopg", "")
    with (
        EventStoreSaver.from_url(pg_alone_target.url, **pg_alone_target.options) as one,
        EventStoreSaver.from_url(pg_alone_target.url, **pg_alone_target.options) as two,
        psycopg.connect(url, autocommit=True) as watch,
    ):
        savers = {"a": one, "b": two}
        heads = {thread: put(saver, thread, {"n": 0}, {"n": 0}) for thread, saver in savers.items()}
        before = deadlocks(watch)
        fused: list[int] = []  # the backends running the fused statements
        appends: list[bool] = []  # each append sent: fused or not
        done: list[Any] = []

        def seen(pid: int, statement: str) -> None:
            if "appended AS" in statement:
                fused.append(pid)
            if "INSERT INTO flow_events" in statement:
                appends.append("appended AS" in statement)

        with one.store.transaction() as tx, sending(one.store, seen), sending(two.store, seen):
            conn = tx.connection
            base.lock_appends(conn)  # what the swap holds first
            me = conn.connection.dbapi_connection.info.backend_pid
            putting = [
                threading.Thread(
                    target=lambda t=thread, s=saver: done.append(
                        put(s, t, {"n": 1}, {"n": 1}, parent=heads[t])
                    )
                )
                for thread, saver in savers.items()
            ]
            for thread in putting:
                thread.start()
            queued = _until(lambda: fused if len(fused) == 2 else None)

            def waiting(pid: int) -> bool:  # for the swap's row, or behind the other put for it
                (blockers,) = watch.execute("SELECT pg_blocking_pids(%s)", [pid]).fetchone()
                return bool(set(blockers) & {me, *queued})

            _until(lambda: all(waiting(pid) for pid in queued))  # both hold the tables' locks by now
            live = ", ".join(f'"{table.name}"' for table in LangGraphProjection().tables.values())
            conn.exec_driver_sql(f"LOCK TABLE {live} IN ACCESS EXCLUSIVE MODE")  # the swap's next step
        for thread in putting:
            thread.join()
        assert len(done) == 2  # both puts landed
        assert sorted(appends) == [False, False, True, True]  # each fused, then again the ordinary way
        assert deadlocks(watch) == before  # the puts gave way before any deadlock check ran
        for thread in savers:
            latest = one.get_tuple({"configurable": {"thread_id": thread, "checkpoint_ns": ""}})
            assert latest is not None and latest.checkpoint["channel_values"] == {"n": 1}


@pytest.mark.parametrize("held", sorted(LangGraphProjection().tables))
def test_a_fused_put_planned_during_the_swap_waits_for_it_without_a_deadlock(
    pg_alone_target: Target, held: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real swap, held up at one live table by a reader of it, while a fused put is planned:
    had the swap dropped the tables one by one, or the put named them in another order, the put
    could hold a table the swap had yet to take and wait for one it held, a deadlock PostgreSQL
    breaks after a second by aborting one of them. The swap locks them all first, in the order a
    fused statement names them, so the put just waits. The swap changed the read models'
    generation meanwhile, so the fused statement then writes nothing and the put lands the
    ordinary way, in the new tables."""
    # the swap lets go of a table held longer than LOCK_WAIT and tries again later: here it must
    # still be waiting at the held table when the put is planned, however slow the machine
    monkeypatch.setattr(swapping, "LOCK_WAIT", 30.0)
    with pg_scene(pg_alone_target) as (saver, watch, reader):
        first = put(saver, "t", {"n": 0}, {"n": 0})  # caches the thread's head: the next put fuses
        put(saver, "u", {"n": 0}, {"n": 0})
        before = deadlocks(watch)
        reader.execute(f"SELECT 1 FROM {held} LIMIT 0")  # holds it (ACCESS SHARE) until commit
        sent: list[str] = []
        fused: list[int] = []  # the backend that runs the fused statement

        def seen(pid: int, statement: str) -> None:
            sent.append(statement)
            if "appended AS" in statement:
                fused.append(pid)

        done: list[Any] = []
        rebuilt: list[Progress] = []
        rebuilding = threading.Thread(
            target=lambda: rebuilt.append(rebuild(saver.store, LangGraphProjection()))
        )
        putting = threading.Thread(
            target=lambda: done.append(put(saver, "t", {"n": 1}, {"n": 1}, parent=first))
        )
        waiting_swap = (
            "SELECT pid FROM pg_locks WHERE NOT granted AND mode = 'AccessExclusiveLock'"
            " AND relation = to_regclass(%s)"
        )
        with sending(saver.store, seen):
            rebuilding.start()
            swap = _until(
                lambda: watch.execute(
                    waiting_swap, [f"{pg_alone_target.options['schema']}.{held}"]
                ).fetchone()
            )[0]
            putting.start()
            _until(lambda: fused)
            wait_until_blocked(watch, fused[0], swap)  # planned while the swap is between its tables
            reader.commit()
            rebuilding.join()
            putting.join()
        assert len(done) == 1 and len(rebuilt) == 1  # both came through
        appends = [statement for statement in sent if "INSERT INTO flow_events" in statement]
        assert ["appended AS" in statement for statement in appends] == [True, False]  # fenced
        live = {f"DROP TABLE IF EXISTS {name}" for name in LangGraphProjection().tables}
        drops = [statement for statement in sent if statement.strip() in live]
        assert len(drops) == len(live)  # the swap ran once: no retry
        assert deadlocks(watch) == before
        latest = saver.get_tuple({"configurable": {"thread_id": "t", "checkpoint_ns": ""}})
        assert latest is not None and latest.checkpoint["channel_values"] == {"n": 1}
        inline = tables(saver.store)
        rebuild(saver.store, LangGraphProjection())
        assert tables(saver.store) == inline


def test_put_writes_waits_for_the_positions_row_holding_no_table(pg_target: Target) -> None:
    """put_writes reads the stored writes before it appends. Were the read done before its wait
    for the positions row, it would hold the writes table while a swap (the row, then the tables)
    waits for it: a deadlock, whose victim is a failed put_writes or a stalled swap. It takes the
    row first, like every write that reads the read model."""
    with pg_scene(pg_target, settings="-c lock_timeout=5s") as (saver, watch, swap):
        first = put(saver, "t", {"n": 0}, {"n": 0})
        before = deadlocks(watch)
        swap.execute("SELECT last_position FROM event_positions WHERE id = 1 FOR UPDATE")
        sent: list[int] = []  # the backend put_writes runs on
        done: list[Any] = []
        writing = threading.Thread(target=lambda: done.append(saver.put_writes(first, [("a", 1)], "task-1")))
        with sending(saver.store, lambda pid, statement: sent.append(pid)):
            writing.start()
            _until(lambda: sent)
            wait_until_blocked(watch, sent[-1], swap.info.backend_pid)
            live = ", ".join(f'"{table.name}"' for table in LangGraphProjection().tables.values())
            swap.execute(f"LOCK TABLE {live} IN ACCESS EXCLUSIVE MODE")  # the swap's next step
            swap.commit()
            writing.join(timeout=30)
        assert done == [None] and deadlocks(watch) == before
        stored = saver.get_tuple(first)
        assert stored is not None and stored.pending_writes == [("task-1", "a", 1)]


def test_a_swap_whose_lock_wait_runs_out_is_tried_again(pg_target: Target) -> None:
    """A read transaction holds a live table past the store's lock_timeout: the swap's wait for
    it runs out (StoreBusy), and the rebuild tries the swap again rather than fail after all its
    work; once the reader is done, the swap goes through."""
    with pg_scene(pg_target, lock_timeout=0.3) as (saver, watch, reader):
        put(saver, "t", {"n": 0}, {"n": 0})
        inline = tables(saver.store)
        reader.execute("SELECT 1 FROM langgraph_threads LIMIT 0")  # holds it until commit
        waiting = (
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND mode = 'AccessExclusiveLock'"
            " AND relation = to_regclass(%s)"
        )
        outcome: list[Any] = []

        def rebuilding() -> None:
            try:
                outcome.append(rebuild(saver.store, LangGraphProjection()))
            except Exception as exc:  # reported below
                outcome.append(exc)

        def swap_waits() -> bool:
            return bool(
                watch.execute(waiting, [f"{pg_target.options['schema']}.langgraph_threads"]).fetchone()[0]
            )

        swapping = threading.Thread(target=rebuilding)
        swapping.start()
        _until(swap_waits)  # the first try waits for the reader
        _until(lambda: outcome or not swap_waits())  # and gives up
        _until(lambda: outcome or swap_waits())  # a second try
        reader.commit()
        swapping.join(timeout=30)
        assert len(outcome) == 1 and isinstance(outcome[0], Progress), outcome
        assert tables(saver.store) == inline


def _until(found: Callable[[], Any]) -> Any:
    """``found()`` once it is truthy; it is checked for at most 10 seconds (nothing to wait on)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if value := found():
            return value
    pytest.fail("the condition never held")


def test_thread_pages_refuse_an_offset_the_database_cannot_hold(saver: EventStoreSaver) -> None:
    with pytest.raises(InvalidInput, match=r"offset must be at most 2\*\*63 - 1"):
        saver.threads(offset=2**70)
    with pytest.raises(InvalidInput, match="limit must be an int from 1 to 1000, not 0"):
        saver.threads(limit=0)
