"""Command-line commands for LangGraph checkpoints: ``threads``.

LangGraph has no API that lists threads; the read model does
(``projections.langgraph_queries.LangGraphQueries.threads``). The command is
that one query plus formatting, and needs no LangGraph installed.
"""

from __future__ import annotations

from typing import Any

import click
import sqlalchemy as sa

from .output import echo, echo_json, printable
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
        if page is None or not page.items:
            if not as_json:
                echo("no LangGraph threads in this store")
            return
        if as_json:
            for item in page.items:
                echo_json({name: getattr(item, name) for name in item.__slots__})
            return
        echo(f"{'THREAD':<28} {'CHECKPOINTS':>11} {'NS':>3}  {'UPDATED':<27} {'LAST ACTOR':<16} FLOW")
        for item in page.items:
            thread = printable(item.thread_id)
            thread = thread if len(thread) <= 28 else thread[:25] + "..."
            state = f" (deleted by {printable(item.deleted_by)})" if item.deleted_at else ""
            echo(
                f"{thread:<28} {item.checkpoints:>11} {item.namespaces:>3}  {printable(item.updated_at):<27} "
                f"{printable(item.last_actor or '-'):<16} {printable(item.flow_id)}{state}"
            )
        if page.has_next:
            echo(f"{len(page.items)} of {page.total} threads; next page: --offset {offset + limit}")
