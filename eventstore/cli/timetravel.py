"""Command-line commands for reading a flow's history: history, state, diff, fork.

Each is one library call (``eventstore.timetravel`` or the store) plus formatting;
``--json`` gives the same answer for scripts.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import click
import orjson

from ..checked_rows import Checked, checked_flow
from ..errors import FlowExists, FlowPruned, InvalidInput, command_line
from ..events import RecordedEvent
from ..flow_fold import STEP_EVENT_TYPES, view_to_dict
from ..graph_flows import refuse_thread
from ..timeline import StepSpan, Timeline, TimelineItem, timeline
from ..timetravel import Diff, in_utc, state_at
from ..timetravel import diff as diff_revisions
from ..timetravel import fork as fork_flow
from ..tombstones import flow_not_found, partly_restored
from .durations import lasted
from .output import (
    Cell,
    Styled,
    actor_of,
    clock,
    colour_of,
    cut,
    echo,
    echo_json,
    event_dict,
    printable,
    status,
    summarize,
    table,
    when,
)
from .params import POSITION, NegativeArguments, number_in, text_of


def _point(text: str) -> int | datetime:
    """A revision number, or an ISO 8601 time with a zone."""
    revision = number_in(text, "revision")
    if revision is not None:
        return revision
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidInput(f"{text!r} is neither a revision number nor an ISO 8601 time") from exc
    if moment.tzinfo is None:
        raise InvalidInput(f"{text!r} has no time zone; add Z or +00:00")
    return in_utc(moment)


def _history_lines(history: Timeline, expand: bool, tampered: dict[int, tuple[str, ...]]) -> Iterator[str]:
    """A header, then a table: one row per event or step span (and, expanded, the span's events); an
    event (or a span of events) whose row does not match its hashes is marked TAMPERED."""
    first, last = _ends(history.items)
    one_day = first.date() == last.date()
    at = clock if one_day else when
    flow = history.flow
    if flow is not None:
        days = f"{when(first)[:10]} UTC" if one_day else f"{when(first)} to {when(last)} UTC"
        yield (
            click.style(printable(flow.flow_id), bold=True)
            + f"  {printable(flow.goal)}  {status(flow.status)}, revision {flow.revision}, {days}"
        )
    rows: list[list[Cell]] = []
    for item in history.items:
        if isinstance(item, StepSpan):
            revisions = f"r{item.first_revision}-{item.last_revision}"
            label = f"step {item.step_id}" + (f" ({item.name})" if item.name else "")
            edited = any(event.revision in tampered for event in item.events)
            rows.append(
                [
                    revisions,
                    at(item.began_at),
                    Styled(f"TAMPERED {label}", fg="red", bold=True) if edited else Styled(label, bold=True),
                    "-" if item.actor is None else printable(item.actor),
                    _span(item),
                ]
            )
            if expand:
                rows.extend(_event_row(event, at, "  ", event.revision in tampered) for event in item.events)
        else:
            rows.append(_event_row(item, at, "", item.revision in tampered))
    yield from table(["REV", "TIME", "EVENT", "ACTOR", "SUMMARY"], rows)


def _tampered_lines(flow_id: str, tampered: dict[int, tuple[str, ...]]) -> None:
    """On standard error, each event marked TAMPERED and what is wrong with its row, then what to do."""
    for revision, problems in tampered.items():
        echo(
            f"TAMPERED {printable(flow_id)}@{revision}: the stored row does not match its hashes "
            f"({', '.join(problems)}); the table shows what it holds now, not what was recorded",
            err=True,
        )
    if tampered:
        echo(f"run `{printable(command_line('verify', flow_id))}` for the whole check", err=True)


def _ends(items: tuple[TimelineItem, ...]) -> tuple[datetime, datetime]:
    first = items[0].began_at if isinstance(items[0], StepSpan) else items[0].recorded_at
    ends = [item.ended_at if isinstance(item, StepSpan) else item.recorded_at for item in items]
    return first, max(ends)


def _event_row(
    event: RecordedEvent, at: Callable[[datetime], str], indent: str, tampered: bool = False
) -> list[Cell]:
    if tampered:
        kind = Styled(f"{indent}TAMPERED {event.type}", fg="red", bold=True)
    else:
        kind = Styled(indent + event.type, fg=colour_of(event.type), dim=bool(indent))
    return [f"{indent}r{event.revision}", at(event.recorded_at), kind, actor_of(event), summarize(event, 80)]


def _span(span: StepSpan) -> str:
    parts = [status(span.status), f"{span.attempts} attempt{'s' if span.attempts != 1 else ''}"]
    if span.retries:
        parts.append(f"{span.retries} retr{'ies' if span.retries > 1 else 'y'}")
    if span.error:
        parts.append(f'"{cut(span.error, 40)}"')
    # every decision (a rejection before a reopened gate's approval too), then an undecided gate's state
    gate = [f"{status(kind)}{f' by {printable(by)}' if by else ''}" for kind, by in span.gate_decisions]
    if span.gate_status and span.gate_status not in ("approved", "rejected"):
        gate.append(status(span.gate_status))
    if gate:
        parts.append("gate " + ", then ".join(gate))
    parts.append(lasted(span.seconds))
    return " · ".join(parts)


def _summary(value: Any) -> str:
    """``value`` as compact JSON, cut to 70 characters (the last three ``...``)."""
    text = orjson.dumps(value).decode()
    return text if len(text) <= 70 else text[:67] + "..."


def _plural(count: int, word: str, many: str) -> str:
    return f"{count} {word if count == 1 else many}"


def _step_facts(step: dict[str, Any]) -> str:
    """A step state's key fields in a line: status, attempts, retries and error, its gate and who decided."""
    facts = [_plural(step["attempts"], "attempt", "attempts")]
    if step["retry_count"]:
        facts.append(_plural(step["retry_count"], "retry", "retries"))
    if step["error"]:
        last = "error" if step["status"] == "failed" else "last error"
        facts.append(f"{last}: {cut(step['error'], 60)}")
    if step["gate_status"]:
        by = f" by {printable(step['gate_by'])}" if step["gate_by"] else ""
        facts.append(f"gate {printable(step['gate_status'])}{by}")
    return f"{printable(step['status'])} ({', '.join(facts)})"


def _flow_facts(flow: dict[str, Any]) -> str:
    """A flow state's status and current step (if it has one)."""
    current = flow["current_step"]
    step = f", step {printable(current)}" if current is not None else ", no current step"
    return f"{printable(flow['status'])}{step}"


def _added(path: str, value: Any) -> str | None:
    """A whole step or flow (a diff adds or removes one), told by its key fields; None for anything else."""
    if not isinstance(value, dict):
        return None
    if path.startswith("/steps/") and path.count("/") == 2 and {"status", "retry_count"} <= value.keys():
        name = f" ({printable(value['name'])})" if value.get("name") else ""
        return f"step {printable(value['step_id'])}{name}: {_step_facts(value)}"
    if path == "/flow" and {"status", "current_step"} <= value.keys():
        return f"flow {_flow_facts(value)}"
    return None


def _first_event(store: Any, flow_id: str) -> RecordedEvent | None:
    """The flow's first event if it starts the flow (FlowStarted or FlowForked), else None."""
    first = next(iter(store.read_flow(flow_id, limit=1)), None)
    return first if first is not None and first.type in ("FlowStarted", "FlowForked") else None


def _no_state(flow_id: str, point: str | None, began: RecordedEvent | None) -> str:
    """Why ``state`` has no flow to show: the point asked is before the flow began, or nothing starts it."""
    said = "at its latest revision" if point is None else f"at {printable(point)}"
    if point is not None and point.isdigit():
        said = f"at revision {point}"
    if began is None or point is None:
        return f"{flow_id}: no state yet {said} (no FlowStarted or FlowForked to start it)"
    return (
        f"{flow_id}: no state {said}, before the flow began "
        f"at {when(began.recorded_at)} UTC (revision {began.revision})"
    )


def _diff_lines(flow_id: str, result: Diff) -> Iterator[str]:
    """A header naming the flow and the two revisions, the events applied (or, from a later
    revision back to an earlier one, undone, newest first), then the changes."""
    low, high = sorted((result.from_revision, result.to_revision))
    back = result.from_revision > result.to_revision
    count = _plural(len(result.events), "event", "events") + (" undone" if back else "")
    yield (
        f"{printable(flow_id)}: from revision {result.from_revision} to {result.to_revision}"
        + (f" ({count})" if high > low else "")
    )
    if not result.events and not result.changes:
        yield "  no changes"
        return
    for event in reversed(result.events) if back else result.events:
        yield f"  {'undone ' if back else ''}r{event.revision} {printable(event.type)}"
    for change in result.changes:
        sign = {"add": "+", "remove": "-", "replace": "~"}[change.op]
        old = None if change.op == "add" else _value(change.path, change.old)
        new = None if change.op == "remove" else _value(change.path, change.new)
        yield f"{sign} {printable(change.path)}: " + " -> ".join(v for v in (old, new) if v is not None)


def _value(path: str, value: Any) -> str:
    """A value in a diff: a whole step or flow by its key fields, anything else as short JSON."""
    whole = _added(path, value)
    return whole if whole is not None else printable(_summary(value))


def register(main: click.Group, open_store: Any, errors: Any) -> None:
    """Add the commands to the ``eventstore`` group."""

    @main.command()
    @click.argument("flow_id")
    @click.option("--events", "expand", is_flag=True, help="List each step's events under its span.")
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per event.")
    @click.pass_context
    def history(ctx: click.Context, flow_id: str, expand: bool, as_json: bool) -> None:
        """The flow's timeline: revision, time, type, actor and a one-line summary.

        A step's events (scheduled, started, retried, its gate, its ending)
        read as one span, on the line where the step began; --events lists
        them under it. The table is aligned over all its rows, so it holds the
        flow's events; --json streams them, in memory that does not grow with the flow.
        An event whose stored row does not match its hashes is marked TAMPERED
        and named on standard error ("tampered" in --json): run `eventstore verify`.
        """
        with open_store(ctx) as store, errors():
            checked = checked_flow(store, flow_id)
            first = next(checked, None)
            if first is None:
                raise flow_not_found(store, flow_id)
            with store.reading() as conn:
                partial = partly_restored(conn, flow_id)
            for flow in partial:
                echo(f"warning: {printable(flow.warning())}", err=True)
            tampered: dict[int, tuple[str, ...]] = {}
            if as_json:  # streamed in the store's pages: a flow of any length in bounded memory
                for event, problems in itertools.chain((first,), checked):
                    step = event.data.get("step_id") if event.type in STEP_EVENT_TYPES else None
                    echo_json({**event_dict(event), "step_id": step, "tampered": list(problems)})
                return

            def noted(pair: Checked) -> RecordedEvent:
                if pair[1]:
                    tampered[pair[0].revision] = pair[1]
                return pair[0]

            # the table: its spans need every event
            history = timeline(noted(pair) for pair in itertools.chain((first,), checked))
        for line in _history_lines(history, expand, tampered):
            echo(line)
        _tampered_lines(flow_id, tampered)

    @main.command()
    @click.argument("flow_id")
    @click.option("--at", "point", default=None, help="A revision number or an ISO 8601 time (default: now).")
    @click.option("--json", "as_json", is_flag=True, help="The state as JSON.")
    @click.pass_context
    def state(ctx: click.Context, flow_id: str, point: str | None, as_json: bool) -> None:
        """The flow and its steps as of a revision or a time."""
        with open_store(ctx) as store, errors():
            refuse_thread(store, flow_id)  # a LangGraph thread's flow has events but no flow state
            where = _point(point) if point is not None else None
            view = state_at(
                store,
                flow_id,
                revision=where if isinstance(where, int) else None,
                at=where if isinstance(where, datetime) else None,
            )
            data = view_to_dict(view)  # while the store is open: it reads the snapshot's parts
            began = _first_event(store, flow_id) if data["flow"] is None and not as_json else None
        if as_json:
            echo_json(data)
            return
        flow = data["flow"]
        shown = printable(flow_id)
        if flow is None:
            echo(_no_state(shown, point, began))
            return
        echo(f"{shown} at revision {flow['revision']}: {_flow_facts(flow)}")
        echo(f"  state: {printable(orjson.dumps(flow['state']).decode())}")
        for step in data["steps"].values():
            echo(f"  step {printable(step['step_id'])}: {_step_facts(step)}")

    @main.command(cls=NegativeArguments)
    @click.argument("flow_id")
    @click.argument("a")
    @click.argument("b")
    @click.option("--json", "as_json", is_flag=True, help="Changes and events as JSON.")
    @click.pass_context
    def diff(ctx: click.Context, flow_id: str, a: str, b: str, as_json: bool) -> None:
        """What changed in a flow between two revisions (or times), and the events that did it.

        A and B are revision numbers (0 is before the first event) or ISO 8601
        times with a zone; negative revisions (from the end) are not supported.
        From a later point back to an earlier one, the events between are
        listed as undone, newest first.
        """
        with open_store(ctx) as store, errors():
            refuse_thread(store, flow_id)
            result = diff_revisions(store, flow_id, _point(a), _point(b))
        if as_json:
            changes = [{"op": c.op, "path": c.path, "old": c.old, "new": c.new} for c in result.changes]
            events = [{"revision": e.revision, "type": e.type} for e in result.events]
            echo_json({"changes": changes, "events": events})
            return
        for line in _diff_lines(flow_id, result):
            echo(line)

    @main.command()
    @click.argument("flow_id")
    @click.option("--at", "revision", type=POSITION, required=True, help="The revision to branch from.")
    @click.option("--new", "new_flow_id", required=True, help="The id of the new flow.")
    @click.option("--actor", default=None, help="Who forks (stored as the event's actor).")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def fork(
        ctx: click.Context, flow_id: str, revision: int, new_flow_id: str, actor: str | None, as_json: bool
    ) -> None:
        """Start a new flow from a revision of FLOW_ID; the original is untouched."""
        with open_store(ctx) as store, errors():
            metadata = {"actor": text_of(actor, "--actor", empty=False)} if actor is not None else None
            try:
                fork_flow(store, flow_id, at_revision=revision, new_flow_id=new_flow_id, metadata=metadata)
            except FlowPruned:
                raise  # its message names the archive to restore from
            except FlowExists as exc:  # say it as the CLI asked: the option to change is --new
                taken = f"flow {new_flow_id!r} exists already: give --new a new flow id"
                raise InvalidInput(taken) from exc
        if as_json:
            echo_json({"flow_id": new_flow_id, "origin": flow_id, "revision": revision})
        else:
            echo(f"forked {printable(flow_id)}@{revision} as {printable(new_flow_id)}")
