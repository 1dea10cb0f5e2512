"""``EventStoreSaver``: a LangGraph checkpointer whose history is the event log.

    from eventstore.integrations.langgraph import EventStoreSaver

    with EventStoreSaver.from_url("sqlite:///checkpoints.db") as saver:
        graph = builder.compile(checkpointer=saver)

Every ``put`` appends a ``CheckpointSaved`` event and every ``put_writes`` a
``WritesSaved`` (``InterruptRecorded``, ``ResumeRecorded``) event to the
thread's flow (``eventstore.graph_checkpoints.flow_id_for``), hash-chained,
with the actor and time. The inline read model ``projections.langgraph``
answers ``get_tuple`` and ``list`` without replaying anything. Channel values
are stored once per ``(channel, version)``: an event carries only the values
that changed.

Deleting (``delete_thread``, ``delete_for_runs``, ``prune``) removes
checkpoints from the saver's view and appends an event that says who deleted
what; the events before it stay in the log, which is append-only.

The async methods never block the event loop. On PostgreSQL they are native
by default: the same code runs on SQLAlchemy's async engine (psycopg's async
connections) through ``eventstore.aio``; on SQLite each call runs in a worker
thread, or natively on aiosqlite with ``async_driver=True``.
docs/langgraph.md has the details.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import copy
import inspect
import math
import random
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast
from uuid import UUID

import sqlalchemy as sa
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_serializable_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from ..aio import AsyncEventStore, LoopLock
from ..aio import run as aio_run
from ..errors import (
    ConcurrencyError,
    ConnectionLost,
    InvalidInput,
    ProjectionError,
    RevisionMismatch,
    StoreClosed,
)
from ..events import NewEvent, new_event_id
from ..graph_checkpoints import (
    CHECKPOINT_SAVED,
    CHECKPOINTS_DELETED,
    EMPTY,
    INTERRUPT,
    RESUME,
    THREAD_COPIED,
    THREAD_DELETED,
    encode_blob,
    flow_id_for,
    writes_event_type,
)
from ..retry import RACE_BUDGET, Backoff
from ..store import EventStore, Transaction

if TYPE_CHECKING:
    from projections.flows import Page
    from projections.langgraph import LangGraphProjection
    from projections.langgraph_queries import CheckpointRow, LangGraphQueries, ThreadInfo

__all__ = ["DEFAULT_ACTOR", "EventStoreSaver", "flow_id_for"]

DEFAULT_ACTOR = "langgraph"
DEFAULT_MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
PRUNE_STRATEGIES = ("keep_latest", "delete")
_JSON_KEYS = frozenset({"v", "id", "ts", "channel_versions", "versions_seen", "updated_channels"})
_PAGE = 100
_IDS_PER_EVENT = 1000
_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1
T = TypeVar("T")


class EventStoreSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer on an ``EventStore`` (SQLite or PostgreSQL), sync and async.

    ``store`` must have been opened with ``projections=[LangGraphProjection()]``
    (``from_url`` does that). ``actor`` is who the events name when a call's
    config does not: ``config["configurable"]["actor"]``, else
    ``config["metadata"]["actor"]``, else this.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        actor: str = DEFAULT_ACTOR,
        serde: SerializerProtocol | None = None,
        async_driver: bool | None = None,
    ) -> None:
        super().__init__(serde=serde)
        from projections.langgraph import LangGraphProjection
        from projections.langgraph_queries import LangGraphQueries

        if not any(isinstance(p, LangGraphProjection) for p in store.projections):
            raise ProjectionError(
                "the store must be opened with projections=[LangGraphProjection()] "
                "(from projections.langgraph), or use EventStoreSaver.from_url"
            )
        if not isinstance(actor, str) or not actor:
            raise InvalidInput("actor must be a non-empty string")
        self.store = store
        self.actor = actor
        self._queries: LangGraphQueries = LangGraphQueries()
        self._owns_store = False
        self._flow_locks: builtins.list[threading.Lock | LoopLock] = [threading.Lock() for _ in range(64)]
        self._views: dict[asyncio.AbstractEventLoop, asyncio.Task[EventStoreSaver]] = {}
        """This saver on each loop that has used it, opened or still opening (``_on_loop``)."""
        self._opened: dict[asyncio.AbstractEventLoop, EventStoreSaver] = {}
        """The views whose connections are open: the ones ``close`` must close."""
        self._views_lock = threading.Lock()
        self._closed = False
        if async_driver not in (None, True, False):
            raise InvalidInput("async_driver must be True, False or None")
        self.async_driver = store.dialect == "postgresql" if async_driver is None else async_driver
        """The async methods run on the async driver (``eventstore.aio``), or else in a worker thread."""

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        actor: str = DEFAULT_ACTOR,
        serde: SerializerProtocol | None = None,
        async_driver: bool | None = None,
        create: bool = True,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        projections: Sequence[LangGraphProjection] = (),
        **options: Any,
    ) -> EventStoreSaver:
        """Open a store by URL with the LangGraph read model; closing the saver closes it.

        ``create`` creates or upgrades the schema (on PostgreSQL too, unlike
        ``EventStore.open``). ``max_payload_bytes`` bounds one event: the
        values that changed in one step. Other ``options`` go to
        ``EventStore.open`` (``schema``, ``pool_size``, ``synchronous``...).
        """
        from projections.langgraph import LangGraphProjection

        if isinstance(projections, str) or not isinstance(projections, Sequence):
            raise InvalidInput(f"projections must be a list of projections, not {projections!r:.60}")
        known = [name for name in inspect.signature(EventStore.open).parameters if name != "url"]
        if unknown := sorted(set(options) - set(known)):
            raise InvalidInput(
                f"unknown option {', '.join(map(repr, unknown))} for EventStoreSaver.from_url; "
                f"besides its own, it takes EventStore.open's: {', '.join(known)}"
            )
        store = EventStore.open(
            url,
            create=create,
            max_payload_bytes=max_payload_bytes,
            projections=[*projections, LangGraphProjection()],
            **options,
        )
        try:
            saver = cls(store, actor=actor, serde=serde, async_driver=async_driver)
        except BaseException:
            store.close()
            raise
        saver._owns_store = True
        return saver

    def setup(self) -> None:
        """Create or upgrade the schema (what ``PostgresSaver.setup`` does; ``from_url`` already did)."""
        self.store.upgrade()

    def close(self) -> None:
        """Close the store if this saver opened it (``from_url``), and any async connections.

        Async connections are closed on an event loop of their own (in a
        short-lived thread if a loop runs in this one); from async code,
        ``await aclose()`` (or ``async with``) closes them on its loop.
        Close a saver once no loop uses it any more: its async methods then
        raise ``StoreClosed``.
        """
        with self._views_lock:
            self._closed = True
            views, self._opened, self._views = list(self._opened.values()), {}, {}
        if views:
            closing = threading.Thread(target=asyncio.run, args=(self._close_views(views),))
            closing.start()
            closing.join()
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- reading ---------------------------------------------------------------
    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names, or its namespace's latest when it names none."""
        thread_id, checkpoint_ns, checkpoint_id = _thread(config)
        with self._reading() as conn:
            row = self._queries.checkpoint(conn, thread_id, checkpoint_ns, checkpoint_id)
        return None if row is None else self._tuple(row)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first: of a thread (and namespace, if the config has one), or all.

        ``filter`` keeps those whose metadata has these exact values; ``before``
        those with a smaller checkpoint id. Read in pages of 100.
        """
        for page in self._pages(config, filter, before, limit):
            yield from page

    def _pages(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> Iterator[builtins.list[CheckpointTuple]]:
        conf = {} if config is None else _configurable(config, "config")
        thread_id = _config_thread_id(conf)
        checkpoint_ns = _maybe_text(conf.get("checkpoint_ns"), _CONF_NS) if thread_id is not None else None
        checkpoint_id = _maybe_text(conf.get("checkpoint_id"), _CONF_ID)
        before_id = None
        if before is not None:
            before_id = _maybe_text(
                _configurable(before, "before").get("checkpoint_id"), "before's checkpoint_id"
            )
        if filter is not None:
            _dict(filter, "filter")
        if limit is not None and (type(limit) is not int or limit < 0):
            raise InvalidInput(f"limit must be None or an int >= 0, not {limit!r:.60}")
        remaining = limit
        cursor: tuple[str, str, str] | None = None
        while remaining is None or remaining > 0:
            size = _PAGE if remaining is None or filter else min(_PAGE, remaining)
            with self._reading() as conn:
                rows = self._queries.checkpoints(
                    conn,
                    thread_id=thread_id,
                    checkpoint_ns=checkpoint_ns,
                    checkpoint_id=checkpoint_id,
                    before=before_id,
                    metadata=filter,
                    after=cursor,
                    limit=size,
                )
                if rows:
                    last = rows[-1]
                    cursor = (last.checkpoint_id, last.checkpoint_ns, last.thread_id)
                kept = [r for r in rows if _matches(r.metadata, filter)] if filter else rows
                if remaining is not None:
                    kept = kept[:remaining]
                kept = self._queries.load(conn, kept)
            page = [self._tuple(row) for row in kept]
            if page:
                yield page
                if remaining is not None:
                    remaining -= len(page)
            if len(rows) < size:
                return

    def _tuple(self, row: CheckpointRow) -> CheckpointTuple:
        """A loaded row as LangGraph's checkpoint tuple: values and writes decoded by the serde."""
        loads = self.serde.loads_typed
        blobs = row.blobs or {}
        values = {}
        for channel, version in (row.checkpoint.get("channel_versions") or {}).items():
            stored = blobs.get((str(channel), str(version)))
            if stored is not None and stored[0] != EMPTY and stored[1] is not None:
                values[channel] = loads((stored[0], stored[1]))
        checkpoint: dict[str, Any] = dict(row.checkpoint)
        if row.extra is not None:
            checkpoint.update(loads(row.extra))
        checkpoint["channel_values"] = values
        pending = sorted(row.writes or [], key=lambda w: writes_sort_key(w.task_path, w.task_id, w.idx))
        parent = row.parent_checkpoint_id
        return CheckpointTuple(
            config=_config(row.thread_id, row.checkpoint_ns, row.checkpoint_id),
            checkpoint=cast(Checkpoint, checkpoint),
            metadata=cast(CheckpointMetadata, row.metadata),
            parent_config=_config(row.thread_id, row.checkpoint_ns, parent) if parent else None,
            pending_writes=[
                (w.task_id, w.channel, None if w.blob is None else loads((w.type, w.blob))) for w in pending
            ],
        )

    # -- writing ---------------------------------------------------------------
    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Append a ``CheckpointSaved`` event with the values of the channels in ``new_versions``."""
        thread_id, checkpoint_ns, parent = _thread(config)
        if not isinstance(checkpoint, dict) or not isinstance(
            values := checkpoint.get("channel_values"), dict
        ):
            raise InvalidInput(
                "checkpoint must be a LangGraph checkpoint: a dict with 'id' and 'channel_values'"
            )
        checkpoint_id = _text(checkpoint.get("id"), "checkpoint['id']")
        _dict(metadata, "metadata")
        blobs = []
        for channel, version in _dict(new_versions, "new_versions").items():
            if not isinstance(channel, str):
                raise InvalidInput(
                    f"new_versions must map channel names (strings) to versions, not {channel!r:.60}"
                )
            kind, blob = self.serde.dumps_typed(values[channel]) if channel in values else (EMPTY, None)
            blobs.append((channel, str(version), kind, blob))
        structure, extra = self._split(checkpoint)
        data: dict[str, Any] = {
            "thread_id": thread_id,
            "checkpoint_ns": checkpoint_ns,
            "checkpoint_id": checkpoint_id,
            "parent_checkpoint_id": parent,
            "checkpoint": structure,
            "metadata": get_serializable_checkpoint_metadata(config, metadata),
        }
        if extra is not None:
            data["extra"] = {"type": extra[0], "data": encode_blob(extra[1])}
        # A (channel, version) keeps the first value saved for it (the fold inserts, never replaces):
        # LangGraph gives every new value a new version, so only a caller reusing one would notice.
        data["blobs"] = [
            {"channel": channel, "version": version, "type": kind, "data": encode_blob(blob)}
            for channel, version, kind, blob in blobs
        ]
        event = NewEvent(CHECKPOINT_SAVED, data)  # one event id for every attempt: a retry is idempotent
        meta = self._event_metadata(config, data["metadata"])
        flow_id = flow_id_for(thread_id, checkpoint_ns)
        # Outside a unit of work: on PostgreSQL, with the flow's head cached, the append and the
        # read model's rows are one statement (eventstore.projection.FusedWrite), one round trip.
        with self._flow_locks[hash(flow_id) % len(self._flow_locks)]:
            self.store.append(flow_id, [event], metadata=meta)
        return _config(thread_id, checkpoint_ns, checkpoint_id)

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Append a task's writes, unless every one is stored already (LangGraph's rules).

        A regular write whose ``(task_id, idx)`` is stored is ignored; a write
        to a special channel (``__error__``, ``__interrupt__``, ``__resume__``,
        ``__scheduled__``) replaces the stored one.
        """
        thread_id, checkpoint_ns, checkpoint_id = _thread(config)
        if not checkpoint_id:
            raise InvalidInput("put_writes needs config['configurable']['checkpoint_id']")
        _text(task_id, "task_id")
        _text(task_path, "task_path", empty=True)
        if isinstance(writes, str | bytes) or not isinstance(writes, Sequence):
            raise InvalidInput(f"writes must be a list of (channel, value) pairs, not {writes!r:.60}")
        offered: dict[int, tuple[str, str, bytes]] = {}
        readable: dict[int, Any] = {}
        for position, write in enumerate(writes):
            if (
                not isinstance(write, tuple | builtins.list)
                or len(write) != 2
                or not isinstance(write[0], str)
            ):
                raise InvalidInput(
                    f"writes must be (channel, value) pairs with a string channel, not {write!r:.60}"
                )
            channel, value = write
            idx = WRITES_IDX_MAP.get(channel, position)
            kind, blob = self.serde.dumps_typed(value)
            offered[idx] = (channel, kind, blob)  # a special channel twice: the last one wins
            readable.pop(idx, None)
            if channel in (INTERRUPT, RESUME) and (shown := _readable(value)) is not None:
                readable[idx] = shown
        event_id = new_event_id()
        meta = self._event_metadata(config, None)
        flow_id = flow_id_for(thread_id, checkpoint_ns)

        def append(tx: Transaction) -> None:
            stored = self._queries.task_writes(
                tx.connection, thread_id, checkpoint_ns, checkpoint_id, task_id
            )
            fresh = [
                {"idx": idx, "channel": channel, "type": kind, "data": encode_blob(blob)}
                | ({"value": readable[idx]} if idx in readable else {})
                for idx, (channel, kind, blob) in offered.items()
                if (idx not in stored if idx >= 0 else stored.get(idx) != (channel, kind, blob))
            ]
            if not fresh:
                return
            data = {
                "thread_id": thread_id,
                "checkpoint_ns": checkpoint_ns,
                "checkpoint_id": checkpoint_id,
                "task_id": task_id,
                "task_path": task_path,
                "writes": fresh,
            }
            channels = [str(w["channel"]) for w in fresh]
            event = NewEvent(writes_event_type(channels), data, event_id=event_id)
            tx.append(flow_id, [event], metadata=meta)

        # lock: appends held before the read of the stored writes, as every write that reads the
        # read model does; else a rebuild's swap (the positions row, then the tables) and this
        # transaction (a table, then the row) could deadlock on PostgreSQL.
        self._write(append, lock=True, flow_id=flow_id)

    # -- deleting, copying, pruning ----------------------------------------------
    def delete_thread(self, thread_id: str, *, actor: str | None = None) -> None:
        """Remove a thread (all its namespaces) from the saver's view: a ``ThreadDeleted`` event each."""
        self._delete_threads([_text(thread_id, "thread_id")], reason="delete_thread", actor=actor)

    def _delete_threads(self, thread_ids: Sequence[str], *, reason: str, actor: str | None) -> None:
        meta = self._actor(actor)

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
        source = _text(source_thread_id, "source_thread_id")
        target = _text(target_thread_id, "target_thread_id")
        if source == target:
            raise InvalidInput("copy_thread needs two different thread ids")
        meta = self._actor(actor)

        def append(tx: Transaction) -> None:
            if self._queries.live_namespaces(tx.connection, target):
                raise InvalidInput(f"thread {target!r} already has checkpoints; copy to a new thread id")
            for ns, flow_id, checkpoints, writes in self._queries.live_namespaces(tx.connection, source):
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

    # -- threads -------------------------------------------------------------------
    def threads(self, *, offset: int = 0, limit: int = 50, include_deleted: bool = False) -> Page[ThreadInfo]:
        """The store's LangGraph threads, most recently active first (LangGraph has no API for this)."""
        with self._reading() as conn:
            return self._queries.threads(conn, offset=offset, limit=limit, include_deleted=include_deleted)

    # -- async: the same methods, natively on the event loop -----------------------------
    async def _on_loop(self) -> EventStoreSaver:
        """This saver on the async driver, for the running loop (``eventstore.aio``).

        Opened on first use in a loop: its connections belong to that loop,
        and each running loop has its own. The views of loops closed since are
        closed when a new loop opens one. Appends to one flow take turns on a
        ``LoopLock``.
        """
        loop = asyncio.get_running_loop()
        with self._views_lock:
            if self._closed:
                raise StoreClosed("this saver is closed; open a new one")
            task = self._views.get(loop)
            if task is None:
                ended = [self._opened.pop(old) for old in list(self._opened) if old.is_closed()]
                for old in [old for old in self._views if old.is_closed()]:
                    del self._views[old]
                task = self._views[loop] = loop.create_task(self._open_on_loop(ended))
        # Shielded: a caller cancelled while the connections open must not cancel the others' wait.
        return await asyncio.shield(task)

    async def _open_on_loop(self, ended: Sequence[EventStoreSaver]) -> EventStoreSaver:
        loop = asyncio.get_running_loop()
        try:
            await self._close_views(ended)
            opened = await AsyncEventStore.like(self.store)
        except BaseException:
            with self._views_lock:
                if self._views.get(loop) is asyncio.current_task():
                    del self._views[loop]  # the next call tries again
            raise
        view = copy.copy(self)
        view.store = opened.store
        view._flow_locks = [LoopLock() for _ in range(len(self._flow_locks))]
        view._owns_store = False
        view._views, view._opened = {}, {}
        with self._views_lock:
            orphan = self._closed  # closed while these connections opened: no one else will close them
            if not orphan:
                self._opened[loop] = view
        if orphan:
            await self._close_views([view])
            raise StoreClosed("this saver is closed; open a new one")
        return view

    @staticmethod
    async def _close_views(views: Sequence[EventStoreSaver]) -> None:
        for view in views:
            with contextlib.suppress(Exception):  # a connection of a closed loop may fail to say goodbye
                await aio_run(view.store.close)

    async def _run(self, method: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """A sync method of this class, natively on the loop's async driver or in a worker thread."""
        if not self.async_driver:
            return await asyncio.to_thread(method, self, *args, **kwargs)
        view = await self._on_loop()
        return await aio_run(method, view, *args, **kwargs)

    async def aclose(self) -> None:
        """Close the async connections, and the store if this saver opened it (``from_url``)."""
        loop = asyncio.get_running_loop()
        with self._views_lock:
            self._closed = True
            self._views.pop(loop, None)
            mine = self._opened.pop(loop, None)
        if mine is not None:
            await self._close_views([mine])
        self.close()

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._run(EventStoreSaver.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        if self.async_driver:
            view = await self._on_loop()
            pages = view._pages(config, filter, before, limit)
            step: Callable[..., Any] = aio_run
        else:
            pages, step = self._pages(config, filter, before, limit), asyncio.to_thread
        while (page := await step(next, pages, None)) is not None:
            for item in page:
                yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await self._run(EventStoreSaver.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await self._run(EventStoreSaver.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str, *, actor: str | None = None) -> None:
        await self._run(EventStoreSaver.delete_thread, thread_id, actor=actor)

    async def adelete_for_runs(self, run_ids: Sequence[str], *, actor: str | None = None) -> None:
        await self._run(EventStoreSaver.delete_for_runs, run_ids, actor=actor)

    async def acopy_thread(
        self, source_thread_id: str, target_thread_id: str, *, actor: str | None = None
    ) -> None:
        await self._run(EventStoreSaver.copy_thread, source_thread_id, target_thread_id, actor=actor)

    async def aprune(
        self, thread_ids: Sequence[str], *, strategy: str = "keep_latest", actor: str | None = None
    ) -> None:
        await self._run(EventStoreSaver.prune, thread_ids, strategy=strategy, actor=actor)

    async def athreads(
        self, *, offset: int = 0, limit: int = 50, include_deleted: bool = False
    ) -> Page[ThreadInfo]:
        return await self._run(
            EventStoreSaver.threads, offset=offset, limit=limit, include_deleted=include_deleted
        )

    def get_next_version(self, current: str | None, channel: None) -> str:
        """``<counter>.<random>``: a 16-digit counter, so versions sort as text, and 8 random hex digits.

        The random part keeps two forks of one checkpoint from giving different
        values the same version, as in LangGraph's PostgreSQL saver (whose
        versions are twice as long: they are repeated in every checkpoint).
        """
        if current is None:
            number = 0
        elif isinstance(current, int):
            number = current
        else:
            try:
                number = int(str(current).split(".")[0])
            except ValueError:
                raise InvalidInput(
                    f"a channel version must be an int or a '<counter>.<random>' string, not {current!r:.60}"
                ) from None
        return f"{number + 1:016}.{random.getrandbits(32):08x}"

    # -- plumbing --------------------------------------------------------------------
    def _actor(self, actor: object) -> dict[str, Any]:
        """The metadata of an event a call appends: its ``actor``, else the saver's."""
        return {"actor": self.actor if actor is None else _text(actor, "actor")}

    def _event_metadata(self, config: RunnableConfig, metadata: Any) -> dict[str, Any]:
        """The event's metadata: who (the first ``actor`` of the config, its metadata, the checkpoint's)."""
        actor = self.actor
        for source in (config.get("configurable"), config.get("metadata"), metadata):
            value = source.get("actor") if isinstance(source, dict) else None
            if isinstance(value, str) and value:
                actor = value
                break
        meta: dict[str, Any] = {"actor": actor}
        run_id = metadata.get("run_id") if isinstance(metadata, dict) else None
        if isinstance(run_id, str):
            meta["run_id"] = run_id
        return meta

    def _split(self, checkpoint: Checkpoint) -> tuple[dict[str, Any], tuple[str, bytes] | None]:
        """The checkpoint without its values: JSON where it is plain JSON, the rest through the serde."""
        plain: dict[str, Any] = {}
        other: dict[str, Any] = {}
        for key, value in checkpoint.items():
            if key == "channel_values":
                continue
            if key in _JSON_KEYS or _plain_json(value):
                plain[key] = value
            else:
                other[key] = value
        return plain, (self.serde.dumps_typed(other) if other else None)

    def _write(
        self, append: Callable[[Transaction], object], *, lock: bool = False, flow_id: str | None = None
    ) -> None:
        """Run ``append`` in a transaction; again if it lost a race to the flow, or its connection died.

        Appends to one flow (``flow_id``) from this process take turns on a
        lock first: LangGraph saves a step's writes and its next checkpoint at
        the same time, and on PostgreSQL they would otherwise race for the
        flow's next revision and retry.
        """
        if flow_id is not None:
            with self._flow_locks[hash(flow_id) % len(self._flow_locks)]:
                self._write(append, lock=lock)
            return
        reconnected = False
        backoff = Backoff(self.store.clock)
        while True:
            try:
                with self.store.transaction() as tx:
                    if lock:
                        from projections.base import lock_appends

                        lock_appends(tx.connection)
                    append(tx)
                return
            except RevisionMismatch as raced:
                # Another writer appended to the flow first (PostgreSQL): wait a little, read again.
                if not backoff.wait():
                    raise ConcurrencyError(
                        f"a LangGraph write kept losing races: "
                        f"{backoff.attempts} attempts in {RACE_BUDGET:g} s"
                    ) from raced
            except ConnectionLost:
                if reconnected:
                    raise
                reconnected = True

    @contextmanager
    def _reading(self) -> Iterator[sa.Connection]:
        """A connection for a few reads; on SQLite one snapshot for all of them."""
        from projections.langgraph import execute

        store = self.store
        with store.reading() as conn:
            if store.dialect != "sqlite":  # each read is one statement: no transaction to end
                yield conn.execution_options(isolation_level="AUTOCOMMIT")
                return
            execute(conn, "BEGIN")
            try:
                yield conn
            finally:
                execute(conn, "ROLLBACK")


_CONF_NS = "config['configurable']['checkpoint_ns']"
_CONF_ID = "config['configurable']['checkpoint_id']"


def _text(value: object, what: str, *, empty: bool = False) -> str:
    """``value`` if it is a string the database can store (not empty, unless ``empty``); else InvalidInput."""
    if not isinstance(value, str) or not (value or empty):
        raise InvalidInput(f"{what} must be a {'' if empty else 'non-empty '}string, not {value!r:.60}")
    if not value.isascii():  # a flag in CPython: free for the usual ids
        try:
            value.encode()
        except UnicodeEncodeError:
            raise InvalidInput(
                f"{what} is not valid Unicode text (a lone surrogate): {value!r:.60}"
            ) from None
    return value


def _maybe_text(value: object, what: str) -> str | None:
    return None if value is None else _text(value, what, empty=True)


def _dict(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a dict, not {value!r:.60}")
    return value


def _configurable(config: object, what: str) -> dict[str, Any]:
    """``config["configurable"]`` of a LangGraph config, or ``{}``."""
    conf = _dict(config, what).get("configurable")
    return {} if conf is None else _dict(conf, f"{what}['configurable']")


def _config_thread_id(conf: dict[str, Any]) -> str | None:
    """The config's thread id; an int or UUID as its text, as LangGraph's own savers take them."""
    thread_id = conf.get("thread_id")
    if thread_id is None:
        return None
    if isinstance(thread_id, int | UUID) and not isinstance(thread_id, bool):
        thread_id = str(thread_id)
    return _text(thread_id, "config['configurable']['thread_id']")


def _thread(config: RunnableConfig) -> tuple[str, str, str | None]:
    """The thread id, checkpoint namespace and checkpoint id (if any) that a config names."""
    conf = _configurable(config, "config")
    thread_id = _config_thread_id(conf)
    if thread_id is None:
        raise InvalidInput("the config needs config['configurable']['thread_id']")
    return (
        thread_id,
        _maybe_text(conf.get("checkpoint_ns"), _CONF_NS) or "",
        _maybe_text(conf.get("checkpoint_id"), _CONF_ID),
    )


def _ids(values: object, what: str) -> builtins.list[str]:
    """Thread or run ids given as a list: each a non-empty string."""
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
        raise InvalidInput(f"{what} must be a list of ids (strings), not {values!r:.60}")
    return [_text(value, f"each of {what}") for value in values]


def _config(thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": checkpoint_ns,
            "checkpoint_id": checkpoint_id,
        }
    }


def _matches(metadata: dict[str, Any], filter: dict[str, Any] | None) -> bool:
    return not filter or all(metadata.get(key) == value for key, value in filter.items())


def _plain_json(value: Any) -> bool:
    """JSON that reads back as the same Python value (no tuples, dates or models), and that the store
    takes: no NUL or lone surrogate in a string or key, no NaN, infinity or integer beyond 64 bits,
    and no integral float of 1e16 or more, which it stores as an int (``eventstore.serialization``).
    """
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, str):
        return _plain_text(value)
    if isinstance(value, int):
        return _INT64_MIN <= value <= _UINT64_MAX
    if isinstance(value, float):
        return math.isfinite(value) and not (value.is_integer() and abs(value) >= 1e16)
    if isinstance(value, builtins.list):
        return all(_plain_json(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_text(k) and _plain_json(v) for k, v in value.items())
    return False


def _plain_text(text: str) -> bool:
    """Text JSON in the store can hold: no NUL (``jsonb`` refuses it), no lone surrogate (not UTF-8)."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _readable(value: Any) -> Any:
    """An interrupt's question or a resume's answer as plain JSON, for people reading the log; else None.

    Interrupts are LangGraph ``Interrupt`` objects: their ``id`` and ``value``
    are shown. Values that are not plain JSON, or over 4 KB, are left to the
    serialised blob.
    """
    many = isinstance(value, builtins.list | tuple)
    items = builtins.list(value) if many else [value]
    shown = [
        {"id": str(item.id), "value": item.value} if hasattr(item, "id") and hasattr(item, "value") else item
        for item in items
    ]
    if not _plain_json(shown):
        return None
    result = shown if many else shown[0]
    return result if len(repr(result)) <= 4096 else None
