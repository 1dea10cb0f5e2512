"""Deleting, copying and pruning threads: ``delete_thread``, ``delete_for_runs``, ``copy_thread``, ``prune``.

Each appends an event that says who removed or copied what; the events
before it stay in the log, which is append-only.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from ...errors import InvalidInput
from ...events import NewEvent
from ...graph_checkpoints import CHECKPOINTS_DELETED, THREAD_COPIED, THREAD_DELETED, flow_id_for
from ...store import Transaction
from .config import _ids, _never_stored, _text
from .sync import SyncSaver

PRUNE_STRATEGIES = ("keep_latest", "delete")
_IDS_PER_EVENT = 1000


class RetentionSaver(SyncSaver):
    """``SyncSaver`` with the methods that remove checkpoints from the saver's view, or copy them."""

    # -- deleting, copying, pruning ----------------------------------------------
    def delete_thread(self, thread_id: str, *, actor: str | None = None) -> None:
        """Remove a thread (all its namespaces) from the saver's view: a ``ThreadDeleted`` event each."""
        wanted = _text(thread_id, "thread_id", lookup=True)
        self._delete_threads([] if _never_stored(wanted) else [wanted], reason="delete_thread", actor=actor)

    def _delete_threads(self, thread_ids: Sequence[str], *, reason: str, actor: str | None) -> None:
        meta = self._actor(actor)
        if not thread_ids:
            return

        def append(tx: Transaction) -> None:
            for thread_id in thread_ids:
                for ns, flow_id, checkpoints, writes in self._queries.live_namespaces(
                    tx.connection, thread_id
                ):
                    data = {
                        "thread_id": thread_id,
                        "checkpoint_ns": ns,
                        "reason": reason,
                        "checkpoints": checkpoints,
                        "writes": writes,
                    }
                    tx.append(flow_id, [NewEvent(THREAD_DELETED, data)], metadata=meta)

        self._write(append, lock=True)

    def delete_for_runs(self, run_ids: Sequence[str], *, actor: str | None = None) -> None:
        """Remove the checkpoints these runs saved (``metadata["run_id"]``), and their writes."""
        wanted = _ids(run_ids, "run_ids")
        meta = self._actor(actor)
        if not wanted:
            return

        def append(tx: Transaction) -> None:
            found: dict[tuple[str, str], builtins.list[tuple[str, str]]] = {}
            for thread_id, ns, checkpoint_id, run_id in self._queries.run_checkpoints(tx.connection, wanted):
                found.setdefault((thread_id, ns), []).append((checkpoint_id, run_id))
            for (thread_id, ns), items in found.items():
                for start in range(0, len(items), _IDS_PER_EVENT):
                    part = items[start : start + _IDS_PER_EVENT]
                    data = {
                        "thread_id": thread_id,
                        "checkpoint_ns": ns,
                        "reason": "delete_for_runs",
                        "run_ids": sorted({run_id for _, run_id in part}),
                        "checkpoint_ids": [checkpoint_id for checkpoint_id, _ in part],
                    }
                    event = NewEvent(CHECKPOINTS_DELETED, data)
                    tx.append(flow_id_for(thread_id, ns), [event], metadata=meta)

        self._write(append, lock=True)

    def copy_thread(self, source_thread_id: str, target_thread_id: str, *, actor: str | None = None) -> None:
        """Copy every checkpoint, value and write of a thread to a new thread id.

        The target's flows start with a ``ThreadCopied`` event naming the
        source flow's revision and hash at the time of the copy.
        """
        source = _text(source_thread_id, "source_thread_id", lookup=True)
        target = _text(target_thread_id, "target_thread_id")
        if source == target:
            raise InvalidInput("copy_thread needs two different thread ids")
        meta = self._actor(actor)

        def append(tx: Transaction) -> None:
            if self._queries.live_namespaces(tx.connection, target):
                raise InvalidInput(
                    f"thread {target!r} already has checkpoints or pending writes; copy to a new thread id"
                )
            found = [] if _never_stored(source) else self._queries.live_namespaces(tx.connection, source)
            for ns, flow_id, checkpoints, writes in found:
                if not checkpoints and not writes:  # nothing to copy
                    continue
                head = next(iter(self.store.read_flow(flow_id, backwards=True, limit=1)), None)
                data = {
                    "thread_id": target,
                    "checkpoint_ns": ns,
                    "source_thread_id": source,
                    "source_flow_id": flow_id,
                    "source_revision": head.revision if head else 0,
                    "source_hash": head.hash if head else None,
                    "checkpoints": checkpoints,
                    "writes": writes,
                }
                tx.append(flow_id_for(target, ns), [NewEvent(THREAD_COPIED, data)], metadata=meta)

        self._write(append, lock=True)

    def prune(
        self, thread_ids: Sequence[str], *, strategy: str = "keep_latest", actor: str | None = None
    ) -> None:
        """``"keep_latest"``: keep each namespace's latest checkpoint; ``"delete"``: remove the threads.

        Each thread is pruned in its own transaction. ``keep_latest`` deletes
        the checkpoints older than the latest (and their writes), so a run
        saving meanwhile loses nothing; and, as LangGraph's PostgreSQL saver,
        the namespace of a subgraph call (its task id after a ``:``) whose
        root checkpoint goes, unlike a ``checkpointer=True`` subgraph's, whose
        state outlives each call. It refuses threads that use a LangGraph
        ``DeltaChannel``, whose values need older checkpoints.
        """
        wanted = _ids(thread_ids, "thread_ids")
        if strategy not in PRUNE_STRATEGIES:
            raise InvalidInput(f"unknown prune strategy {strategy!r}; one of {', '.join(PRUNE_STRATEGIES)}")
        meta = self._actor(actor)
        if not wanted:
            return
        if strategy == "delete":
            self._delete_threads(wanted, reason="prune", actor=actor)
            return
        with self._reading() as conn:
            self._refuse_delta_threads(conn, wanted)
        for thread_id in wanted:

            def append(tx: Transaction, thread_id: str = thread_id) -> None:
                self._refuse_delta_threads(tx.connection, [thread_id])
                for ns, event in self._keep_latest(tx.connection, thread_id):
                    tx.append(flow_id_for(thread_id, ns), [event], metadata=meta)

            self._write(append, lock=True)

    def _keep_latest(self, conn: sa.Connection, thread_id: str) -> builtins.list[tuple[str, NewEvent]]:
        """The events that prune a thread to its latest checkpoints, by namespace.

        A subgraph call goes whole with the root checkpoint it started from,
        once that one is saved (a run can save the call's checkpoints first)
        and is not the root's latest: the call of a run waiting or running in
        it stays.
        """
        heads = self._queries.heads(conn, thread_id)
        kept_root = next((latest for ns, latest, _, _ in heads if ns == ""), None)
        # LangGraph ends a call's namespace part with ":<task id>"; a checkpointer=True subgraph's has none
        calls = {ns: root for ns, _, _, root in heads if ":" in ns and root is not None and root != kept_root}
        writes: dict[str, int] = {}
        if calls:
            writes = {ns: count for ns, _, _, count in self._queries.live_namespaces(conn, thread_id)}
        events = []
        for ns, latest, count, _ in heads:
            data: dict[str, Any] = {
                "thread_id": thread_id,
                "checkpoint_ns": ns,
                "reason": "prune",
                "strategy": "keep_latest",
            }
            if ns in calls:
                data |= {"root_checkpoint_id": calls[ns], "checkpoints": count, "writes": writes.get(ns, 0)}
                events.append((ns, NewEvent(THREAD_DELETED, data)))
            elif count > 1:
                data |= {"before": latest, "checkpoints": count - 1}
                events.append((ns, NewEvent(CHECKPOINTS_DELETED, data)))
        return events

    def _refuse_delta_threads(self, conn: sa.Connection, thread_ids: Sequence[str]) -> None:
        if delta := self._queries.delta_threads(conn, thread_ids):
            raise InvalidInput(
                f"keep_latest cannot prune threads that use a DeltaChannel: {', '.join(delta)}"
            )
