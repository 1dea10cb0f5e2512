"""PostgreSQL: the LangGraph read model's hot statements, one round trip each.

On SQLite a statement runs in-process in microseconds; on PostgreSQL each
one is a round trip to the server. So here folding a checkpoint (its row, its
new values, its thread's row) is one statement, and so is folding a task's
writes, and a read returns each checkpoint with its values and pending
writes, as LangGraph's own PostgreSQL saver does. Placeholders as in
``projections.langgraph._SQL``.
"""

from __future__ import annotations

_THREAD_UPSERT = """
    INSERT INTO {th} (thread_id, checkpoint_ns, flow_id, checkpoints, latest_checkpoint_id,
        created_at, updated_at, last_actor)
    SELECT CAST(:thread_id AS TEXT), CAST(:checkpoint_ns AS TEXT), CAST(:flow_id AS TEXT), {added},
        CAST(:latest AS TEXT), CAST(:at AS TEXT), CAST(:at AS TEXT), CAST(:actor AS TEXT){where}
    ON CONFLICT (thread_id, checkpoint_ns) DO UPDATE SET
        checkpoints = {th}.checkpoints + excluded.checkpoints,
        latest_checkpoint_id = CASE
            WHEN {th}.latest_checkpoint_id IS NULL
                OR excluded.latest_checkpoint_id > {th}.latest_checkpoint_id
            THEN coalesce(excluded.latest_checkpoint_id, {th}.latest_checkpoint_id)
            ELSE {th}.latest_checkpoint_id END,
        flow_id = excluded.flow_id, updated_at = excluded.updated_at, last_actor = excluded.last_actor"""
_REVIVED = ", deleted_at = NULL, deleted_by = NULL"
"""A checkpoint brings a deleted namespace back: it is live again."""
_STILL_LIVE = " WHERE {th}.deleted_at IS NULL"
"""A write (a task of a run still going) leaves a deleted namespace's row as its deletion left it."""

SQL = {
    # xmax is 0 in the row an INSERT made, not in one an ON CONFLICT UPDATE made.
    "save_checkpoint": """
        WITH saved AS (
            INSERT INTO {cp} ({cols}) VALUES ({values})
            ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO UPDATE SET
                checkpoint = excluded.checkpoint, extra_type = excluded.extra_type, extra = excluded.extra,
                metadata = excluded.metadata, run_id = excluded.run_id, actor = excluded.actor,
                saved_at = excluded.saved_at, position = excluded.position
            RETURNING (xmax = 0) AS inserted
        ), blobs AS (
            INSERT INTO {bl} (thread_id, checkpoint_ns, channel, version, type, blob)
            SELECT CAST(:thread_id AS TEXT), CAST(:checkpoint_ns AS TEXT), b.channel, b.version, b.type,
                b.blob
            FROM unnest(CAST(%(channels)b AS text[]), CAST(%(versions)b AS text[]), CAST(%(types)b AS text[]),
                        CAST(%(blobs)b AS bytea[])) AS b(channel, version, type, blob)
            ON CONFLICT (thread_id, checkpoint_ns, channel, version) DO NOTHING
        )"""
    + _THREAD_UPSERT.replace("{added}", "(SELECT count(*) FROM saved WHERE inserted)").replace("{where}", "")
    + _REVIVED,
    # A deleted namespace (``gone``) takes no writes: they stay in the log only.
    "save_writes": """
        WITH gone AS (
            SELECT 1 FROM {th} WHERE thread_id = CAST(:thread_id AS TEXT)
                AND checkpoint_ns = CAST(:checkpoint_ns AS TEXT) AND deleted_at IS NOT NULL
        ), regular AS (
            INSERT INTO {wr} ({wcols})
            SELECT CAST(:thread_id AS TEXT), CAST(:checkpoint_ns AS TEXT), CAST(:checkpoint_id AS TEXT),
                CAST(:task_id AS TEXT), w.idx, CAST(:task_path AS TEXT), w.channel, w.type, w.blob
            FROM unnest(CAST(%(r_idx)b AS int[]), CAST(%(r_channel)b AS text[]), CAST(%(r_type)b AS text[]),
                        CAST(%(r_blob)b AS bytea[])) AS w(idx, channel, type, blob)
            WHERE NOT EXISTS (SELECT 1 FROM gone)
            ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO NOTHING
        ), special AS (
            INSERT INTO {wr} ({wcols})
            SELECT CAST(:thread_id AS TEXT), CAST(:checkpoint_ns AS TEXT), CAST(:checkpoint_id AS TEXT),
                CAST(:task_id AS TEXT), w.idx, CAST(:task_path AS TEXT), w.channel, w.type, w.blob
            FROM unnest(CAST(%(s_idx)b AS int[]), CAST(%(s_channel)b AS text[]), CAST(%(s_type)b AS text[]),
                        CAST(%(s_blob)b AS bytea[])) AS w(idx, channel, type, blob)
            WHERE NOT EXISTS (SELECT 1 FROM gone)
            ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE SET
                task_path = excluded.task_path, channel = excluded.channel, type = excluded.type,
                blob = excluded.blob
        )"""
    + _THREAD_UPSERT.replace("{added}", "0").replace("{where}", "")
    + _STILL_LIVE,
}

_SAVED_AGAIN = """
    checkpoint = excluded.checkpoint, extra_type = excluded.extra_type, extra = excluded.extra,
    metadata = excluded.metadata, run_id = excluded.run_id, actor = excluded.actor,
    saved_at = excluded.saved_at, position = excluded.position"""
_APPENDED = " FROM appended AS a WHERE a.revision = CAST(:revision AS INTEGER)"

FUSED = {
    # save_checkpoint as CTEs of the append statement (eventstore.projection.FusedWrite): the event's
    # position comes from the append's ``appended`` rows, and nothing is written if it inserted none.
    # The tables in ``LangGraphProjection.tables`` order (blobs, checkpoints, threads): the order a
    # rebuild's swap locks them in.
    "fused_checkpoint": """
        {p}blobs AS (
            INSERT INTO {bl} (thread_id, checkpoint_ns, channel, version, type, blob)
            SELECT CAST(:thread_id AS TEXT), CAST(:checkpoint_ns AS TEXT), b.channel, b.version, b.type,
                b.blob
            FROM unnest(CAST(%(channels)b AS text[]), CAST(%(versions)b AS text[]),
                        CAST(%(types)b AS text[]), CAST(%(blobs)b AS bytea[]))
                AS b(channel, version, type, blob)
            WHERE EXISTS (SELECT 1 FROM appended)
            ON CONFLICT (thread_id, checkpoint_ns, channel, version) DO NOTHING
        ), {p}saved AS (
            INSERT INTO {cp} ({cols})
            SELECT CAST(:thread_id AS TEXT), CAST(:checkpoint_ns AS TEXT), CAST(:checkpoint_id AS TEXT),
                CAST(:parent_checkpoint_id AS TEXT), CAST(:checkpoint AS TEXT), CAST(:extra_type AS TEXT),
                CAST(:extra AS BYTEA), CAST(:metadata AS JSONB), CAST(:run_id AS TEXT),
                CAST(:actor AS TEXT), CAST(:saved_at AS TEXT), a.position"""
    + _APPENDED
    + """
            ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO UPDATE SET"""
    + _SAVED_AGAIN
    + """
            RETURNING (xmax = 0) AS inserted
        ), {p}thread AS ("""
    + _THREAD_UPSERT.replace("{added}", "(SELECT count(*) FROM {p}saved WHERE inserted)").replace(
        "{where}", _APPENDED
    )
    + _REVIVED
    + ")",
}

READ_COLUMNS = """
    c.thread_id, c.checkpoint_ns, c.checkpoint_id, c.parent_checkpoint_id, c.checkpoint, c.extra_type,
    c.extra, c.metadata,
    (SELECT array_agg(ARRAY[convert_to(b.channel, 'UTF8'), convert_to(b.version, 'UTF8'),
                            convert_to(b.type, 'UTF8'), b.blob])
     FROM jsonb_each_text(CAST(c.checkpoint AS jsonb) -> 'channel_versions') AS v
     CROSS JOIN LATERAL (
         SELECT s.channel, s.version, s.type, s.blob FROM {blobs} s
         WHERE s.thread_id = c.thread_id AND s.checkpoint_ns = c.checkpoint_ns
             AND s.channel = v.key COLLATE "C" AND s.version = v.value COLLATE "C"
         LIMIT 1) AS b) AS blobs,
    (SELECT array_agg(ARRAY[convert_to(w.task_id, 'UTF8'), convert_to(w.channel, 'UTF8'),
                            convert_to(w.type, 'UTF8'), w.blob, convert_to(w.task_path, 'UTF8'),
                            convert_to(CAST(w.idx AS TEXT), 'UTF8')])
     FROM {writes} w WHERE w.thread_id = c.thread_id AND w.checkpoint_ns = c.checkpoint_ns
         AND w.checkpoint_id = c.checkpoint_id) AS writes"""
"""A checkpoint row with its stored values (``channel, version, type, blob``) and its pending
writes (``task_id, channel, type, blob, task_path, idx``), as arrays of bytes.

Each value is one primary-key lookup: the ``LIMIT 1`` (the key is unique) keeps the planner from
flattening the lateral subquery into a join, which it ran as a hash join over every value the
namespace ever stored whenever its statistics were missing or stale (the table's first minutes,
or a thread that grew since the last ``ANALYZE``): a read's cost then grew with the thread."""


PAGE_WRITES = """
    (SELECT array_agg(ARRAY[convert_to(w.task_id, 'UTF8'), convert_to(w.channel, 'UTF8'),
                            convert_to(w.type, 'UTF8'), w.blob, convert_to(w.task_path, 'UTF8'),
                            convert_to(CAST(w.idx AS TEXT), 'UTF8')])
     FROM {writes} w WHERE w.thread_id = p.thread_id AND w.checkpoint_ns = p.checkpoint_ns
         AND w.checkpoint_id = p.checkpoint_id) AS writes"""

PAGE_BLOBS = """
    (SELECT array_agg(ARRAY[convert_to(k.thread_id, 'UTF8'), convert_to(k.checkpoint_ns, 'UTF8'),
                            convert_to(b.channel, 'UTF8'), convert_to(b.version, 'UTF8'),
                            convert_to(b.type, 'UTF8'), b.blob])
     FROM (SELECT DISTINCT p.thread_id, p.checkpoint_ns, v.key, v.value FROM page p
           CROSS JOIN jsonb_each_text(CAST(p.checkpoint AS jsonb) -> 'channel_versions') AS v) AS k
     CROSS JOIN LATERAL (
         SELECT s.channel, s.version, s.type, s.blob FROM {blobs} s
         WHERE s.thread_id = k.thread_id AND s.checkpoint_ns = k.checkpoint_ns
             AND s.channel = k.key COLLATE "C" AND s.version = k.value COLLATE "C"
         LIMIT 1) AS b)"""


def page_query(rows: str) -> str:
    """A page of checkpoints (``rows``: their columns, ordered and limited), its values read once.

    The checkpoints of a page share most of their values (a channel that did
    not change keeps its version): ``READ_COLUMNS`` would look each up, and
    send it, once per checkpoint. Here the page's distinct ``(thread,
    namespace, channel, version)`` are looked up once, as ``READ_COLUMNS``
    does (one primary-key lookup each), and come as one array on the page's
    first row (``thread, namespace, channel, version, type, blob``); each row
    has its pending writes. Still one statement: one snapshot.
    """
    order = "ORDER BY p.checkpoint_id DESC, p.checkpoint_ns DESC, p.thread_id DESC"
    return (
        f"WITH page AS MATERIALIZED ({rows}) SELECT p.*,{PAGE_WRITES}, "
        f"CASE WHEN row_number() OVER ({order}) = 1 THEN{PAGE_BLOBS} END AS blobs FROM page p {order}"
    )
