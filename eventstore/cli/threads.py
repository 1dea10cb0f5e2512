"""Command-line commands for LangGraph checkpoints: ``threads`` and ``import-threads``.

LangGraph has no API that lists threads; the read model does
(``projections.langgraph_queries.LangGraphQueries.threads``). The command is
that one query plus formatting, and needs no LangGraph installed.
``import-threads`` is ``import_checkpoints`` from LangGraph's own SQLite or
PostgreSQL saver, which it needs installed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa

from ..errors import InvalidInput, StorageError
from .output import cut, echo, echo_json, printable
from .params import POSITION


def register(main: click.Group, open_store: Any, errors: Any) -> None:
    """Add the commands to the ``eventstore`` group."""

    @main.command()
    @click.option(
        "--limit", default=50, show_default=True, type=click.IntRange(1, 1000), help="Threads per page."
    )
    @click.option("--offset", default=0, type=POSITION, help="Threads to skip.")
    @click.option("--deleted", "include_deleted", is_flag=True, help="Also list deleted threads.")
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per thread.")
    @click.pass_context
    def threads(ctx: click.Context, limit: int, offset: int, include_deleted: bool, as_json: bool) -> None:
        """LangGraph threads checkpointed in this store, most recently active first.

        FLOW is the root graph's flow: `eventstore history FLOW` shows the
        thread's checkpoints, writes, interrupts, resumes and deletions.
        """
        from projections.langgraph_queries import LangGraphQueries

        queries = LangGraphQueries()
        with open_store(ctx) as store, errors(), store.reading() as conn:
            if not sa.inspect(conn).has_table(queries.projection.table("langgraph_threads").name):
                page = None
            else:
                page = queries.threads(conn, offset=offset, limit=limit, include_deleted=include_deleted)
        items, total = (page.items, page.total) if page is not None else ([], 0)
        if not total:
            note = "no LangGraph threads in this store"
        elif not items:
            note = f"no threads at --offset {offset}: {total} in all"
        elif page is not None and page.has_next:
            note = f"{len(items)} of {total} threads; next page: --offset {offset + limit}"
        else:
            note = ""
        if as_json:  # one object per thread on stdout (none: no lines); the note, for people, on stderr
            for item in items:
                echo_json({name: getattr(item, name) for name in item.__slots__})
        elif items:
            echo(f"{'THREAD':<28} {'CHECKPOINTS':>11} {'NS':>3}  {'UPDATED':<27} {'LAST ACTOR':<16} FLOW")
            for item in items:
                state = f" (deleted by {printable(item.deleted_by)})" if item.deleted_at else ""
                echo(
                    f"{cut(item.thread_id, 28):<28} {item.checkpoints:>11} {item.namespaces:>3}  "
                    f"{printable(item.updated_at):<27} "
                    f"{printable(item.last_actor or '-'):<16} {printable(item.flow_id)}{state}"
                )
        if note:
            echo(note, err=as_json)

    @main.command("import-threads")
    @click.argument("source")
    @click.option("--thread", "thread_ids", multiple=True, help="Import this thread only (repeatable).")
    @click.option(
        # IMPORT_ACTOR, spelt out: importing it would import LangGraph whenever the CLI starts
        "--actor",
        default="import:langgraph",
        show_default=True,
        help="Who the imported events name.",
    )
    @click.option(
        "--skip-conflicts",
        is_flag=True,
        help="Import the other threads when this store ran some itself, and name those left out.",
    )
    @click.pass_context
    def import_threads(
        ctx: click.Context, source: str, thread_ids: tuple[str, ...], actor: str, skip_conflicts: bool
    ) -> None:
        """Copy the threads of LangGraph's SqliteSaver or PostgresSaver into this store.

        SOURCE is that saver's database: a SQLite file (a path or sqlite:///path)
        or a postgresql:// URL; it is only read. Each checkpoint and its pending
        writes become events as if the graph had run here, checked by reading
        them back; a thread waiting on an interrupt can be resumed on
        EventStoreSaver. Checkpoints already here are skipped, so an import cut
        short is finished by running it again. A thread this store holds other
        checkpoints of (it ran the thread itself) is a conflict: the import is
        refused before anything is written, unless --skip-conflicts.
        """
        from projections.langgraph import LangGraphProjection

        from ..integrations.langgraph import EventStoreSaver, import_checkpoints

        with (
            errors(),
            _langgraph_saver(source) as (saver_of_source, listed),
            open_store(ctx, may_create=True, projections=[LangGraphProjection()]) as store,
        ):
            done = import_checkpoints(
                saver_of_source,
                EventStoreSaver(store),
                thread_ids=thread_ids or listed,
                actor=actor,
                skip_conflicts=skip_conflicts,
            )
        echo(str(done))


@contextmanager
def _langgraph_saver(source: str) -> Iterator[tuple[Any, list[str]]]:
    """LangGraph's own saver on ``source``, read only, and its thread ids (read by SQL: listing
    them through the saver decodes every checkpoint, and ``PostgresSaver`` holds them all at once);
    a failure of its database (opening it, or reading it inside the ``with``) said in one line."""
    try:
        if source.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
            with _postgres_saver(source.replace("postgresql+psycopg://", "postgresql://", 1)) as found:
                yield found
        else:
            with _sqlite_saver(source) as found:
                yield found
    except (sqlite3.Error, OSError) as exc:
        raise StorageError(f"the source database failed: {printable(str(exc).splitlines()[0])}") from exc
    except Exception as exc:
        if not type(exc).__module__.startswith("psycopg"):
            raise
        raise StorageError(f"the source database failed: {printable(str(exc).splitlines()[0])}") from exc


_THREADS = "SELECT DISTINCT thread_id FROM checkpoints ORDER BY thread_id"


@contextmanager
def _postgres_saver(url: str) -> Iterator[tuple[Any, list[str]]]:
    try:
        from langgraph.checkpoint.postgres import PostgresSaver
    except ImportError as exc:
        raise InvalidInput("reading PostgresSaver's tables needs langgraph-checkpoint-postgres") from exc
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        found = conn.execute("SELECT to_regclass('checkpoint_writes')").fetchone()
        if found is None or found[0] is None:
            raise InvalidInput(f"{url} holds no LangGraph PostgresSaver tables (checkpoint_writes)")
        threads = [str(thread_id) for (thread_id,) in conn.execute(_THREADS)]
    with PostgresSaver.from_conn_string(url) as saver:  # reads only: its setup() is never called
        yield saver, threads


@contextmanager
def _sqlite_saver(source: str) -> Iterator[tuple[Any, list[str]]]:
    try:
        from langgraph.checkpoint.sqlite import SqliteSaver
    except ImportError as exc:
        raise InvalidInput("reading SqliteSaver's file needs langgraph-checkpoint-sqlite") from exc
    path = Path(source.removeprefix("sqlite:///").partition("?")[0] if "://" in source else source)
    if not path.is_file():
        raise InvalidInput(f"{path} is not a file: give the SqliteSaver database to import from")
    # Read only: SqliteSaver's own setup would switch the file to WAL and add a column to it.
    read_only = f"{path.resolve().as_uri()}?mode=ro"
    with closing(sqlite3.connect(read_only, uri=True, check_same_thread=False)) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        if not {"checkpoints", "writes"} <= tables:
            raise InvalidInput(f"{path} is no LangGraph SqliteSaver database (no checkpoints and writes)")
        saver = SqliteSaver(conn)
        saver.is_setup = True  # its tables are there (above); a writes table older than task_path:
        if "task_path" not in {row[1] for row in conn.execute("PRAGMA table_info(writes)")}:
            saver._has_task_path = False  # as its setup() finds on a read-only file
        yield saver, [str(thread_id) for (thread_id,) in conn.execute(_THREADS)]
