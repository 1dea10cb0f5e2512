"""Moving to ``EventStoreSaver`` with the threads another LangGraph saver holds.

``import_checkpoints`` reads a thread's checkpoints and pending writes from
any ``BaseCheckpointSaver`` (``SqliteSaver``, ``PostgresSaver``, ...) and
saves them through ``EventStoreSaver.put`` and ``put_writes``, oldest first,
so each becomes an event as if the graph had run on the event store; a
thread waiting on an ``interrupt()`` can be resumed on the new saver.
Each checkpoint is read back and compared with the source's before the
next one goes in. A checkpoint the target holds already is skipped, so an
import cut short is finished by running it again.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import WRITES_IDX_MAP, BaseCheckpointSaver, CheckpointTuple

from ...errors import ImportConflict, IntegrityViolation, InvalidInput
from ...graph_checkpoints import flow_id_for
from ...wording import counted
from .config import _config, _text

if TYPE_CHECKING:
    from .saver import EventStoreSaver

IMPORT_ACTOR = "import:langgraph"
"""Who the imported events name unless ``actor=`` says: the checkpoints' own metadata keeps theirs."""


@dataclass(frozen=True, slots=True)
class ImportedCheckpoints:
    """What ``import_checkpoints`` did: ``checkpoints`` and ``writes`` saved (a task's writes to
    one checkpoint count once) in ``threads`` threads, ``skipped`` checkpoints found there already,
    and the threads left out (``skip_conflicts=True``) because the target ran them itself."""

    threads: int
    checkpoints: int
    writes: int
    skipped: int
    conflicts: tuple[str, ...] = ()

    def __str__(self) -> str:
        done = f"imported {counted(self.checkpoints, 'checkpoint')} of {counted(self.threads, 'thread')}"
        skipped = f"; {counted(self.skipped, 'checkpoint')} already there" if self.skipped else ""
        conflicts = f"{counted(len(self.conflicts), 'thread')} this store ran itself"
        left_out = f"; left out {conflicts}: {_named(self.conflicts)}" if self.conflicts else ""
        return f"{done} ({counted(self.writes, 'task write')}){skipped}{left_out}"


def import_checkpoints(
    source: BaseCheckpointSaver[Any],
    target: EventStoreSaver,
    *,
    thread_ids: Iterable[str] | None = None,
    actor: str = IMPORT_ACTOR,
    skip_conflicts: bool = False,
) -> ImportedCheckpoints:
    """Copy ``thread_ids`` (every thread ``source.list(None)`` gives, when None) into ``target``.

    A thread's checkpoints (every namespace) go in in checkpoint id order, which is the order
    LangGraph made them; each with the values of the channels whose version its parent did not
    have, then its pending writes, a task at a time. The events name ``actor``. One thread is
    held in memory at a time, once the threads are known: without ``thread_ids`` they are found
    through ``source.list(None)``, which decodes every checkpoint (and ``PostgresSaver`` holds
    them all at once); give ``thread_ids`` for a large source (``eventstore import-threads``
    reads them by SQL). A checkpoint already there gets the pending writes it lacks (an import
    cut short between the two) and is checked like the rest.

    A thread that ``target`` holds checkpoints of which the source lacks (the application ran it
    there already) is a conflict: every thread is checked before anything is written, and
    conflicts raise ``ImportConflict`` naming them, with nothing imported; ``skip_conflicts=True``
    imports the other threads and names the ones left out in the result's ``conflicts``. A
    checkpoint that reads back other than the source's raises ``IntegrityViolation`` (naming its
    thread and id) and stops the import there.
    """
    if not isinstance(source, BaseCheckpointSaver):
        raise InvalidInput(f"source must be a LangGraph checkpoint saver, not {source!r:.60}")
    _text(actor, "actor")
    if thread_ids is None:
        threads = _threads(source)
    elif isinstance(thread_ids, str):
        raise InvalidInput("thread_ids must be a list of thread ids, not one string")
    else:
        threads = list(dict.fromkeys(_text(thread_id, "thread id") for thread_id in thread_ids))
        missing = [t for t in threads if source.get_tuple({"configurable": {"thread_id": t}}) is None]
        if missing:
            raise InvalidInput(
                f"the source has no thread {', '.join(map(repr, missing))}: nothing was imported"
            )
    conflicts = tuple(thread_id for thread_id in threads if _ran_here(source, target, thread_id))
    if conflicts and not skip_conflicts:
        raise ImportConflict(
            flow_id_for(conflicts[0]),
            f"this store ran LangGraph {'threads' if len(conflicts) > 1 else 'thread'} {_named(conflicts)} "
            "itself: it has checkpoints of them the source lacks. Nothing was imported; delete them here "
            "(delete_thread), leave them out (thread_ids=), or import the rest (skip_conflicts=True)",
        )
    # the target's store and serde, naming ``actor`` (a config's actor would go into the metadata)
    importer = type(target)(target.store, actor=actor, serde=target.serde)
    done = ImportedCheckpoints(0, 0, 0, 0, conflicts)
    for thread_id in threads:
        if thread_id in conflicts:
            continue
        tuples = sorted(
            source.list({"configurable": {"thread_id": thread_id}}),
            key=lambda t: t.config["configurable"]["checkpoint_id"],
        )
        _refuse_other_history(target, thread_id, {_id(item.config) for item in tuples})
        checkpoints, writes, skipped = _import_thread(importer, tuples)
        done = ImportedCheckpoints(
            done.threads + 1,
            done.checkpoints + checkpoints,
            done.writes + writes,
            done.skipped + skipped,
            conflicts,
        )
    return done


def _ran_here(source: BaseCheckpointSaver[Any], target: EventStoreSaver, thread_id: str) -> bool:
    """Whether ``target`` holds a checkpoint of ``thread_id`` the source lacks. The target's read
    model answers at once for the usual thread, one it has nothing of; the source is read only
    for a thread it has."""
    here = {_id(item.config) for item in target.list({"configurable": {"thread_id": thread_id}})}
    if not here:
        return False
    return not here <= {_id(item.config) for item in source.list({"configurable": {"thread_id": thread_id}})}


def _refuse_other_history(target: EventStoreSaver, thread_id: str, source_ids: set[str]) -> None:
    """``ImportConflict`` when ``target`` gained checkpoints of ``thread_id`` the source lacks
    since the check before the import began (the application ran the thread there meanwhile)."""
    for item in target.list({"configurable": {"thread_id": thread_id}}):
        if _id(item.config) not in source_ids:
            raise ImportConflict(
                flow_id_for(thread_id),
                f"LangGraph thread {thread_id!r} has checkpoints here the source lacks "
                f"({_id(item.config)!r}), written while it was imported: delete it here (delete_thread) "
                "or leave it out (thread_ids=); the threads before it were imported",
            )


def _named(thread_ids: tuple[str, ...], shown: int = 5) -> str:
    named = ", ".join(map(repr, thread_ids[:shown]))
    return f"{named} and {len(thread_ids) - shown} more" if len(thread_ids) > shown else named


def _id(config: RunnableConfig) -> str:
    return str(config["configurable"]["checkpoint_id"])


def _threads(source: BaseCheckpointSaver[Any]) -> builtins.list[str]:
    """Every thread id of ``source``, in the order it lists them first (its newest checkpoint first)."""
    seen: dict[str, None] = {}
    for item in source.list(None):
        seen.setdefault(item.config["configurable"]["thread_id"], None)
    return builtins.list(seen)


def _import_thread(target: EventStoreSaver, tuples: builtins.list[CheckpointTuple]) -> tuple[int, int, int]:
    versions: dict[tuple[str, str], dict[str, Any]] = {}
    checkpoints = writes = skipped = 0
    for item in tuples:
        conf = item.config["configurable"]
        thread_id, ns, checkpoint_id = conf["thread_id"], conf.get("checkpoint_ns", ""), conf["checkpoint_id"]
        checkpoint = item.checkpoint
        parent_id = _parent(item)
        had = versions.get((ns, parent_id), {}) if parent_id else {}
        current = dict(checkpoint.get("channel_versions", {}))
        versions[(ns, checkpoint_id)] = current
        here = _config(thread_id, ns, checkpoint_id)
        there = target.get_tuple(here)
        if there is not None:
            skipped += 1
            if _by_task_order(there.pending_writes) != _by_task_order(item.pending_writes):  # cut short
                writes += _put_writes(target, here, item)
            _check(target, item, here)
            continue
        parent: RunnableConfig = {
            "configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": parent_id}
        }
        new_versions = {
            channel: version for channel, version in current.items() if had.get(channel) != version
        }
        target.put(parent, checkpoint, item.metadata, new_versions)
        checkpoints += 1
        writes += _put_writes(target, here, item)
        _check(target, item, here)
    return checkpoints, writes, skipped


def _put_writes(target: EventStoreSaver, here: RunnableConfig, item: CheckpointTuple) -> int:
    """Save ``item``'s pending writes, a task at a time (one stored already is skipped, as
    ``put_writes`` does); how many tasks' writes were offered."""
    tasks = 0
    for task_id, task_writes in _by_task(item.pending_writes or []):
        for call in _calls(task_writes):
            target.put_writes(here, call, task_id)
        tasks += 1
    return tasks


def _by_task(
    pending: builtins.list[tuple[str, str, Any]],
) -> Iterator[tuple[str, builtins.list[tuple[str, Any]]]]:
    tasks: dict[str, builtins.list[tuple[str, Any]]] = {}
    for task_id, channel, value in pending:
        tasks.setdefault(task_id, []).append((channel, value))
    yield from tasks.items()


def _calls(writes: builtins.list[tuple[str, Any]]) -> Iterator[builtins.list[tuple[str, Any]]]:
    """A task's writes as LangGraph saved them: each special channel's alone (its own index),
    the regular ones together, so that they get the indexes they had (0, 1, ...)."""
    regular = [write for write in writes if write[0] not in WRITES_IDX_MAP]
    yield from ([write] for write in writes if write[0] in WRITES_IDX_MAP)
    if regular:
        yield regular


def _check(target: EventStoreSaver, item: CheckpointTuple, here: Any) -> None:
    copied = target.get_tuple(here)
    same = (
        copied is not None
        and copied.checkpoint == item.checkpoint
        and copied.metadata == item.metadata
        and _parent(copied) == _parent(item)
        and _by_task_order(copied.pending_writes) == _by_task_order(item.pending_writes)
    )
    if not same:
        conf = here["configurable"]
        raise IntegrityViolation(
            f"checkpoint {conf['checkpoint_id']!r} of thread {conf['thread_id']!r} reads back other than the "
            "source's: the import stopped there"
        )


def _by_task_order(writes: builtins.list[tuple[str, str, Any]] | None) -> builtins.list[tuple[str, str, Any]]:
    """Pending writes in task id order, each task's in its own order. A saver orders tasks by their
    path, which ``CheckpointTuple`` does not carry (imported writes have none); LangGraph orders the
    tasks itself when it applies their writes, so only each task's own order counts."""
    return sorted(writes or [], key=lambda write: write[0])


def _parent(item: CheckpointTuple) -> str | None:
    return None if item.parent_config is None else item.parent_config["configurable"]["checkpoint_id"]
