"""Command-line commands for LangGraph checkpoints: ``threads``.

LangGraph has no API that lists threads; the read model does
(``projections.langgraph_queries.LangGraphQueries.threads``). The command is
that one query plus formatting, and needs no LangGraph installed.
"""

from __future__ import annotations

from typing import Any

import click
import sqlalchemy as sa

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
