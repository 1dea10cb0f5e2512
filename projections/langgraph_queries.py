"""Questions over the LangGraph read model: checkpoints, blobs and writes for the saver, threads for people.

Every method takes the SQLAlchemy connection to ask on, so the saver can ask
several questions on one snapshot, or inside the write transaction it is
about to append in. Rows come back as stored: blobs are LangGraph's
serialised bytes, which the saver decodes with its serde.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from eventstore.checks import check_page
from eventstore.errors import ReadModelCorrupt
from eventstore.graph_checkpoints import flow_id_for

from .corruption import corrupt, unreadable
from .flow_queries import Page
from .langgraph import LangGraphProjection, Statements, blob_bytes, chunks, execute, json_value
from .langgraph_postgresql import READ_COLUMNS, page_query

_PAIRS_PER_QUERY = 200
CHECKPOINTS = "langgraph_checkpoints"
_DELTA_KEY = "counters_since_delta_snapshot"


@dataclass(frozen=True, slots=True)
class WriteRow:
    task_id: str
    channel: str
    type: str
    blob: bytes | None
    task_path: str
    idx: int


Blobs = dict[tuple[str, str], tuple[str, bytes | None]]
"""Stored values by ``(channel, version)``: ``(type, bytes)``, as LangGraph's serde made them."""


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    """A stored checkpoint, and once loaded, its stored values and pending writes."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    parent_checkpoint_id: str | None
    checkpoint: dict[str, Any]
    extra: tuple[str, bytes] | None
    metadata: dict[str, Any]
    blobs: Blobs | None = None
    writes: list[WriteRow] | None = None

    def with_values(self, blobs: Blobs, writes: list[WriteRow]) -> CheckpointRow:
        """This row loaded: ``dataclasses.replace`` without its per-call field checks (a page has 100)."""
        return CheckpointRow(
            self.thread_id,
            self.checkpoint_ns,
            self.checkpoint_id,
            self.parent_checkpoint_id,
            self.checkpoint,
            self.extra,
            self.metadata,
            blobs,
            writes,
        )

    def versions(self) -> list[tuple[str, str]]:
        """The ``(channel, version)`` of each channel, as the values are stored."""
        try:
            versions = self.checkpoint.get("channel_versions") or {}
            return [(str(channel), str(version)) for channel, version in versions.items()]
        except AttributeError as exc:  # the row was edited: not an object, or channel_versions is not
            shown = orjson.dumps(self.checkpoint).decode()
            raise self.corrupt("checkpoint", unreadable(shown, "an object with channel_versions")) from exc

    @property
    def key(self) -> dict[str, str]:
        return {
            "thread_id": self.thread_id,
            "checkpoint_ns": self.checkpoint_ns,
            "checkpoint_id": self.checkpoint_id,
        }

    def corrupt(self, column: str, problem: str, table: str = CHECKPOINTS, **key: Any) -> ReadModelCorrupt:
        """The error for this row's ``column`` (or that of a row of ``table`` it loaded, keyed by ``key``
        after the thread and namespace) that ``problem`` says is wrong."""
        if table != CHECKPOINTS:
            key = {"thread_id": self.thread_id, "checkpoint_ns": self.checkpoint_ns, **key}
        return corrupt(LangGraphProjection.name, table, key or self.key, column, problem)


@dataclass(frozen=True, slots=True)
class ThreadInfo:
    """A LangGraph thread as the read model knows it (all its namespaces together).

    ``namespaces`` counts those not deleted, or, for a deleted thread, those it had.
    """

    thread_id: str
    flow_id: str
    namespaces: int
    checkpoints: int
    latest_checkpoint_id: str | None
    created_at: str
    updated_at: str
    last_actor: str | None
    deleted_at: str | None
    deleted_by: str | None


_ROW_COLUMNS = (
    "c.thread_id, c.checkpoint_ns, c.checkpoint_id, c.parent_checkpoint_id, c.checkpoint, c.extra_type, "
    "c.extra, c.metadata"
)


class LangGraphQueries:
    """Reads of the LangGraph tables, as driver SQL on a connection the caller holds."""

    def __init__(self, projection: LangGraphProjection | None = None) -> None:
        self.projection = projection if projection is not None else LangGraphProjection()

    def _sql(self, conn: sa.Connection) -> Statements:
        return self.projection.statements(conn.dialect.name)

    # -- checkpoints ------------------------------------------------------------
    def checkpoint(
        self, conn: sa.Connection, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None
    ) -> CheckpointRow | None:
        """One checkpoint, or the namespace's latest (greatest id) when ``checkpoint_id`` is None."""
        where = "thread_id = :thread_id AND checkpoint_ns = :checkpoint_ns"
        params: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns}
        if checkpoint_id is None:
            rest = f" WHERE {where} ORDER BY checkpoint_id DESC LIMIT 1"
        else:
            rest = f" WHERE {where} AND checkpoint_id = :checkpoint_id"
            params["checkpoint_id"] = checkpoint_id
        rows = self._rows(conn, f"{_select(conn)}{rest}", params, rest)
        return self.load(conn, [_row(rows[0])])[0] if rows else None

    def checkpoints(
        self,
        conn: sa.Connection,
        *,
        thread_id: str | None,
        checkpoint_ns: str | None,
        checkpoint_id: str | None,
        before: str | None,
        metadata: Mapping[str, Any] | None,
        after: tuple[str, str, str] | None,
        limit: int,
    ) -> list[CheckpointRow]:
        """A page of checkpoints, newest id first, after the keyset cursor ``after``.

        ``metadata`` narrows the rows in SQL (containment on PostgreSQL,
        scalar equality on SQLite); the caller still checks each row exactly,
        then ``load``s the ones it keeps (PostgreSQL has loaded them already).
        """
        where: list[str] = []
        params: dict[str, Any] = {"limit": limit}
        for column, value in (
            ("thread_id", thread_id),
            ("checkpoint_ns", checkpoint_ns),
            ("checkpoint_id", checkpoint_id),
        ):
            if value is not None:
                where.append(f"{column} = :{column}")
                params[column] = value
        if before is not None:
            where.append("checkpoint_id < :before")
            params["before"] = before
        if after is not None and thread_id is not None and checkpoint_ns is not None:
            where.append("checkpoint_id < :a_id")  # one namespace: the id alone orders it
            params["a_id"] = after[0]
        elif after is not None:
            where.append("(checkpoint_id, checkpoint_ns, thread_id) < (:a_id, :a_ns, :a_thread)")
            params.update(a_id=after[0], a_ns=after[1], a_thread=after[2])
        order = "ORDER BY checkpoint_id DESC, checkpoint_ns DESC, thread_id DESC"
        plain = f"SELECT {_ROW_COLUMNS} FROM {{checkpoints}} c"
        # the rows a failed read is looked through for a corrupt one: the filter may have met it anywhere
        unfiltered = f"{_where(where)} {order}" + ("" if metadata else " LIMIT :limit")
        if metadata:
            where.extend(_metadata_filter(conn.dialect.name, metadata, params))
        clause = _where(where)
        if thread_id is not None and checkpoint_ns is not None:
            text = f"{plain}{clause} {order} LIMIT :limit"
        else:
            text = _sorted_page(plain, clause, order)
        if conn.dialect.name != "postgresql":
            return [_row(row) for row in self._rows(conn, text, params, unfiltered)]
        return _page_rows(self._rows(conn, page_query(text), params, unfiltered))

    def _rows(self, conn: sa.Connection, text: str, params: dict[str, Any], rest: str) -> list[Any]:
        """The rows of a read of checkpoints. One the database failed (PostgreSQL casts ``checkpoint``
        to ``jsonb``, SQLite's ``json_extract`` reads ``metadata``) raises the ``ReadModelCorrupt``
        of the first row that cannot be read of those ``rest`` (``WHERE...``) selects as stored."""
        sql = self._sql(conn)
        try:
            return execute(conn, sql.query(text), params)[0]
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated or conn.invalidated:  # lost: nothing to look into it on
                raise
            try:
                stored = execute(
                    conn, sql.query(f"SELECT {_ROW_COLUMNS} FROM {{checkpoints}} c{rest}"), params
                )[0]
            except sa.exc.DBAPIError:
                stored = []  # (a transaction the failure aborted) say why the read failed, not this
            for row in stored:
                _row(row).versions()  # raises the row's ReadModelCorrupt
            raise exc

    def load(self, conn: sa.Connection, rows: Sequence[CheckpointRow]) -> list[CheckpointRow]:
        """The rows with their stored values and pending writes: two queries per namespace."""
        groups: dict[tuple[str, str], list[CheckpointRow]] = {}
        for row in rows:
            if row.blobs is None or row.writes is None:
                groups.setdefault((row.thread_id, row.checkpoint_ns), []).append(row)
        loaded: dict[tuple[str, str, str], CheckpointRow] = {}
        for (thread_id, checkpoint_ns), members in groups.items():
            versions = [row.versions() for row in members]
            keys = [key for row_versions in versions for key in row_versions]
            blobs = self.blobs(conn, thread_id, checkpoint_ns, keys) if keys else {}
            writes = self.writes(conn, thread_id, checkpoint_ns, [row.checkpoint_id for row in members])
            for row, row_versions in zip(members, versions, strict=True):
                mine = {key: blobs[key] for key in row_versions if key in blobs}
                loaded[row.thread_id, row.checkpoint_ns, row.checkpoint_id] = row.with_values(
                    mine, writes.get(row.checkpoint_id, [])
                )
        return [loaded.get((row.thread_id, row.checkpoint_ns, row.checkpoint_id), row) for row in rows]

    def blobs(
        self, conn: sa.Connection, thread_id: str, checkpoint_ns: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[str, bytes | None]]:
        """Stored values by ``(channel, version)``; keys without a stored value are left out."""
        found: dict[tuple[str, str], tuple[str, bytes | None]] = {}
        for part in chunks(list(dict.fromkeys(keys)), _PAIRS_PER_QUERY):
            text, params = self._pairs_query(
                conn, "b.channel, b.version, b.type, b.blob", thread_id, checkpoint_ns, part
            )
            for channel, version, kind, blob in execute(conn, text, params)[0]:
                found[channel, version] = (kind, blob_bytes(blob))
        return found

    def _pairs_query(
        self,
        conn: sa.Connection,
        columns: str,
        thread_id: str,
        checkpoint_ns: str,
        keys: Sequence[tuple[str, str]],
    ) -> tuple[str, dict[str, Any]]:
        """One primary-key lookup per ``(channel, version)``, whatever the thread's size.

        The keys are a ``VALUES`` list the ``CROSS JOIN`` makes SQLite loop
        over: given them as ``OR``-ed pairs, it scanned the namespace's every
        stored value instead (one read of the latest checkpoint took a
        millisecond at a thousand checkpoints, and grew with the thread).
        """
        params: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns}
        pairs = []
        for i, (channel, version) in enumerate(keys):
            params[f"c{i}"], params[f"v{i}"] = channel, version
            pairs.append(f"(:c{i}, :v{i})")
        text = (
            f"SELECT {columns} FROM (VALUES {', '.join(pairs)}) AS k CROSS JOIN {{blobs}} b "
            "WHERE b.thread_id = :thread_id AND b.checkpoint_ns = :checkpoint_ns "
            "AND b.channel = k.column1 AND b.version = k.column2"
        )
        return self._sql(conn).query(text), params

    def writes(
        self, conn: sa.Connection, thread_id: str, checkpoint_ns: str, checkpoint_ids: Sequence[str]
    ) -> dict[str, list[WriteRow]]:
        """The pending writes of these checkpoints, unordered."""
        found: dict[str, list[WriteRow]] = {}
        for part in chunks(list(dict.fromkeys(checkpoint_ids)), _PAIRS_PER_QUERY):
            params: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns}
            params.update({f"i{i}": checkpoint_id for i, checkpoint_id in enumerate(part)})
            marks = ", ".join(f":i{i}" for i in range(len(part)))
            text = (
                "SELECT checkpoint_id, task_id, channel, type, blob, task_path, idx FROM {writes} "
                "WHERE thread_id = :thread_id AND checkpoint_ns = :checkpoint_ns "
                f"AND checkpoint_id IN ({marks})"
            )
            for checkpoint_id, *rest in execute(conn, self._sql(conn).query(text), params)[0]:
                task_id, channel, kind, blob, task_path, idx = rest
                found.setdefault(checkpoint_id, []).append(
                    WriteRow(task_id, channel, kind, blob_bytes(blob), task_path, idx)
                )
        return found

    def task_writes(
        self, conn: sa.Connection, thread_id: str, checkpoint_ns: str, checkpoint_id: str, task_id: str
    ) -> dict[int, tuple[str, str, bytes | None]]:
        """A task's stored writes on a checkpoint by ``idx``: ``(channel, type, blob)``."""
        text = (
            "SELECT idx, channel, type, blob FROM {writes} WHERE thread_id = :thread_id "
            "AND checkpoint_ns = :checkpoint_ns AND checkpoint_id = :checkpoint_id AND task_id = :task_id"
        )
        params = {
            "thread_id": thread_id,
            "checkpoint_ns": checkpoint_ns,
            "checkpoint_id": checkpoint_id,
            "task_id": task_id,
        }
        rows = execute(conn, self._sql(conn).query(text), params)[0]
        return {idx: (channel, kind, blob_bytes(blob)) for idx, channel, kind, blob in rows}

    # -- for deleting, copying and pruning -------------------------------------
    def live_namespaces(self, conn: sa.Connection, thread_id: str) -> list[tuple[str, str, int, int]]:
        """``(namespace, flow_id, checkpoints, writes)`` of a thread's namespaces not deleted."""
        text = (
            "SELECT t.checkpoint_ns, t.flow_id, t.checkpoints, (SELECT count(*) FROM {writes} w "
            "WHERE w.thread_id = t.thread_id AND w.checkpoint_ns = t.checkpoint_ns) FROM {threads} t "
            "WHERE t.thread_id = :thread_id AND t.deleted_at IS NULL ORDER BY t.checkpoint_ns"
        )
        rows = execute(conn, self._sql(conn).query(text), {"thread_id": thread_id})[0]
        return [(ns, flow_id, int(count), int(writes)) for ns, flow_id, count, writes in rows]

    def heads(self, conn: sa.Connection, thread_id: str) -> list[tuple[str, str, int, str | None]]:
        """``(namespace, latest checkpoint id, checkpoints, root)`` for each namespace with checkpoints.

        ``root`` is the root graph's checkpoint that the latest one's subgraph
        call started from (its metadata's ``parents[""]``) when that one is
        saved, else None.
        """
        text = (
            "SELECT h.checkpoint_ns, h.latest, h.n, c.metadata FROM (SELECT checkpoint_ns, "
            "max(checkpoint_id) AS latest, count(*) AS n FROM {checkpoints} WHERE thread_id = :thread_id "
            "GROUP BY checkpoint_ns) h JOIN {checkpoints} c ON c.thread_id = :thread_id "
            "AND c.checkpoint_ns = h.checkpoint_ns AND c.checkpoint_id = h.latest ORDER BY h.checkpoint_ns"
        )
        rows = execute(conn, self._sql(conn).query(text), {"thread_id": thread_id})[0]
        roots = {ns: _root(json_value(metadata)) for ns, _, _, metadata in rows}
        saved = self._saved_roots(conn, thread_id, sorted({r for r in roots.values() if r is not None}))
        return [
            (ns, latest, int(count), roots[ns] if roots[ns] in saved else None)
            for ns, latest, count, _ in rows
        ]

    def _saved_roots(self, conn: sa.Connection, thread_id: str, checkpoint_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for part in chunks(checkpoint_ids, _PAIRS_PER_QUERY):
            params: dict[str, Any] = {"thread_id": thread_id}
            params.update({f"i{i}": checkpoint_id for i, checkpoint_id in enumerate(part)})
            marks = ", ".join(f":i{i}" for i in range(len(part)))
            text = (
                "SELECT checkpoint_id FROM {checkpoints} WHERE thread_id = :thread_id "
                f"AND checkpoint_ns = '' AND checkpoint_id IN ({marks})"
            )
            found.update(row[0] for row in execute(conn, self._sql(conn).query(text), params)[0])
        return found

    def run_checkpoints(self, conn: sa.Connection, run_ids: Sequence[str]) -> list[tuple[str, str, str, str]]:
        """``(thread, namespace, checkpoint id, run id)`` of the checkpoints the runs saved."""
        found: list[tuple[str, str, str, str]] = []
        for part in chunks(list(dict.fromkeys(run_ids)), _PAIRS_PER_QUERY):
            params = {f"r{i}": run_id for i, run_id in enumerate(part)}
            marks = ", ".join(f":r{i}" for i in range(len(part)))
            text = (
                "SELECT thread_id, checkpoint_ns, checkpoint_id, run_id FROM {checkpoints} "
                f"WHERE run_id IN ({marks}) ORDER BY thread_id, checkpoint_ns, checkpoint_id"
            )
            found.extend(tuple(row) for row in execute(conn, self._sql(conn).query(text), params)[0])
        return found

    def delta_threads(self, conn: sa.Connection, thread_ids: Sequence[str]) -> list[str]:
        """Which of these threads use a LangGraph ``DeltaChannel`` (keep_latest cannot prune them)."""
        if conn.dialect.name == "postgresql":
            test = f"metadata ? '{_DELTA_KEY}'"
        else:
            test = f"json_type(metadata, '$.{_DELTA_KEY}') IS NOT NULL"
        found: list[str] = []
        for part in chunks(list(dict.fromkeys(thread_ids)), _PAIRS_PER_QUERY):
            params = {f"t{i}": thread_id for i, thread_id in enumerate(part)}
            marks = ", ".join(f":t{i}" for i in range(len(part)))
            text = f"SELECT DISTINCT thread_id FROM {{checkpoints}} WHERE thread_id IN ({marks}) AND {test}"
            found.extend(row[0] for row in execute(conn, self._sql(conn).query(text), params)[0])
        return sorted(found)

    # -- threads ----------------------------------------------------------------
    def threads(
        self, conn: sa.Connection, *, offset: int = 0, limit: int = 50, include_deleted: bool = False
    ) -> Page[ThreadInfo]:
        """Threads, most recently active first; deleted ones only with ``include_deleted``.

        Counting and choosing the page group only the sort keys; what a thread
        shows (its namespaces, checkpoints, last actor...) is computed for the
        page's threads alone, never for every thread of the store. There is
        no index on ``updated_at`` (see the table), so choosing still sorts
        every thread.
        """
        check_page(offset, limit)
        t = self.projection.table("langgraph_threads")
        deleted = sa.func.count(t.c.deleted_at) == sa.func.count()  # every namespace deleted
        updated_at = sa.func.max(t.c.updated_at)
        keys = sa.select(t.c.thread_id).group_by(t.c.thread_id)
        if not include_deleted:
            keys = keys.having(sa.not_(deleted))
        total = conn.execute(sa.select(sa.func.count()).select_from(keys.subquery())).scalar_one()
        page = (
            keys.add_columns(updated_at)
            .order_by(updated_at.desc(), t.c.thread_id)
            .offset(offset)
            .limit(limit)
            .subquery("page")
        )
        inner = sa.alias(t, "latest")
        last_actor = (
            sa.select(inner.c.last_actor)
            .where(inner.c.thread_id == t.c.thread_id)
            .order_by(inner.c.updated_at.desc(), inner.c.checkpoint_ns)
            .limit(1)
            .scalar_subquery()
        )
        live = sa.func.count() - sa.func.count(t.c.deleted_at)  # prune deletes subgraph calls' namespaces
        query = (
            sa.select(
                t.c.thread_id,
                sa.case((deleted, sa.func.count()), else_=live).label("namespaces"),
                sa.func.sum(t.c.checkpoints).label("checkpoints"),
                sa.func.max(sa.case((t.c.checkpoint_ns == "", t.c.latest_checkpoint_id))).label("latest"),
                sa.func.min(t.c.created_at).label("created_at"),
                updated_at.label("updated_at"),
                last_actor.label("last_actor"),
                sa.case((deleted, sa.func.max(t.c.deleted_at))).label("deleted_at"),
                sa.case((deleted, sa.func.max(t.c.deleted_by))).label("deleted_by"),
            )
            .select_from(page.join(t, t.c.thread_id == page.c.thread_id))
            .group_by(t.c.thread_id)
        )
        rows = conn.execute(query.order_by(updated_at.desc(), t.c.thread_id)).all()
        items = [
            ThreadInfo(
                thread_id=row.thread_id,
                flow_id=flow_id_for(row.thread_id),
                namespaces=int(row.namespaces),
                checkpoints=int(row.checkpoints or 0),
                latest_checkpoint_id=row.latest,
                created_at=row.created_at,
                updated_at=row.updated_at,
                last_actor=row.last_actor,
                deleted_at=row.deleted_at,
                deleted_by=row.deleted_by,
            )
            for row in rows
        ]
        return Page(items, total, offset, limit)

    def flows(self, conn: sa.Connection, thread_id: str) -> dict[str, str]:
        """The flow of each namespace of a thread, by namespace."""
        t = self.projection.table("langgraph_threads")
        query = sa.select(t.c.checkpoint_ns, t.c.flow_id).where(t.c.thread_id == thread_id)
        return {ns: flow_id for ns, flow_id in conn.execute(query.order_by(t.c.checkpoint_ns))}


def _where(conditions: Sequence[str]) -> str:
    return f" WHERE {' AND '.join(conditions)}" if conditions else ""


def _select(conn: sa.Connection) -> str:
    if conn.dialect.name == "postgresql":
        return f"SELECT {READ_COLUMNS} FROM {{checkpoints}} c"
    return f"SELECT {_ROW_COLUMNS} FROM {{checkpoints}} c"


def _sorted_page(select: str, clause: str, order: str) -> str:
    """A page across namespaces (or threads): the keys sorted first, then only their rows read.

    The primary key (thread, namespace, id) orders one namespace's rows by id,
    not a thread's: their page is a sort of every matching row. Sorting the
    keys alone (read from the index) and then looking up the page's rows by
    key spares reading and sorting each checkpoint's text and metadata, and,
    on PostgreSQL, computes the values and writes of the page's rows only.
    """
    keys = f"SELECT thread_id, checkpoint_ns, checkpoint_id FROM {{checkpoints}}{clause} {order} LIMIT :limit"
    join = (
        "c.thread_id = k.thread_id AND c.checkpoint_ns = k.checkpoint_ns "
        "AND c.checkpoint_id = k.checkpoint_id"
    )
    outer = "ORDER BY c.checkpoint_id DESC, c.checkpoint_ns DESC, c.thread_id DESC"
    return f"{select} JOIN ({keys}) k ON {join} {outer}"


def _page_rows(rows: Sequence[Sequence[Any]]) -> list[CheckpointRow]:
    """PostgreSQL's page (``langgraph_postgresql.page_query``): rows loaded, each its own values."""
    if not rows:
        return []
    stored = {
        (thread.decode(), ns.decode(), channel.decode(), version.decode()): (kind.decode(), blob_bytes(blob))
        for row in rows
        for thread, ns, channel, version, kind, blob in row[-1] or []  # the first row's only
    }
    page = []
    for row in rows:
        loaded = _row(row[:-1])
        mine = {}
        for channel, version in loaded.versions():
            found = stored.get((loaded.thread_id, loaded.checkpoint_ns, channel, version))
            if found is not None:
                mine[channel, version] = found
        page.append(loaded.with_values(mine, _writes(row[-2])))
    return page


def _row(row: Sequence[Any]) -> CheckpointRow:
    """A stored row; with the arrays of PostgreSQL's one-statement read, loaded too."""
    thread_id, ns, checkpoint_id, parent, checkpoint, extra_type, extra, metadata, *more = row
    column = "checkpoint"
    try:
        checkpoint_value = orjson.loads(checkpoint)
        column = "metadata"
        metadata_value = json_value(metadata)
    except orjson.JSONDecodeError as exc:  # edited by hand, a migration, a restore
        key = {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}
        stored = checkpoint if column == "checkpoint" else metadata
        raise corrupt(LangGraphProjection.name, CHECKPOINTS, key, column, unreadable(stored, "JSON")) from exc
    blobs: Blobs | None = None
    writes: list[WriteRow] | None = None
    if len(more) == 2:
        blobs = {
            (channel.decode(), version.decode()): (kind.decode(), blob_bytes(blob))
            for channel, version, kind, blob in more[0] or []
        }
        writes = _writes(more[1])
    return CheckpointRow(
        thread_id,
        ns,
        checkpoint_id,
        parent,
        checkpoint_value,
        None if extra_type is None or extra is None else (extra_type, bytes(extra)),
        metadata_value,
        blobs,
        writes,
    )


def _writes(stored: Sequence[Sequence[bytes]] | None) -> list[WriteRow]:
    """Pending writes from PostgreSQL's array (``task_id, channel, type, blob, task_path, idx``)."""
    return [
        WriteRow(task.decode(), channel.decode(), kind.decode(), blob_bytes(blob), path.decode(), int(idx))
        for task, channel, kind, blob, path, idx in stored or []
    ]


def _root(metadata: Any) -> str | None:
    """The root graph's checkpoint a subgraph's checkpoint names as its parent (``parents[""]``)."""
    parents = metadata.get("parents") if isinstance(metadata, dict) else None
    root = parents.get("") if isinstance(parents, dict) else None
    return root if isinstance(root, str) else None


def _metadata_filter(dialect: str, metadata: Mapping[str, Any], params: dict[str, Any]) -> list[str]:
    """SQL that keeps every row whose metadata could equal the filter (never fewer).

    The saver then checks each row with Python's ``==``, as LangGraph's
    ``InMemorySaver`` does: ``None`` matches a missing key too, and ``1``,
    ``1.0`` and ``True`` are equal. Values SQL could not compare that way
    are left to that check alone.
    """
    if dialect == "postgresql":
        return _contains(metadata, params)
    out = []
    for i, (key, value) in enumerate(metadata.items()):
        if not isinstance(key, str) or not key.isidentifier():
            continue
        # json_extract gives JSON's true as 1: equal to 1 and 1.0 in SQL as True is in Python
        if _exact_number(value) or (isinstance(value, str) and _plain_text(value)):
            params[f"m{i}"] = int(value) if isinstance(value, bool) else value
            out.append(f"json_extract(metadata, '$.{key}') = :m{i}")
    return out


def _contains(metadata: Mapping[str, Any], params: dict[str, Any]) -> list[str]:
    """``jsonb`` containment for the filter's keys whose equality containment implies.

    Containment tells ``true`` from ``1``, which Python's ``==`` does not: a
    0, 1 or bool is looked for as either. ``None`` (a missing key matches too)
    is left out.
    """
    contained: dict[str, Any] = {}
    either: list[str] = []
    for i, (key, value) in enumerate(metadata.items()):
        if not isinstance(key, str) or not _plain_text(key) or value is None:
            continue
        if _exact_number(value) and value in (0, 1):
            names = [f"mf{i}", f"mf{i}b"]
            params[names[0]] = orjson.dumps({key: int(value)}).decode()
            params[names[1]] = orjson.dumps({key: bool(value)}).decode()
            either.append("(" + " OR ".join(f"metadata @> CAST(:{n} AS jsonb)" for n in names) + ")")
        elif _containable(value):
            contained[key] = value
    if contained:
        params["metadata_filter"] = orjson.dumps(contained).decode()
        either.insert(0, "metadata @> CAST(:metadata_filter AS jsonb)")
    return either


def _containable(value: Any) -> bool:
    """A value that, if the row's value equals it, ``jsonb`` containment finds (no 0, 1 or bool in it)."""
    if value is None:
        return True
    if isinstance(value, str):
        return _plain_text(value)
    if _exact_number(value):
        return value not in (0, 1)
    if isinstance(value, list | tuple):
        return all(_containable(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_text(k) and _containable(v) for k, v in value.items())
    return False


def _exact_number(value: Any) -> bool:
    """A bool, or a number SQL compares as Python does: within 2**53, a float's exact ints (no NaN)."""
    if isinstance(value, bool):
        return True
    return isinstance(value, int | float) and abs(value) <= 2**53


def _plain_text(text: str) -> bool:
    """Text the database can compare: no NUL (``jsonb`` refuses it), no lone surrogate (not UTF-8)."""
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
