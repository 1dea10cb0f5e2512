"""Who deleted, pruned or copied a LangGraph thread's checkpoints is in the audit trail, and what went."""

from __future__ import annotations

from langgraph.checkpoint.base import empty_checkpoint

from eventstore.audit import ThreadEntry, audit_trail
from eventstore.integrations.langgraph import EventStoreSaver, flow_id_for

from .conftest import Target
from .test_audit_langgraph import cli


def _save(saver: EventStoreSaver, thread: str, run: str, steps: int) -> None:
    config = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    for step in range(steps):
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"n": step}
        checkpoint["channel_versions"] = {"n": step + 1}
        metadata = {"source": "loop", "step": step, "run_id": run}
        config = saver.put(config, checkpoint, metadata, {"n": step + 1})  # type: ignore[arg-type]


def test_deletions_and_copies_are_entries_by_who_made_them(target: Target) -> None:
    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        _save(saver, "t1", "run-a", 3)
        _save(saver, "t1", "run-b", 2)
        saver.delete_for_runs(["run-b"], actor="ops:eve")
        saver.copy_thread("t1", "t2", actor="ops:eve")
        saver.prune(["t1"], strategy="keep_latest", actor="ops:eve")
        saver.delete_thread("t2", actor="ops:bob")
        by_eve = list(audit_trail(saver.store, actor="ops:eve"))
        of_t2 = list(audit_trail(saver.store, flow_id=flow_id_for("t2"), types=["ThreadDeleted"]))
        every = list(audit_trail(saver.store, types=["ThreadDeleted", "CheckpointsDeleted", "ThreadCopied"]))
    assert all(isinstance(entry, ThreadEntry) for entry in [*by_eve, *of_t2])
    assert [(e.type, e.action, e.thread_id, e.reason) for e in by_eve] == [
        ("CheckpointsDeleted", "deleted", "t1", "delete_for_runs"),
        ("ThreadCopied", "copied", "t2", None),
        ("CheckpointsDeleted", "deleted", "t1", "prune"),
    ]
    for_runs, copied, pruned = by_eve
    assert (copied.source_thread_id, copied.checkpoints) == ("t1", 3)
    assert (for_runs.checkpoints, for_runs.run_ids) == (2, ("run-b",))
    assert pruned.checkpoints == 2  # run-a's three, less the latest it keeps
    (deleted,) = of_t2
    assert (deleted.actor, deleted.checkpoints, deleted.reason) == ("ops:bob", 3, "delete_thread")
    assert [e.position for e in every] == sorted(e.position for e in [*by_eve, deleted])
    shown = cli(target, "audit", "--type", "thread", "--actor", "ops:eve")
    assert shown.exit_code == 0, shown.output
    assert "COPIED" in shown.output and "thread t2 from t1 (3 checkpoints" in shown.output
    assert "thread t1: some checkpoints (2 checkpoints, runs run-b, delete_for_runs)" in shown.output
    assert "3 entries: 3 thread changes" in shown.stderr
    bob = cli(target, "audit", "--actor", "ops:bob")
    assert "DELETED" in bob.output and "thread t2: every checkpoint (3 checkpoints" in bob.output


def test_history_counts_the_checkpoints_a_deletion_took(target: Target) -> None:
    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        _save(saver, "h1", "run-a", 3)
        _save(saver, "h1", "run-b", 2)
        saver.delete_for_runs(["run-b"], actor="ops:eve")
        saver.prune(["h1"], strategy="keep_latest", actor="ops:eve")
    shown = cli(target, "history", flow_id_for("h1"))
    assert shown.exit_code == 0, shown.output
    assert '2 checkpoints deleted · "delete_for_runs"' in shown.output
    assert '2 checkpoints deleted · "prune"' in shown.output
