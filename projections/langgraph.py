"""The LangGraph checkpoint read model: an inline projection of the graph checkpoint events.

``LangGraphProjection`` folds the events of ``eventstore.graph_checkpoints``
into four tables, inside the append transaction:

* ``langgraph_checkpoints``: one row per checkpoint (without channel values),
  with its metadata and the position of the event that saved it;
* ``langgraph_blobs``: channel values by ``(thread, namespace, channel,
  version)``, written once per version;
* ``langgraph_writes``: pending writes by ``(checkpoint, task, idx)``;
* ``langgraph_threads``: one row per thread and namespace, for listing threads.

The saver answers ``get_tuple`` and ``list`` from these tables; it never
replays a thread. The fold is deterministic, so a rebuild from the log gives
the same tables. Nothing here imports LangGraph.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from eventstore import EventStore, InvalidInput, RecordedEvent, Transaction
from eventstore.backends.base import driver_error
from eventstore.graph_checkpoints import CHECKPOINT_SAVED, GRAPH_EVENTS, WRITE_EVENTS, decode_blob
from eventstore.integrity import format_time
from eventstore.projection import NOTHING, FusedWrite
from eventstore.schema import flow_events

from . import langgraph_postgresql as postgresql_sql
from .checkpoints import lock_appends, read_checkpoint, write_checkpoint
from .declaration import Projection
from .rebuilding import ensure
from .types import JSON

KEY = sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")
"""Ids and names: compared and sorted by code point on both backends, as LangGraph's savers do."""
TIME = sa.String(32)
"""Canonical UTC text (``eventstore.integrity.format_time``), which sorts as time does."""

_NAMED = re.compile(r"(?<!:):([A-Za-z_]\w*)")
_PARAM = re.compile(r"%\((\w+)\)([sb])")


def driver_sql(sql: str, dialect: str) -> str:
    """SQL written with ``:name`` parameters, in the driver's parameter style."""
    return sql if dialect == "sqlite" else _NAMED.sub(r"%(\1)s", sql)


def execute(
    conn: sa.Connection, sql: str, params: Any = None, *, many: bool = False
) -> tuple[list[Any], int]:
    """Run driver SQL inside ``conn``'s transaction; return the rows and the row count.

    SQLAlchemy's statement machinery cost more than these short statements;
    driver errors are wrapped as SQLAlchemy would wrap them, for the store to
    translate.
    """
    raw: Any = conn.connection.dbapi_connection
    cursor = None
    try:
        cursor = raw.cursor()
        if many:
            cursor.executemany(sql, params)
            return [], cursor.rowcount
        cursor.execute(sql, params if params is not None else {})
        rows = list(cursor.fetchall()) if cursor.description is not None else []
        return rows, cursor.rowcount
    except conn.dialect.loaded_dbapi.Error as exc:
        raise driver_error(conn, exc, sql, params, cursor) from exc
    except UnicodeEncodeError as exc:  # a parameter the driver cannot send: a lone surrogate
        raise InvalidInput(
            f"a value is not valid Unicode text (a lone surrogate): {exc.object!r:.60}"
        ) from exc
    finally:
        if cursor is not None:
            cursor.close()


def json_value(value: Any) -> Any:
    """A JSON column as Python: SQLite gives text, psycopg parsed ``jsonb``."""
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def blob_bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


_CHECKPOINT_COLUMNS = (
    "thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint, extra_type, extra, "
    "metadata, run_id, actor, saved_at, position"
)
_WRITE_COLUMNS = "thread_id, checkpoint_ns, checkpoint_id, task_id, idx, task_path, channel, type, blob"

_UPSERT_THREAD = """
    INSERT INTO {th} (thread_id, checkpoint_ns, flow_id, checkpoints, latest_checkpoint_id,
        created_at, updated_at, last_actor)
    VALUES (:thread_id, :checkpoint_ns, :flow_id, :added, :latest, :at, :at, :actor)
    ON CONFLICT (thread_id, checkpoint_ns) DO UPDATE SET
        checkpoints = {th}.checkpoints + excluded.checkpoints,
        latest_checkpoint_id = CASE
            WHEN {th}.latest_checkpoint_id IS NULL
                OR excluded.latest_checkpoint_id > {th}.latest_checkpoint_id
            THEN coalesce(excluded.latest_checkpoint_id, {th}.latest_checkpoint_id)
            ELSE {th}.latest_checkpoint_id END,
        flow_id = excluded.flow_id, updated_at = excluded.updated_at, last_actor = excluded.last_actor"""

# The fold's SQL, with {cp}, {bl}, {wr}, {th} for the four tables, {ns} for "this thread's namespace",
# {cols}/{wcols} for the checkpoint and write columns. Parameters are written :name.
_SQL = {
    "insert_checkpoint": """
        INSERT INTO {cp} ({cols}) VALUES ({values})
        ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO NOTHING""",
    # Saved again: the checkpoint and metadata are replaced, the parent stays the first one, as in
    # LangGraph's PostgreSQL saver (a re-save under a descendant cannot make the chain a loop).
    "update_checkpoint": """
        UPDATE {cp} SET checkpoint = :checkpoint, extra_type = :extra_type, extra = :extra,
            metadata = :metadata, run_id = :run_id, actor = :actor, saved_at = :saved_at, position = :position
        WHERE {ns} AND checkpoint_id = :checkpoint_id""",
    "insert_blob": """
        INSERT INTO {bl} (thread_id, checkpoint_ns, channel, version, type, blob)
        VALUES (:thread_id, :checkpoint_ns, :channel, :version, :type, :blob)
        ON CONFLICT (thread_id, checkpoint_ns, channel, version) DO NOTHING""",
    # A checkpoint, or a copy, brings a deleted namespace back: it is live again.
    "upsert_thread": _UPSERT_THREAD + ", deleted_at = NULL, deleted_by = NULL",
    # A write (a task of a run still going) leaves a deleted namespace's row as its deletion left it.
    "upsert_thread_written": _UPSERT_THREAD + " WHERE {th}.deleted_at IS NULL",
    "namespace_deleted": "SELECT 1 FROM {th} WHERE {ns} AND deleted_at IS NOT NULL",
    "insert_write": """
        INSERT INTO {wr} ({wcols})
        VALUES ({wvalues})
        ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO NOTHING""",
    "upsert_write": """
        INSERT INTO {wr} ({wcols})
        VALUES ({wvalues})
        ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE SET
            task_path = excluded.task_path, channel = excluded.channel, type = excluded.type,
            blob = excluded.blob""",
    # deleting
    "delete_checkpoints": "DELETE FROM {cp} WHERE {ns}",
    "delete_writes": "DELETE FROM {wr} WHERE {ns}",
    "delete_blobs": "DELETE FROM {bl} WHERE {ns}",
    "delete_checkpoints_before": "DELETE FROM {cp} WHERE {ns} AND checkpoint_id < :before",
    "delete_writes_before": "DELETE FROM {wr} WHERE {ns} AND checkpoint_id < :before",
    "delete_checkpoint": "DELETE FROM {cp} WHERE {ns} AND checkpoint_id = :checkpoint_id",
    "delete_checkpoint_writes": "DELETE FROM {wr} WHERE {ns} AND checkpoint_id = :checkpoint_id",
    "kept_versions": "SELECT checkpoint FROM {cp} WHERE {ns}",
    "blob_keys": "SELECT channel, version FROM {bl} WHERE {ns}",
    "delete_blob": "DELETE FROM {bl} WHERE {ns} AND channel = :channel AND version = :version",
    "orphan_parents": """
        UPDATE {cp} SET parent_checkpoint_id = NULL
        WHERE {ns} AND parent_checkpoint_id IS NOT NULL
            AND parent_checkpoint_id NOT IN (SELECT checkpoint_id FROM {cp} WHERE {ns})""",
    "recount_thread": """
        UPDATE {th} SET checkpoints = (SELECT count(*) FROM {cp} WHERE {ns}),
            latest_checkpoint_id = (SELECT max(checkpoint_id) FROM {cp} WHERE {ns}),
            updated_at = :at, last_actor = :actor
        WHERE {ns}""",
    "mark_deleted": """
        UPDATE {th} SET checkpoints = 0, latest_checkpoint_id = NULL, updated_at = :at, last_actor = :actor,
            deleted_at = :at, deleted_by = :actor
        WHERE {ns}""",
    # a namespace whose last checkpoint went (delete_for_runs) leaves the saver's view as a deleted one does
    "mark_emptied": """
        UPDATE {th} SET deleted_at = :at, deleted_by = :actor
        WHERE {ns} AND deleted_at IS NULL
            AND NOT EXISTS (SELECT 1 FROM {cp} WHERE {ns}) AND NOT EXISTS (SELECT 1 FROM {wr} WHERE {ns})""",
    # copying: every row of the source namespace the fold can see (the events before this one)
    "copy_checkpoints": """
        INSERT INTO {cp} ({cols})
        SELECT CAST(:thread_id AS TEXT), checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint,
            extra_type, extra, metadata, run_id, actor, saved_at, CAST(:position AS BIGINT)
        FROM {cp} WHERE thread_id = :source AND checkpoint_ns = :checkpoint_ns
        ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO NOTHING""",
    "copy_blobs": """
        INSERT INTO {bl} (thread_id, checkpoint_ns, channel, version, type, blob)
        SELECT CAST(:thread_id AS TEXT), checkpoint_ns, channel, version, type, blob
        FROM {bl} WHERE thread_id = :source AND checkpoint_ns = :checkpoint_ns
        ON CONFLICT (thread_id, checkpoint_ns, channel, version) DO NOTHING""",
    "copy_writes": """
        INSERT INTO {wr} ({wcols})
        SELECT CAST(:thread_id AS TEXT), checkpoint_ns, checkpoint_id, task_id, idx, task_path, channel,
            type, blob
        FROM {wr} WHERE thread_id = :source AND checkpoint_ns = :checkpoint_ns
        ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO NOTHING""",
}


@dataclass(frozen=True, slots=True)
class Tables:
    """The names of one build of the tables (the live ones, or a rebuild's)."""

    checkpoints: str
    blobs: str
    writes: str
    threads: str


class Statements:
    """The projection's SQL for one dialect and one build of its tables, written once."""

    def __init__(self, tables: Tables, dialect: str) -> None:
        self.dialect = dialect
        self._queries: dict[str, str] = {}
        self._fused: dict[str, str] = {}
        self.names = {
            "checkpoints": f'"{tables.checkpoints}"',
            "blobs": f'"{tables.blobs}"',
            "writes": f'"{tables.writes}"',
            "threads": f'"{tables.threads}"',
        }
        values = ", ".join(f":{name.strip()}" for name in _CHECKPOINT_COLUMNS.split(","))
        fill = {
            "cp": self.names["checkpoints"],
            "bl": self.names["blobs"],
            "wr": self.names["writes"],
            "th": self.names["threads"],
            "ns": "thread_id = :thread_id AND checkpoint_ns = :checkpoint_ns",
            "cols": _CHECKPOINT_COLUMNS,
            "wcols": _WRITE_COLUMNS,
            "values": values,
            "wvalues": ", ".join(f":{name.strip()}" for name in _WRITE_COLUMNS.split(",")),
        }
        fill["p"] = "{p}"  # the fused statements' prefix, filled in by ``fused``
        templates = {**_SQL}
        if dialect == "postgresql":
            templates.update({**postgresql_sql.SQL, **postgresql_sql.FUSED})
        self.sql = {
            name: driver_sql(" ".join(t.format(**fill).split()), dialect) for name, t in templates.items()
        }

    def __getitem__(self, name: str) -> str:
        return self.sql[name]

    def fused(self, name: str, prefix: str) -> str:
        """A CTE of ``postgresql_sql.FUSED`` with its CTE and parameter names prefixed."""
        key = f"{prefix}{name}"
        found = self._fused.get(key)
        if found is None:
            text = self.sql[name].replace("{p}", prefix)
            found = self._fused[key] = _PARAM.sub(lambda m: f"%({prefix}{m[1]}){m[2]}", text)
        return found

    def query(self, text: str) -> str:
        """Ad-hoc SQL over these tables (``{checkpoints}``, ``{blobs}``, ``{writes}``, ``{threads}``)."""
        found = self._queries.get(text)
        if found is None:
            found = driver_sql(text.format(**self.names), self.dialect)
            if len(self._queries) < 1000:
                self._queries[text] = found
        return found


class LangGraphProjection(Projection):
    """Inline projection of LangGraph checkpoints, blobs, pending writes and threads."""

    name: ClassVar[str] = "langgraph"
    version: ClassVar[int] = 2
    """2: writes saved to a deleted namespace stay out of the tables; a namespace emptied is deleted."""
    kind: ClassVar[str] = "inline"

    def __init__(self) -> None:
        super().__init__()
        self._statements: dict[str, Statements] = {}

    def targeting(self, suffix: str, tag: str) -> LangGraphProjection:
        clone = super().targeting(suffix, tag)
        clone._statements = {}
        return clone

    def define_tables(self, metadata: sa.MetaData) -> None:
        sa.Table(
            "langgraph_checkpoints",
            metadata,
            sa.Column("thread_id", KEY, primary_key=True),
            sa.Column("checkpoint_ns", KEY, primary_key=True),
            sa.Column("checkpoint_id", KEY, primary_key=True),
            sa.Column("parent_checkpoint_id", KEY),
            sa.Column("checkpoint", sa.Text, nullable=False),  # JSON text: the checkpoint without values
            sa.Column("extra_type", sa.Text),  # keys that are not JSON, serialised by LangGraph's serde
            sa.Column("extra", sa.LargeBinary),
            sa.Column("metadata", JSON, nullable=False),
            sa.Column("run_id", KEY),
            sa.Column("actor", sa.Text),
            sa.Column("saved_at", TIME, nullable=False),
            sa.Column("position", sa.BigInteger, nullable=False),  # the CheckpointSaved event
            sa.Index("ix_langgraph_checkpoints_run", "run_id"),
            # a whole thread's listing order (id, then namespace): a page reads its rows, sorts none;
            # added to a store built before it as the store opens (indexes.py), no rebuild
            sa.Index("ix_langgraph_checkpoints_thread", "thread_id", "checkpoint_id", "checkpoint_ns"),
        )
        sa.Table(
            "langgraph_blobs",
            metadata,
            sa.Column("thread_id", KEY, primary_key=True),
            sa.Column("checkpoint_ns", KEY, primary_key=True),
            sa.Column("channel", KEY, primary_key=True),
            sa.Column("version", KEY, primary_key=True),
            sa.Column("type", sa.Text, nullable=False),
            sa.Column("blob", sa.LargeBinary),
        )
        sa.Table(
            "langgraph_writes",
            metadata,
            sa.Column("thread_id", KEY, primary_key=True),
            sa.Column("checkpoint_ns", KEY, primary_key=True),
            sa.Column("checkpoint_id", KEY, primary_key=True),
            sa.Column("task_id", KEY, primary_key=True),
            sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("task_path", KEY, nullable=False),
            sa.Column("channel", KEY, nullable=False),
            sa.Column("type", sa.Text, nullable=False),
            sa.Column("blob", sa.LargeBinary),
        )
        sa.Table(
            "langgraph_threads",
            metadata,
            sa.Column("thread_id", KEY, primary_key=True),
            sa.Column("checkpoint_ns", KEY, primary_key=True),
            sa.Column("flow_id", sa.Text, nullable=False),
            sa.Column("checkpoints", sa.Integer, nullable=False),
            sa.Column("latest_checkpoint_id", KEY),
            sa.Column("created_at", TIME, nullable=False),
            sa.Column("updated_at", TIME, nullable=False),
            sa.Column("last_actor", sa.Text),
            sa.Column("deleted_at", TIME),
            sa.Column("deleted_by", sa.Text),
            # no index on updated_at: the row changes at every save, and an unindexed change is a
            # HOT update on PostgreSQL; listing threads groups them all anyway
        )

    def prepare(self, store: EventStore) -> None:
        """Create the tables; on a log that holds no LangGraph events yet, without reading it.

        Adding the saver to a store that already records other flows would
        otherwise rebuild from the whole log, to find nothing to fold.
        """
        with store.transaction() as tx:
            conn = tx.connection
            head = lock_appends(conn)
            if read_checkpoint(conn, self.name, lock=True) is None and not _has_graph_events(conn):
                tag = secrets.token_hex(4)
                for table in self.build_tables("", tag).values():
                    table.create(conn)
                write_checkpoint(store, conn, self, position=head, build=tag)
                return
        ensure(store, self)

    def statements(self, dialect: str) -> Statements:
        """The SQL of this projection's tables in ``dialect``."""
        found = self._statements.get(dialect)
        if found is None:
            names = Tables(
                *(
                    self.table(name).name
                    for name in (
                        "langgraph_checkpoints",
                        "langgraph_blobs",
                        "langgraph_writes",
                        "langgraph_threads",
                    )
                )
            )
            found = self._statements[dialect] = Statements(names, dialect)
        return found

    # -- folding ---------------------------------------------------------
    def apply(self, tx: Transaction, events: Sequence[RecordedEvent]) -> None:
        for event in events:
            if event.type not in GRAPH_EVENTS or not _keyed(event.data):
                continue
            if event.type in WRITE_EVENTS:
                self.on_writes(tx, event)
            else:
                getattr(self, f"on_{event.type}")(tx, event)

    apply_many = apply

    def on_CheckpointSaved(self, tx: Transaction, event: RecordedEvent) -> None:
        conn = tx.connection
        sql = self.statements(conn.dialect.name)
        saved = _checkpoint_params(event)
        if saved is None:
            return
        row, blobs, thread = saved
        if conn.dialect.name == "postgresql":
            execute(conn, sql["save_checkpoint"], {**row, **_blob_arrays(blobs), **thread})
            return
        added = execute(conn, sql["insert_checkpoint"], row)[1]
        if added == 0:
            execute(conn, sql["update_checkpoint"], row)
        if blobs:
            key = _key(event.data)
            rows = [
                {**key, "channel": c, "version": v, "type": kind, "blob": blob}
                for (c, v), (kind, blob) in blobs.items()
            ]
            execute(conn, sql["insert_blob"], rows, many=True)
        execute(conn, sql["upsert_thread"], {**thread, "added": max(added, 0)})

    def fuse(self, dialect: str, events: Sequence[RecordedEvent], prefix: str) -> FusedWrite | None:
        """A lone ``CheckpointSaved`` (a ``put``) as SQL in the append statement, on PostgreSQL.

        Events this projection does not fold need nothing; any other graph event
        takes the ordinary path.
        """
        if all(e.type not in GRAPH_EVENTS or not _keyed(e.data) for e in events):
            return NOTHING
        if dialect != "postgresql" or len(events) != 1 or events[0].type != CHECKPOINT_SAVED:
            return None
        event = events[0]
        saved = _checkpoint_params(event)
        if saved is None:
            return NOTHING
        row, blobs, thread = saved
        params = {**row, **_blob_arrays(blobs), **thread, "revision": event.revision}
        del params["position"]
        return FusedWrite(
            (self.statements(dialect).fused("fused_checkpoint", prefix),),
            {prefix + name: value for name, value in params.items()},
        )

    def on_writes(self, tx: Transaction, event: RecordedEvent) -> None:
        """``WritesSaved``, ``InterruptRecorded``, ``ResumeRecorded``: LangGraph's pending-write rules.

        A regular write whose ``(task_id, idx)`` is stored already is ignored (so
        is a second one in the same event); a write to a special channel
        (negative ``idx``) replaces the stored one (the last in the event wins).
        Writes to a deleted namespace (a task of a run still going) are in the
        log only: a deleted namespace holds no rows, so a copy or a checkpoint
        that brings it back under the same checkpoint ids finds none of them.
        """
        data, conn = event.data, tx.connection
        sql = self.statements(conn.dialect.name)
        if not isinstance(data.get("checkpoint_id"), str) or not isinstance(data.get("task_id"), str):
            return
        regular: dict[int, tuple[str, str, bytes | None]] = {}
        special: dict[int, tuple[str, str, bytes | None]] = {}
        for write in data.get("writes") or []:
            idx = write.get("idx") if isinstance(write, dict) else None
            if not isinstance(idx, int) or isinstance(idx, bool):
                continue
            value = (
                str(write.get("channel", "")),
                str(write.get("type") or "empty"),
                decode_blob(write.get("data")),
            )
            if idx >= 0:
                regular.setdefault(idx, value)
            else:
                special[idx] = value
        head = {
            **_key(data),
            "checkpoint_id": data["checkpoint_id"],
            "task_id": data["task_id"],
            "task_path": str(data.get("task_path") or ""),
        }
        thread = self._thread_params(event, latest=None)
        if conn.dialect.name == "postgresql":
            arrays: dict[str, list[Any]] = {}
            for prefix, group in (("r", regular), ("s", special)):
                arrays[f"{prefix}_idx"] = list(group)
                arrays[f"{prefix}_channel"] = [v[0] for v in group.values()]
                arrays[f"{prefix}_type"] = [v[1] for v in group.values()]
                arrays[f"{prefix}_blob"] = [v[2] for v in group.values()]
            execute(conn, sql["save_writes"], {**head, **arrays, **thread})
            return
        if execute(conn, sql["namespace_deleted"], _key(data))[0]:
            return
        for name, group in (("insert_write", regular), ("upsert_write", special)):
            rows = [
                {**head, "idx": idx, "channel": channel, "type": kind, "blob": blob}
                for idx, (channel, kind, blob) in group.items()
            ]
            if rows:
                execute(conn, sql[name], rows, many=True)
        execute(conn, sql["upsert_thread_written"], {**thread, "added": 0})

    def on_ThreadCopied(self, tx: Transaction, event: RecordedEvent) -> None:
        """Copy every row of the source namespace: the fold sees exactly the events before this one."""
        data, conn = event.data, tx.connection
        sql = self.statements(conn.dialect.name)
        source = data.get("source_thread_id")
        if not isinstance(source, str):
            return
        params = {**_key(data), "source": source, "position": event.position}
        for name in ("copy_checkpoints", "copy_blobs", "copy_writes"):
            execute(conn, sql[name], params)
        execute(conn, sql["upsert_thread"], {**self._thread_params(event, latest=None), "added": 0})
        execute(conn, sql["recount_thread"], self._recount_params(event))

    def on_CheckpointsDeleted(self, tx: Transaction, event: RecordedEvent) -> None:
        """Delete the listed checkpoints (or those older than ``before``), their writes and unused blobs."""
        data, conn = event.data, tx.connection
        sql = self.statements(conn.dialect.name)
        key = _key(data)
        before, ids = data.get("before"), data.get("checkpoint_ids")
        if isinstance(before, str):
            execute(conn, sql["delete_writes_before"], {**key, "before": before})
            execute(conn, sql["delete_checkpoints_before"], {**key, "before": before})
        elif isinstance(ids, list):
            rows = [{**key, "checkpoint_id": str(cid)} for cid in ids]
            if rows:
                execute(conn, sql["delete_checkpoint_writes"], rows, many=True)
                execute(conn, sql["delete_checkpoint"], rows, many=True)
        self._collect_blobs(conn, sql, key)
        execute(conn, sql["orphan_parents"], key)
        execute(conn, sql["recount_thread"], self._recount_params(event))
        execute(conn, sql["mark_emptied"], self._recount_params(event))

    def on_ThreadDeleted(self, tx: Transaction, event: RecordedEvent) -> None:
        data, conn = event.data, tx.connection
        sql = self.statements(conn.dialect.name)
        key = _key(data)
        for name in ("delete_writes", "delete_checkpoints", "delete_blobs"):
            execute(conn, sql[name], key)
        at = format_time(event.recorded_at)
        execute(conn, sql["mark_deleted"], {**key, "at": at, "actor": _actor(event)})

    # -- helpers -----------------------------------------------------------
    @staticmethod
    def _thread_params(event: RecordedEvent, *, latest: str | None) -> dict[str, Any]:
        return {
            **_key(event.data),
            "flow_id": event.flow_id,
            "latest": latest,
            "at": format_time(event.recorded_at),
            "actor": _actor(event),
        }

    @staticmethod
    def _recount_params(event: RecordedEvent) -> dict[str, Any]:
        return {**_key(event.data), "at": format_time(event.recorded_at), "actor": _actor(event)}

    @staticmethod
    def _collect_blobs(conn: sa.Connection, sql: Statements, key: dict[str, str]) -> None:
        """Delete the namespace's blobs that no remaining checkpoint refers to."""
        kept: set[tuple[str, str]] = set()
        for (text,) in execute(conn, sql["kept_versions"], key)[0]:
            versions = orjson.loads(text).get("channel_versions") or {}
            kept.update((str(channel), str(version)) for channel, version in versions.items())
        garbage = [
            {**key, "channel": channel, "version": version}
            for channel, version in execute(conn, sql["blob_keys"], key)[0]
            if (channel, version) not in kept
        ]
        if garbage:
            execute(conn, sql["delete_blob"], garbage, many=True)


def _has_graph_events(conn: sa.Connection) -> bool:
    """Whether the log holds any event this projection folds (a lookup in the type index)."""
    query = sa.select(flow_events.c.position).where(flow_events.c.type.in_(sorted(GRAPH_EVENTS))).limit(1)
    return conn.execute(query).first() is not None


def _checkpoint_params(
    event: RecordedEvent,
) -> tuple[dict[str, Any], dict[tuple[str, str], tuple[str, bytes | None]], dict[str, Any]] | None:
    """A ``CheckpointSaved``'s checkpoint row, its new values by (channel, version), its thread's row."""
    data = event.data
    if not isinstance(data.get("checkpoint_id"), str):
        return None
    metadata = data["metadata"] if isinstance(data.get("metadata"), dict) else {}
    extra = data["extra"] if isinstance(data.get("extra"), dict) else {}
    run_id = metadata.get("run_id")
    row = {
        **_key(data),
        "checkpoint_id": data["checkpoint_id"],
        "parent_checkpoint_id": _opt_str(data.get("parent_checkpoint_id")),
        "checkpoint": _json_text(data.get("checkpoint") or {}),
        "extra_type": _opt_str(extra.get("type")),
        "extra": decode_blob(extra.get("data")),
        "metadata": _json_text(metadata),
        "run_id": None if run_id is None else str(run_id),
        "actor": _actor(event),
        "saved_at": format_time(event.recorded_at),
        "position": event.position,
    }
    blobs: dict[tuple[str, str], tuple[str, bytes | None]] = {}
    for blob in data.get("blobs") or []:
        if isinstance(blob, dict) and "channel" in blob and "version" in blob:
            key = (str(blob["channel"]), str(blob["version"]))
            blobs.setdefault(key, (str(blob.get("type") or "empty"), decode_blob(blob.get("data"))))
    return row, blobs, LangGraphProjection._thread_params(event, latest=data["checkpoint_id"])


def _blob_arrays(blobs: dict[tuple[str, str], tuple[str, bytes | None]]) -> dict[str, list[Any]]:
    keys, values = list(blobs), list(blobs.values())
    return {
        "channels": [k[0] for k in keys],
        "versions": [k[1] for k in keys],
        "types": [v[0] for v in values],
        "blobs": [v[1] for v in values],
    }


def _keyed(data: dict[str, Any]) -> bool:
    return isinstance(data.get("thread_id"), str) and isinstance(data.get("checkpoint_ns", ""), str)


def _key(data: dict[str, Any]) -> dict[str, str]:
    return {"thread_id": data["thread_id"], "checkpoint_ns": data.get("checkpoint_ns") or ""}


def _actor(event: RecordedEvent) -> str | None:
    return _opt_str(event.metadata.get("actor"))


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _json_text(value: Any) -> str:
    """JSON with sorted keys: the same text whichever backend the event was read back from."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
