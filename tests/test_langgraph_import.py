"""Moving to EventStoreSaver with the threads LangGraph's own savers hold (``import_checkpoints``).

A run on ``SqliteSaver`` (and on ``PostgresSaver``) stops at an ``interrupt()``, is imported,
and is resumed on the event store: its history, its pending question and where it ends must be
what they would have been had it stayed.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command

from eventstore import ImportConflict, IntegrityViolation, InvalidInput
from eventstore.audit import audit_trail
from eventstore.integrations.langgraph import EventStoreSaver, flow_id_for, import_checkpoints
from tests.conftest import PG_ADMIN_URL, Target
from tests.test_audit_langgraph import cli
from tests.test_langgraph_graph import _config, _result, _state, build


@contextmanager
def source_saver(kind: str, tmp_path: Path) -> Iterator[BaseCheckpointSaver[Any]]:
    if kind == "sqlite":
        with closing(sqlite3.connect(tmp_path / "langgraph.db", check_same_thread=False)) as conn:
            yield SqliteSaver(conn)
        return
    name = f"lg_source_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with PostgresSaver.from_conn_string(f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}") as saver:
            saver.setup()
            yield saver
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def waiting_run(saver: BaseCheckpointSaver[Any], thread: str) -> Any:
    """A run stopped at its question, after one finished run on the same thread."""
    graph = build(saver)
    graph.invoke({"items": [], "total": 1}, _config(thread))
    graph.invoke(Command(resume="yes"), _config(thread, "human:ann"))
    return _result(graph.invoke({"items": [], "total": 5}, _config(thread)))


def the_rest(saver: BaseCheckpointSaver[Any], thread: str) -> list[Any]:
    graph = build(saver)
    seen = [[_state(s) for s in graph.get_state_history(_config(thread))]]
    seen.append(_result(graph.invoke(Command(resume="no"), _config(thread, "human:bob"))))
    seen.append([_state(s) for s in graph.get_state_history(_config(thread))])
    return seen


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_an_imported_thread_resumes_as_it_would_have_on_its_old_saver(
    target: Target, tmp_path: Path, kind: str
) -> None:
    with source_saver(kind, tmp_path) as source:
        asked = waiting_run(source, "refund-1")
        waiting_run(source, "refund-2")
        stored = sum(1 for _ in source.list(None))
        with EventStoreSaver.from_url(target.url, **target.options) as saver:
            done = import_checkpoints(source, saver)
            again = import_checkpoints(source, saver)
            ours = the_rest(saver, "refund-1")
            trail = list(audit_trail(saver.store, flow_id=flow_id_for("refund-1")))
        theirs = the_rest(source, "refund-1")
    assert asked["__interrupt__"] == [{"question": "refund approved?", "total": 12}]
    assert (done.threads, done.checkpoints, done.skipped) == (2, stored, 0) and done.writes > 0
    assert (again.checkpoints, again.writes, again.skipped) == (0, 0, stored)
    assert ours == theirs  # the history imported, the answer to the waiting question, what came after
    assert ours[1]["items"][-2:] == ["review:no", "done"]
    answered = [e for e in trail if getattr(e, "action", None) == "answered"]
    assert [e.actor for e in answered][-1] == "human:bob"  # the answer given after the move


def test_only_the_threads_asked_for_are_imported(target: Target, tmp_path: Path) -> None:
    with source_saver("sqlite", tmp_path) as source:
        waiting_run(source, "a")
        waiting_run(source, "b")
        with EventStoreSaver.from_url(target.url, **target.options) as saver:
            done = import_checkpoints(source, saver, thread_ids=["b"], actor="ops:eve")
            threads = [t.thread_id for t in saver.threads().items]
            (first, *_) = saver.store.read_flow(flow_id_for("b"))
    assert done.threads == 1 and threads == ["b"]
    assert first.metadata["actor"] == "ops:eve"
    assert str(done).startswith(f"imported {done.checkpoints} checkpoints of 1 thread (")


def test_a_bad_source_or_thread_list_is_refused(target: Target, tmp_path: Path) -> None:
    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        with pytest.raises(InvalidInput, match="source must be a LangGraph checkpoint saver"):
            import_checkpoints("checkpoints.db", saver)  # type: ignore[arg-type]
        with (
            source_saver("sqlite", tmp_path) as source,
            pytest.raises(InvalidInput, match="a list of thread ids, not one string"),
        ):
            import_checkpoints(source, saver, thread_ids="a")
        with source_saver("sqlite", tmp_path) as source:
            waiting_run(source, "a")
            with pytest.raises(InvalidInput, match="the source has no thread 'typo': nothing was imported"):
                import_checkpoints(source, saver, thread_ids=["a", "typo"])
        assert saver.store.last_position() == 0


def test_a_thread_the_target_already_ran_is_refused_before_anything_is_written(
    target: Target, tmp_path: Path
) -> None:
    with source_saver("sqlite", tmp_path) as source:
        build(source).invoke({"items": [], "total": 1}, _config("t"))
        waiting_run(source, "u")
        with EventStoreSaver.from_url(target.url, **target.options) as saver:
            build(saver).invoke({"items": ["other"], "total": 50}, _config("t"))
            before = saver.store.last_position()
            with pytest.raises(
                ImportConflict, match=r"this store ran LangGraph thread 't' itself: .* Nothing was imported"
            ) as raised:
                import_checkpoints(source, saver, thread_ids=["u", "t"])  # u, listed first, waits too
            assert raised.value.flow_id == flow_id_for("t")
            assert saver.store.last_position() == before
            assert import_checkpoints(source, saver, thread_ids=["u"]).threads == 1


def test_skip_conflicts_imports_the_other_threads_and_names_those_left_out(
    target: Target, tmp_path: Path
) -> None:
    with source_saver("sqlite", tmp_path) as source:
        for thread in ("t", "v"):
            build(source).invoke({"items": [], "total": 1}, _config(thread))
        waiting_run(source, "u")
        with EventStoreSaver.from_url(target.url, **target.options) as saver:
            for thread in ("t", "v"):
                build(saver).invoke({"items": ["other"], "total": 50}, _config(thread))
            ours = {t: saver.get_tuple(_config(t)) for t in ("t", "v")}
            done = import_checkpoints(source, saver, skip_conflicts=True)
            after = {t: saver.get_tuple(_config(t)) for t in ("t", "v")}
            imported = saver.get_tuple(_config("u"))
        theirs = source.get_tuple(_config("u"))
    assert (done.threads, sorted(done.conflicts)) == (1, ["t", "v"])
    assert str(done).endswith(
        "; left out 2 threads this store ran itself: " + ", ".join(map(repr, done.conflicts))
    )
    assert after == ours  # the threads run here are as they were
    assert imported is not None and theirs is not None and imported.checkpoint == theirs.checkpoint


def test_the_command_refuses_conflicts_or_skips_them_when_told(target: Target, tmp_path: Path) -> None:
    with source_saver("sqlite", tmp_path) as source:
        build(source).invoke({"items": [], "total": 1}, _config("t"))
        waiting_run(source, "u")
    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        build(saver).invoke({"items": ["other"], "total": 50}, _config("t"))
    where = str(tmp_path / "langgraph.db")
    refused = cli(target, "import-threads", where)
    skipped = cli(target, "import-threads", where, "--skip-conflicts")
    assert refused.exit_code == 1 and "this store ran LangGraph thread 't' itself" in refused.output
    assert "Traceback" not in refused.output
    assert skipped.exit_code == 0, skipped.output
    assert skipped.output.startswith("imported ") and " of 1 thread (" in skipped.output
    assert skipped.output.endswith("; left out 1 thread this store ran itself: 't'\n")


def test_a_checkpoint_that_reads_back_otherwise_stops_the_import(target: Target, tmp_path: Path) -> None:
    """Each checkpoint is read back before the next goes in. SqliteSaver keeps a checkpoint as given,
    with a value for a channel its versions do not list; LangGraph never reads that value, and the
    event store does not keep it: the import says so instead of counting the checkpoint as copied."""
    with source_saver("sqlite", tmp_path) as source:
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"kept": 1, "unversioned": 2}
        checkpoint["channel_versions"] = {"kept": "1"}
        source.put(
            {"configurable": {"thread_id": "odd", "checkpoint_ns": ""}},
            checkpoint,
            {"source": "input", "step": -1},
            {"kept": "1"},
        )
        with (
            EventStoreSaver.from_url(target.url, **target.options) as saver,
            pytest.raises(IntegrityViolation, match="of thread 'odd' reads back other than the source's"),
        ):
            import_checkpoints(source, saver)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_command_imports_from_a_savers_database_and_says_what_it_did(
    target: Target, tmp_path: Path, kind: str
) -> None:
    with source_saver(kind, tmp_path) as source:
        waiting_run(source, "r")
        stored = sum(1 for _ in source.list(None))
        where = str(tmp_path / "langgraph.db")
        if isinstance(source, PostgresSaver):  # the URL form --url takes, too
            where = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{source.conn.info.dbname}"
            where = where.replace("postgresql://", "postgresql+psycopg://", 1)
        first = cli(target, "import-threads", where, "--actor", "ops:eve")
        again = cli(target, "import-threads", where)
    assert (first.exit_code, again.exit_code) == (0, 0), first.output + again.output
    assert first.output.startswith(f"imported {stored} checkpoints of 1 thread (")
    assert (
        again.output
        == f"imported 0 checkpoints of 1 thread (0 task writes); {stored} checkpoints already there\n"
    )
    listed = cli(target, "threads")
    assert "r " in listed.output and "ops:eve" in listed.output


def test_the_command_refuses_a_source_that_is_no_savers_database(target: Target, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with closing(sqlite3.connect(other)) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    for source, said in [
        (str(tmp_path / "missing.db"), "missing.db is not a file: give the SqliteSaver database"),
        (str(other), "other.db is no LangGraph SqliteSaver database"),
        (PG_ADMIN_URL, "holds no LangGraph PostgresSaver tables (checkpoint_writes)"),
        (f"{base}/no_such_database_here", "the source database failed: connection failed"),
    ]:
        result = cli(target, "import-threads", source)
        assert result.exit_code == 1 and said in result.output, result.output
        assert "Traceback" not in result.output


def test_writes_the_source_gained_after_an_import_are_added_by_the_next(
    target: Target, tmp_path: Path
) -> None:
    """A checkpoint already imported still gets the pending writes it lacks: an import cut short
    between a checkpoint and its writes, or an application still writing to the old saver."""
    with source_saver("sqlite", tmp_path) as source:
        waiting_run(source, "r")
        with EventStoreSaver.from_url(target.url, **target.options) as saver:
            first = import_checkpoints(source, saver)
            latest = source.get_tuple(_config("r"))
            assert latest is not None
            source.put_writes(latest.config, [("items", ["late"])], task_id="late-task")
            again = import_checkpoints(source, saver)
            ours = saver.get_tuple(latest.config)
        theirs = source.get_tuple(latest.config)
    assert (again.checkpoints, again.skipped) == (0, first.checkpoints)
    assert again.writes >= 1 and ours is not None and theirs is not None
    assert ("late-task", "items", ["late"]) in ours.pending_writes
    assert sorted(ours.pending_writes, key=lambda w: w[0]) == sorted(
        theirs.pending_writes, key=lambda w: w[0]
    )


def test_the_command_leaves_the_source_file_as_it_was(target: Target, tmp_path: Path) -> None:
    """SqliteSaver's own setup switches a file to WAL and adds a column: the command reads only."""
    path = tmp_path / "langgraph.db"
    with source_saver("sqlite", tmp_path) as source:
        waiting_run(source, "r")
        waiting_run(source, "s")
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
    before = path.read_bytes()
    done = cli(target, "import-threads", f"sqlite:///{path}?mode=ro", "--thread", "r", "--thread", "r")
    assert done.exit_code == 0, done.output
    assert done.output.startswith("imported ") and " of 1 thread (" in done.output
    assert path.read_bytes() == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("langgraph.db-")]  # no -wal
    everything = cli(target, "import-threads", str(path))
    assert everything.exit_code == 0 and " of 2 threads (" in everything.output, everything.output
