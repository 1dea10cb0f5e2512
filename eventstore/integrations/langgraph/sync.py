"""``SyncSaver``: the sync reads and writes of ``EventStoreSaver``, and the transactions they run in.

``get_tuple`` and ``list`` read the inline read model (``projections.langgraph``);
``put`` and ``put_writes`` append ``CheckpointSaved`` and ``WritesSaved`` events.
``EventStoreSaver`` (``saver``) opens the store and runs these methods from
async code too.
"""

from __future__ import annotations

import builtins
import math
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

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

from ...aio import LoopLock
from ...errors import (
    ConcurrencyError,
    ConnectionLost,
    EventStoreError,
    InvalidEvent,
    InvalidInput,
    RevisionMismatch,
)
from ...events import NewEvent, new_event_id
from ...graph_checkpoints import (
    CHECKPOINT_SAVED,
    EMPTY,
    ERROR,
    INTERRUPT,
    RESUME,
    encode_blob,
    flow_id_for,
    writes_event_type,
)
from ...retry import RACE_BUDGET, Backoff
from ...store import EventStore, Transaction
from .config import (
    _CONF_ID,
    _CONF_NS,
    _config,
    _config_thread_id,
    _configurable,
    _dict,
    _matches,
    _maybe_text,
    _never_stored,
    _text,
    _thread,
)
from .encoding import _JSON_KEYS, _plain_json, _readable

if TYPE_CHECKING:
    from projections.flow_queries import Page
    from projections.langgraph_queries import CheckpointRow, LangGraphQueries, ThreadInfo

_PAGE = 100


class SyncSaver(BaseCheckpointSaver[str]):
    """The sync half of ``EventStoreSaver``: reading, writing, and the plumbing they share.

    Not used alone: ``EventStoreSaver.__init__`` sets the attributes below.
    """

    store: EventStore
    actor: str
    _queries: LangGraphQueries
    _flow_locks: builtins.list[threading.Lock | LoopLock]

    # -- reading ---------------------------------------------------------------
    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names, or its namespace's latest when it names none."""
        thread_id, checkpoint_ns, checkpoint_id = _thread(config, lookup=True)
        if _never_stored(thread_id, checkpoint_ns, checkpoint_id):
            return None
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
        thread_id = _config_thread_id(conf, lookup=True)
        checkpoint_ns = None
        if thread_id is not None:
            checkpoint_ns = _maybe_text(conf.get("checkpoint_ns"), _CONF_NS, lookup=True)
        checkpoint_id = _maybe_text(conf.get("checkpoint_id"), _CONF_ID, lookup=True)
        before_id = None
        if before is not None:
            before_id = _maybe_text(
                _configurable(before, "before").get("checkpoint_id"), "before's checkpoint_id", lookup=True
            )
            if before_id is not None and _never_stored(before_id):
                # No stored id holds a NUL, so the ids below "p\x00..." are those up to "p": below "p\x01".
                before_id = before_id.split("\x00", 1)[0] + "\x01"
        if filter is not None:
            _dict(filter, "filter")
        if limit is not None and (type(limit) is not int or limit < 0):
            raise InvalidInput(f"limit must be None or an int >= 0, not {limit!r:.60}")
        if _never_stored(thread_id, checkpoint_ns, checkpoint_id):
            return
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
        """A loaded row as LangGraph's checkpoint tuple: values and writes decoded by the serde.

        A stored value the serde cannot decode (a row edited by hand, a bad migration, a backup
        half restored) is the read model's ``ReadModelCorrupt``.
        """
        loads = self.serde.loads_typed
        blobs = row.blobs or {}
        values = {}
        pending = sorted(row.writes or [], key=lambda w: writes_sort_key(w.task_path, w.task_id, w.idx))
        try:
            for channel, version in (row.checkpoint.get("channel_versions") or {}).items():
                stored = blobs.get((str(channel), str(version)))
                if stored is not None and stored[0] != EMPTY and stored[1] is not None:
                    values[channel] = loads((stored[0], stored[1]))
            checkpoint: dict[str, Any] = dict(row.checkpoint)
            if row.extra is not None:
                checkpoint.update(loads(row.extra))
            pending_writes = [
                (w.task_id, w.channel, None if w.blob is None else loads((w.type, w.blob))) for w in pending
            ]
        except Exception as exc:  # the serde's own, of any type; or a checkpoint that is no object
            found = _undecodable(row, loads)
            if found is None:
                raise
            raise found from exc
        checkpoint["channel_values"] = values
        parent = row.parent_checkpoint_id
        return CheckpointTuple(
            config=_config(row.thread_id, row.checkpoint_ns, row.checkpoint_id),
            checkpoint=cast(Checkpoint, checkpoint),
            metadata=cast(CheckpointMetadata, row.metadata),
            parent_config=_config(row.thread_id, row.checkpoint_ns, parent) if parent else None,
            pending_writes=pending_writes,
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
            if isinstance(version, float) and (not math.isfinite(version) or abs(version) >= 1e16):
                # the log stores a whole float this large as an int, whose text differs from str(version)
                raise InvalidInput(f"channel {channel!r:.60}'s version must be a finite float below 1e16")
            kind, blob = (
                self._dumps(values[channel], f"channel {channel!r:.60}")
                if channel in values
                else (EMPTY, None)
            )
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
            kind, blob = self._dumps(value, f"write to channel {channel!r:.60}")
            offered[idx] = (channel, kind, blob)  # a special channel twice: the last one wins
            readable.pop(idx, None)
            if channel in (INTERRUPT, RESUME) and (shown := _readable(value)) is not None:
                readable[idx] = shown
            elif channel == ERROR:  # what the audit shows of a task that raised (TaskFailed)
                readable[idx] = _error_text(value)
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

    # -- threads -------------------------------------------------------------------
    def threads(self, *, offset: int = 0, limit: int = 50, include_deleted: bool = False) -> Page[ThreadInfo]:
        """The store's LangGraph threads, most recently active first (LangGraph has no API for this)."""
        with self._reading() as conn:
            return self._queries.threads(conn, offset=offset, limit=limit, include_deleted=include_deleted)

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
        return plain, (self._dumps(other, "the checkpoint") if other else None)

    def _dumps(self, value: Any, what: str) -> tuple[str, bytes]:
        """``value`` through the serde; a value it cannot serialise is InvalidEvent, naming what it was."""
        try:
            return self.serde.dumps_typed(value)
        except EventStoreError:
            raise
        except Exception as exc:  # msgpack's TypeError, or whatever a user's serde raises
            raise InvalidEvent(
                f"{what} cannot be serialised by the saver's serde: {type(exc).__name__}: {exc!s:.300}"
            ) from exc

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
                        from projections.checkpoints import lock_appends

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
            except Exception:
                if not conn.invalidated:  # a lost connection is dropped: a ROLLBACK would reconnect and fail
                    execute(conn, "ROLLBACK")
                raise
            except BaseException:
                # An interruption (a cancelled task) is raised as it is: the read connection rolls
                # back and drops the connection it cut into (``base.abandon``), as
                # ``projections.flow_queries._snapshot`` does.
                raise
            execute(conn, "ROLLBACK")  # the store's read connection gives it back to the pool, to the end


def _undecodable(row: CheckpointRow, loads: Callable[[tuple[str, bytes]], Any]) -> EventStoreError | None:
    """The ``ReadModelCorrupt`` of the first stored value of ``row`` that ``loads`` fails on, found by
    decoding them again one at a time (the error path's cost only); None if none fails now. A checkpoint
    that is no object, or whose ``channel_versions`` is none, raises its own."""
    from projections.corruption import unreadable

    blobs = row.blobs or {}
    suspects: builtins.list[tuple[tuple[str, bytes], str, str, dict[str, Any]]] = []
    for channel, version in row.versions():
        stored = blobs.get((channel, version))
        if stored is not None and stored[0] != EMPTY and stored[1] is not None:
            key: dict[str, Any] = {"channel": channel, "version": version}
            suspects.append(((stored[0], stored[1]), "blob", "langgraph_blobs", key))
    if row.extra is not None:
        suspects.append((row.extra, "extra", "langgraph_checkpoints", {}))
    for w in row.writes or []:
        if w.blob is not None:
            key = {"checkpoint_id": row.checkpoint_id, "task_id": w.task_id, "idx": w.idx}
            suspects.append(((w.type, w.blob), "blob", "langgraph_writes", key))
    for typed, column, table, key in suspects:
        try:
            loads(typed)
        except Exception as failed:
            what = f"a value LangGraph's serde can decode as {typed[0]!r} ({type(failed).__name__}: {failed})"
            return row.corrupt(column, unreadable(typed[1], what), table, **key)
    return None


def _error_text(error: object) -> str:
    """A task's error as text for the log: its type and message, cut to 1,000 characters."""
    text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else repr(error)
    text = text.encode("utf-8", "replace").decode().replace("\x00", "\\x00")
    return text if len(text) <= 1000 else text[:997] + "..."
