"""Command-line commands for looking around a store: flows, show, tail, stats.

Each is one library call (``FlowQueries``, ``follow``, ``log_stats``) plus
formatting; ``--json`` gives the same answer for scripts. ``projections`` is
imported inside the commands: the CLI is the composition root.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
from types import FrameType
from typing import Any

import click
import sqlalchemy as sa

from ..errors import EventStoreError, FlowNotFound, InvalidInput, PositionPastEnd, command_line
from ..events import RecordedEvent
from ..flow_fold import FLOW_STATUSES, FlowState, FlowView, StepState, view_to_dict
from ..follow import follow
from ..schema import flow_events
from ..stats import log_stats
from ..store import EventStore
from ..tombstones import pruned_flows
from ..wording import counted
from .durations import lasted
from .output import (
    Cell,
    Styled,
    actor_of,
    clock,
    colour_of,
    compact,
    cut,
    echo,
    echo_json,
    event_dict,
    printable,
    signal_setter,
    size,
    status,
    summarize,
    table,
    took,
    when,
)
from .params import COUNT, POSITION, Seconds, text_of


def _flow_projections() -> list[Any]:
    from projections import FlowProjection

    return [FlowProjection()]


def _flow_dict(flow: FlowState, steps: list[StepState] | None = None) -> dict[str, Any]:
    view = FlowView(flow)
    for step in steps or []:
        view.steps[step.step_id] = step
    data = view_to_dict(view)
    return data if steps is not None else data["flow"]


def register(main: click.Group, open_store: Any, errors: Any) -> None:
    """Add the commands to the ``eventstore`` group; ``open_store(ctx, **options)`` opens the store."""

    @main.command("flows")
    @click.option("--status", type=click.Choice(FLOW_STATUSES), help="Only flows in this status.")
    @click.option(
        "--session",
        "--owner",
        "session",
        help=(
            "Only flows of this owner session (a session no flow has is an error, as in `audit`; one "
            "whose flows retention pruned says how many it did not list)."
        ),
    )
    @click.option("--offset", type=POSITION, default=0, show_default=True, help="Skip this many.")
    @click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True, help="Page size.")
    @click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="The page as one JSON object: items, total, offset, limit, has_next.",
    )
    @click.pass_context
    def flows_command(
        ctx: click.Context, status: str | None, session: str | None, offset: int, limit: int, as_json: bool
    ) -> None:
        """List flows, oldest first, a page at a time."""
        from projections import FlowQueries

        with open_store(ctx, projections=_flow_projections()) as store, errors():
            queries = FlowQueries(store)
            owner = text_of(session, "--session")
            page = queries.flows(owner=owner, status=status, offset=offset, limit=limit)
            pruned = None
            if session is not None:
                with store.reading() as conn:  # its own pruned flows, and those of unknown owner
                    pruned = pruned_flows(conn, session=owner)
                if page.total == 0 and pruned is None:
                    queries.session(session)  # an unknown session is an error, as in `audit --session`
        if as_json:
            items = [_flow_dict(flow) for flow in page.items]
            echo_json(
                {
                    "items": items,
                    "total": page.total,
                    "offset": page.offset,
                    "limit": page.limit,
                    "has_next": page.has_next,
                    **({} if session is None else {"pruned": None if pruned is None else pruned.as_dict()}),
                }
            )
            return
        rows: list[list[Cell]] = [
            [
                flow.flow_id,
                Styled(flow.status, fg=colour_of(flow.status)),
                flow.current_step or "-",
                str(flow.revision),
                flow.owner_session_key,
                when(flow.updated_at),
                printable(flow.goal),
            ]
            for flow in page.items
        ]
        for line in table(["FLOW", "STATUS", "STEP", "REV", "SESSION", "UPDATED", "GOAL"], rows):
            echo(line)
        shown = f"{offset + 1}-{offset + len(page.items)}" if page.items else "none"
        more = f"; next page: --offset {offset + limit}" if page.has_next else ""
        echo(f"{counted(page.total, 'flow')}, showing {shown}{more}")
        if pruned is not None:
            echo(f"note: {pruned.note()}", err=True)

    @main.command()
    @click.argument("flow_id")
    @click.option("--json", "as_json", is_flag=True, help="The flow and its steps as JSON.")
    @click.pass_context
    def show(ctx: click.Context, flow_id: str, as_json: bool) -> None:
        """A flow's summary and its steps.

        A step's TOOK runs from its scheduling to its end; when the store's
        clock stepped back in between, it reads `unknown (clock stepped back)`.
        An id with events but no FlowStarted or FlowForked (appended without
        the flow vocabulary) is no flow: `history` shows its events.
        """
        from projections import FlowQueries

        with open_store(ctx, projections=_flow_projections()) as store, errors():
            queries = FlowQueries(store)
            try:
                flow = queries.flow(flow_id)
            except FlowNotFound as exc:
                raise _not_a_flow(store, flow_id, exc) from exc
            steps = queries.steps(flow_id)
        if as_json:
            echo_json(_flow_dict(flow, steps))
            return
        for line in _summary(flow):
            echo(line)
        if not steps:
            echo("\nno steps")
            return
        echo()
        rows: list[list[Cell]] = [
            [
                str(step.position),
                step.step_id,
                step.name,
                Styled(step.status, fg=colour_of(step.status)),
                str(step.attempts),
                _gate(step),
                when(step.started_at),
                lasted((step.finished_at - step.scheduled_at).total_seconds())
                if step.finished_at and step.scheduled_at
                else "-",
                _outcome(step),
            ]
            for step in steps
        ]
        for line in table(
            ["POS", "STEP", "NAME", "STATUS", "TRIES", "GATE", "STARTED", "TOOK", "OUTCOME"], rows
        ):
            echo(line)

    @main.command()
    @click.option("--from", "after", type=POSITION, help="Start after this position (0: all).")
    @click.option("--flow", "flow_id", help="Only this flow's events.")
    @click.option("--type", "types", multiple=True, help="Only events of this type (repeatable).")
    @click.option("--interval", type=Seconds(0.01, 3600), default=0.5, show_default=True)
    @click.option("--limit", type=COUNT, help="Stop after this many events.")
    @click.option("--until-idle", is_flag=True, help="Stop once no new event is waiting.")
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per event.")
    @click.pass_context
    def tail(
        ctx: click.Context,
        after: int | None,
        flow_id: str | None,
        types: tuple[str, ...],
        interval: float,
        limit: int | None,
        until_idle: bool,
        as_json: bool,
    ) -> None:
        """Follow new events as they are committed (Ctrl-C stops).

        Starts at the end of the log unless --from says where; a --from past
        the end is an error (it would skip the events up to it). --interval
        is the pause, in seconds, between polls that find nothing.

        Ctrl-C ends the current poll, says on stderr how many events were
        printed and the last position (--from it goes on), then `interrupted`,
        with exit status 130 as every command. SIGTERM stops it the same way
        with status 0: a supervisor's stop is the end of the job, not a failure.
        """
        count, position = 0, after
        stop = threading.Event()  # Ctrl-C or SIGTERM: finish the current poll, then stop
        caught: list[int] = []
        setter = signal_setter(stop)

        def stopping(signum: int, frame: FrameType | None) -> None:
            caught.append(signum)
            setter(signum, frame)

        handlers = {sig: signal.signal(sig, stopping) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            with open_store(ctx) as store, errors():
                _check_start(store, after)
                for name in types:
                    text_of(name, "--type", empty=False)
                events = follow(
                    store,
                    after_position=after,
                    flow_id=flow_id,
                    types=types or None,
                    poll_interval=interval,
                    stop_when_idle=until_idle,
                    stop=stop,
                )
                for event in events:
                    count, position = count + 1, event.position
                    if as_json:
                        echo_json(event_dict(event))
                    else:
                        echo(_tail_line(event))
                    if stop.is_set() or (limit is not None and count >= limit):
                        break
        finally:  # a closed pipe (`eventstore tail | head`) ends quietly in the group (cli._Main)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        if stop.is_set():
            echo(
                f"stopped after {counted(count, 'event')}"
                + (f", at position {position}" if position else ""),
                err=True,
            )
            if signal.SIGINT in caught:  # the group ends it as any command's Ctrl-C: `interrupted`, 130
                raise KeyboardInterrupt

    @main.command()
    @click.option(
        "--days", type=click.IntRange(0, 366), default=7, show_default=True, help="Days of history."
    )
    @click.option("--json", "as_json", is_flag=True, help="The figures as one JSON object.")
    @click.pass_context
    def stats(ctx: click.Context, days: int, as_json: bool) -> None:
        """Events, flows by status, sessions, database size, events per day, an unfinished import,
        flows pruned by retention, flows a restore cut short put only partly back."""
        from projections import FlowQueries

        with open_store(ctx, projections=_flow_projections()) as store, errors():
            figures = log_stats(store, days=days)
            queries = FlowQueries(store)
            by_status = {name: queries.flows(status=name, limit=1).total for name in FLOW_STATUSES}
            sessions = queries.sessions(limit=1).total
            threads = _thread_count(store)
            backend = store.dialect
        unfinished = figures.unfinished_import
        if as_json:
            echo_json(
                {
                    "events": figures.events,
                    "last_position": figures.last_position,
                    "first_event_at": figures.first_event_at,
                    "last_event_at": figures.last_event_at,
                    "flows": {"total": sum(by_status.values()), **by_status},
                    "sessions": sessions,
                    "langgraph_threads": threads,
                    "db_bytes": figures.db_bytes,
                    "backend": backend,
                    "events_per_day": [
                        {"day": d.day.isoformat(), "events": d.events} for d in figures.per_day
                    ],
                    "unfinished_import": None if unfinished is None else dataclasses.asdict(unfinished),
                    "partly_restored": [dataclasses.asdict(flow) for flow in figures.partly_restored],
                    "pruned": None if figures.pruned is None else figures.pruned.as_dict(),
                }
            )
            return
        statuses = ", ".join(f"{count:,} {status(name)}" for name, count in by_status.items() if count)
        echo(f"events     {figures.events:,} (last position {figures.last_position:,})")
        echo(f"between    {when(figures.first_event_at)} and {when(figures.last_event_at)} UTC")
        echo(f"flows      {sum(by_status.values()):,}" + (f": {statuses}" if statuses else ""))
        echo(f"sessions   {sessions:,}")
        if threads:
            echo(f"threads    {counted(threads, 'LangGraph thread')}, not flows: `eventstore threads`")
        echo(f"database   {size(figures.db_bytes)} ({backend})")
        if unfinished is not None:
            echo(
                f"import     UNFINISHED: {unfinished.events_imported:,} of {unfinished.event_count:,} events "
                f"of {printable(unfinished.events_file)} are in (started {unfinished.started_at}); "
                "import that file again to finish it"
            )
        if figures.pruned is not None:
            pruned_count = figures.pruned
            echo(
                f"pruned     {pruned_count.flows:,} flow{'' if pruned_count.flows == 1 else 's'} "
                f"({pruned_count.events:,} events) in {pruned_count.archives:,} "
                f"archive{'' if pruned_count.archives == 1 else 's'} (`eventstore archive list`)"
            )
        for flow in figures.partly_restored:
            flow_id, archive_id = printable(flow.flow_id), printable(flow.archive_id)
            echo(
                f"restore    PARTIAL: {flow.revision:,} of {flow.last_revision:,} events of flow {flow_id} "
                f"are back from archive {archive_id}; finish it with "
                f"`{printable(command_line('archive restore', flow.archive_id, flow.flow_id))}`"
            )
        if figures.per_day:
            echo("events per day (UTC):")
            peak = max(day.events for day in figures.per_day) or 1
            for day in figures.per_day:
                bar = "#" * round(30 * day.events / peak)
                echo(f"  {day.day.isoformat()}  {click.style(bar.ljust(30), fg='cyan')}  {day.events:,}")


def _thread_count(store: EventStore) -> int:
    """The LangGraph threads not deleted (0 where the store has no LangGraph read model)."""
    from projections.langgraph_queries import LangGraphQueries

    queries = LangGraphQueries()
    with store.reading() as conn:
        if not sa.inspect(conn).has_table(queries.projection.table("langgraph_threads").name):
            return 0
        return queries.threads(conn, limit=1).total


def _not_a_flow(store: EventStore, flow_id: str, missing: FlowNotFound) -> EventStoreError:
    """Why ``show`` has no flow: ``missing`` says it does not exist, which is untrue of an id with
    events that no FlowStarted or FlowForked started (appended with ``store.append``), as
    ``history`` shows. A pruned flow or a LangGraph thread already says what it is."""
    if type(missing) is not FlowNotFound:
        return missing
    events = store.revision(flow_id)
    if events == 0:
        return missing
    c = flow_events.c
    started = c.flow_id == flow_id, c.type.in_(("FlowStarted", "FlowForked"))
    if next(store.read_where(*started, limit=1), None) is not None:  # in the log, not in the read model
        return InvalidInput(
            f"flow {flow_id!r} is in the log ({counted(events, 'event')}) but not in the flows read "
            "model: it was written by a store opened without FlowProjection; "
            f"`{command_line('rebuild', 'flows')}` folds it in"
        )
    return InvalidInput(
        f"{flow_id!r} has {counted(events, 'event')} but is not a flow: no FlowStarted or FlowForked "
        f"started it through the flow vocabulary, so it has no summary or steps; "
        f"`{command_line('history', flow_id)}` shows its events"
    )


def _check_start(store: EventStore, after: int | None) -> None:
    """Refuse ``--from`` past the end of the log: the follower would wait silently, then skip the
    events up to it as they came (a mistyped position, or a store restored from an older backup)."""
    if after is None:
        return
    last = store.last_position()
    if after > last:
        raise PositionPastEnd("--from", after, last)


def _summary(flow: FlowState) -> list[str]:
    lasted = ""
    if flow.finished_at and flow.created_at:
        seconds = (flow.finished_at - flow.created_at).total_seconds()
        # a fork starts when it is made but keeps its origin's end: no negative duration
        lasted = (
            f"took {took(seconds)}"
            if seconds >= 0
            else "before it started here: a fork keeps its origin's end"
        )
    lines = [
        click.style(printable(flow.flow_id), bold=True) + f"  {printable(flow.goal)}",
        f"  status      {status(flow.status)} at revision {flow.revision} ({flow.event_count} events)"
        + (", cancel requested" if flow.cancel_requested else ""),
        f"  controller  {printable(flow.controller_id)}   session {printable(flow.owner_session_key)}"
        + (f"   origin {printable(flow.requester_origin)}" if flow.requester_origin else "")
        + (f"   parent {printable(flow.parent_flow_id)}" if flow.parent_flow_id else ""),
        f"  started     {when(flow.created_at)}   updated {when(flow.updated_at)}"
        + (
            f"   ended {when(flow.finished_at)}" + (f" ({lasted})" if lasted else "")
            if flow.finished_at
            else ""
        ),
    ]
    if flow.current_step:
        lines.append(f"  step        {printable(flow.current_step)}")
    if flow.lease_owner:
        until = when(flow.lease_expires_at)
        owner = printable(flow.lease_owner)
        lines.append(f"  lease       {owner} (generation {flow.lease_generation}) until {until}")
    if flow.wait:
        waiting_for, details = _described(flow.wait, "waiting_for")
        lines.append(f"  waiting for {printable(waiting_for)} {details}")
    if flow.error:
        error, details = _described(flow.error, "error")
        lines.append(f"  error       {click.style(printable(error), fg='red')} {details}")
    if flow.result is not None:
        lines.append(f"  result      {compact(flow.result, 100)}")
    lines.append(f"  state       {compact(flow.state, 100)}")
    return lines


def _described(value: Any, name: str) -> tuple[Any, str]:
    """A wait or an error: ``{name: ..., details: {...}}`` as the flow events write it, or, from a
    fork's snapshot, any JSON value, shown whole."""
    if isinstance(value, dict):
        return value.get(name), compact(value.get("details") or {})
    return (value if isinstance(value, str) else compact(value, 100)), ""


def _gate(step: StepState) -> Cell:
    if not step.gate_status:
        return "-"
    by = f" by {step.gate_by}" if step.gate_by else ""
    return Styled(f"{step.gate_status}{by}", fg=colour_of(step.gate_status))


def _outcome(step: StepState) -> str:
    if step.status == "completed":
        return compact(step.result or {}, 50)
    text = step.error or step.reason or ""
    if not isinstance(text, str):  # a fork's snapshot may hold any JSON value
        text = compact(text, 60)
    return cut(text, 60) if text else "-"


def _tail_line(event: RecordedEvent) -> str:
    where = f"{printable(event.flow_id)}@{event.revision}"
    kind = click.style(printable(event.type).ljust(18), fg=colour_of(event.type))
    moment = f"{when(event.recorded_at)[:10]} {clock(event.recorded_at)}"
    return f"#{event.position:<7} {moment}  {where:<24} {kind} {actor_of(event):<18} {summarize(event, 80)}"
