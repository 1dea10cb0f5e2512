"""The ``audit`` command: decisions, approvals, interrupts and failures, and why an event happened.

One call to ``eventstore.audit`` plus formatting; ``--json`` gives the same
answer for scripts (one JSON object per entry, then a ``"kind": "pruned"``
object if the trail could not search flows retention pruned; one object for
``--why``). An entry whose row does not match its hashes is marked TAMPERED.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import click

from ..audit import (
    HOLD_TYPES,
    KINDS,
    AuditEntry,
    DecisionEntry,
    Effect,
    FailureEntry,
    GateEntry,
    HoldEntry,
    InterruptEntry,
    ThreadEntry,
    audit_trail,
    cause_id,
    causes,
    effects,
    find_event,
    gate_opening,
)
from ..errors import EventNotFound, FlowArchived, InvalidInput
from ..events import RecordedEvent
from ..schema import AUDIT_EVENT_TYPES
from ..store import EventStore
from ..tombstones import flow_not_found
from ..wording import counted
from .output import (
    actor_of,
    colour_of,
    compact,
    cut,
    echo,
    echo_json,
    event_dict,
    parse_time,
    printable,
    summarize,
    when,
)
from .params import COUNT, POSITION, number_in, text_of

_LABELS = {
    "DecisionRecorded": "DECISION",
    "GateOpened": "GATE",
    "GateApproved": "APPROVED",
    "GateRejected": "REJECTED",
    "StepFailed": "FAILED",
    "StepTimedOut": "TIMED OUT",
    "FlowFailed": "FLOW FAILED",
    "TaskFailed": "TASK FAILED",
    "InterruptRecorded": "ASKED",
    "ResumeRecorded": "ANSWERED",
    "LegalHoldPlaced": "HELD",
    "LegalHoldReleased": "RELEASED",
    "ThreadDeleted": "DELETED",
    "CheckpointsDeleted": "DELETED",
    "ThreadCopied": "COPIED",
}
_CAUSES = 1000  # the most causes --why follows back
_COUNTED = ["decision", "gate", "failure", "hold", "question", "answer", "thread change"]
"""What the count line counts: a LangGraph interrupt is a question, or an answer to one; a thread's
deletion or copy is a thread change."""


def register(main: click.Group, open_store: Any, errors: Any) -> None:
    """Add ``audit`` to the ``eventstore`` group; ``open_store(ctx)`` opens the store."""

    @main.command()
    @click.option("--flow", "flow_id", help="Only this flow.")
    @click.option("--session", help="Only the flows this owner session started.")
    @click.option(
        "--actor",
        help="Only what this actor decided, approved, rejected, answered, failed, held or released.",
    )
    @click.option("--correlation", "correlation_id", help="Only events with this correlation id.")
    @click.option(
        "--type",
        "types",
        multiple=True,
        help="decision, gate, interrupt, failure, hold, thread, or an event type such as GateApproved "
        "(repeatable).",
    )
    @click.option("--since", help="From this time: ISO 8601 with a zone, a date, or an age (15m, 2h, 7d).")
    @click.option("--until", help="Before this time (same forms as --since).")
    @click.option("--after", type=POSITION, default=0, help="Only after this log position.")
    @click.option(
        "--limit",
        type=COUNT,
        help="At most this many entries, never part of one event's: a first event with more gives them all.",
    )
    @click.option("--why", "event_ref", metavar="EVENT", help="Explain one event (id or FLOW@REV) instead.")
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per entry.")
    @click.pass_context
    def audit(
        ctx: click.Context,
        flow_id: str | None,
        session: str | None,
        actor: str | None,
        correlation_id: str | None,
        types: tuple[str, ...],
        since: str | None,
        until: str | None,
        after: int,
        limit: int | None,
        event_ref: str | None,
        as_json: bool,
    ) -> None:
        """Who decided, approved, rejected or answered what, what failed, and who held a flow from
        retention or released it: in log order.

        Scope it with --flow, --session, --actor or --correlation (they
        combine); with none, the whole store. Flows pruned by retention are
        not searched (but by --flow): the answer says how many, and how to
        restore them. An entry whose stored row does not match its hashes is
        marked TAMPERED (run `eventstore verify`). --why EVENT shows what led
        to one event (its causation chain; for a gate approved or rejected
        with no causation id, the gate opening it answered) and what it caused.
        """
        with open_store(ctx) as store, errors():
            if event_ref is not None:
                _explain(store, event_ref, as_json)
                return
            entries = audit_trail(
                store,
                flow_id=flow_id,
                session=text_of(session, "--session"),
                actor=text_of(actor, "--actor", empty=False),
                correlation_id=text_of(correlation_id, "--correlation", empty=False),
                types=_types(types),
                since=None if since is None else parse_time(since),
                until=None if until is None else parse_time(until),
                after_position=after,
                limit=limit,
            )
            counts: Counter[str] = Counter()
            tampered = 0
            for entry in entries:
                counts[_counted(entry)] += 1
                tampered += bool(entry.tampered)
                if as_json:
                    echo_json(entry.as_dict())
                else:
                    for line in _entry_lines(entry):
                        echo(line)
            pruned = entries.pruned
        if as_json:
            if pruned is not None:
                echo_json({"kind": "pruned", **pruned.as_dict(), "note": pruned.note()})
            return
        total = sum(counts.values())
        detail = ", ".join(counted(counts[kind], kind) for kind in _COUNTED if counts[kind])
        echo(f"{total} entr{'y' if total == 1 else 'ies'}" + (f": {detail}" if detail else ""), err=True)
        if tampered:
            echo(
                f"{tampered} entr{'y' if tampered == 1 else 'ies'} marked TAMPERED: the stored row does not "
                "match its hashes, so what it shows is not what was recorded; run `eventstore verify`",
                err=True,
            )
        if pruned is not None:
            echo(f"note: {pruned.note()}", err=True)


def _counted(entry: AuditEntry) -> str:
    if isinstance(entry, InterruptEntry):
        return "answer" if entry.action == "answered" else "question"
    if isinstance(entry, ThreadEntry):
        return "thread change"
    return entry.kind


def _types(given: tuple[str, ...]) -> list[str] | None:
    if not given:
        return None
    out: list[str] = []
    for name in given:
        if name in KINDS:
            out.extend(KINDS[name])
        elif name in AUDIT_EVENT_TYPES or name in HOLD_TYPES:
            out.append(name)
        else:
            choices = ", ".join([*KINDS, *AUDIT_EVENT_TYPES, *HOLD_TYPES])
            raise InvalidInput(f"--type {name!r} is not one of {choices}")
    return list(dict.fromkeys(out))


def _entry_lines(entry: AuditEntry) -> list[str]:
    lines = _facts(entry)
    if entry.tampered:
        mark = click.style("TAMPERED", fg="red", bold=True)
        where = f"{printable(entry.flow_id)}@{entry.revision}"
        lines.insert(
            0,
            f"{mark} {where}: the stored row does not match its hashes ({', '.join(entry.tampered)}); "
            "below is what it holds now, not what was recorded",
        )
    return lines


def _facts(entry: AuditEntry) -> list[str]:
    label = _LABELS.get(entry.type, printable(entry.type))
    label = click.style(label.ljust(11), fg=_label_colour(entry), bold=True)
    where = f"{printable(entry.flow_id)}@{entry.revision}"
    head = f"{when(entry.recorded_at)}  {where:<20} {label} {printable(entry.actor or '-'):<18} "
    indent = " " * len(click.unstyle(head))
    if isinstance(entry, DecisionEntry):
        facts = [f"confidence {entry.confidence:.2f}" if entry.confidence is not None else ""]
        facts += [f"model {printable(entry.model)}" if entry.model else ""]
        facts += [f"tool {printable(entry.tool)}" if entry.tool else ""]
        lines = [head + f'"{cut(entry.decision, 60)}"' + _paren(facts)]
        if entry.rationale:
            lines.append(f"{indent}why: {cut(entry.rationale, 90)}")
        if entry.inputs or entry.alternatives:
            instead = ", ".join(str(a) for a in entry.alternatives)
            lines.append(
                f"{indent}inputs {compact(entry.inputs, 50)}"
                + (f" · instead of: {cut(instead, 50)}" if instead else "")
            )
        return lines
    if isinstance(entry, GateEntry):
        options = "|".join(printable(option.value) for option in entry.options)
        if entry.action == "opened":
            return [
                head
                + f'on {printable(entry.step_id)}: "{cut(entry.prompt or "", 60)}"'
                + (f" [{options}]" if options else "")
            ]
        chose = f"chose {printable(', '.join(entry.selections))}" if entry.selections else ""
        feedback = f'"{cut(entry.feedback, 50)}"' if entry.feedback else ""
        lines = [head + f"on {printable(entry.step_id)}" + _paren([chose, feedback])]
        if entry.opened_revision is not None:
            saw = f'saw "{cut(entry.prompt or "", 60)}"' + (f" [{options}]" if options else "")
            opened = f"{printable(entry.opened_flow_id or entry.flow_id)}@{entry.opened_revision}"
            lines.append(f"{indent}{saw}, opened at {opened} by {printable(entry.opened_by or '-')}")
        return lines
    if isinstance(entry, InterruptEntry):
        shown = ", ".join(printable(compact(value, 60)) for value in _questions(entry.values))
        shown = shown or "(a value only LangGraph reads)"
        return [head + f"task {printable(cut(entry.task_id or '-', 20))}: {shown}"]
    if isinstance(entry, HoldEntry):
        reason = f': "{cut(entry.reason, 60)}"' if entry.reason else ""
        return [head + f"flow {printable(entry.held_flow_id or '-')}{reason}"]
    if isinstance(entry, ThreadEntry):
        return [head + _thread_change(entry)]
    assert isinstance(entry, FailureEntry)  # the six kinds are exhaustive
    where_failed = f"step {printable(entry.step_id)}: " if entry.step_id else ""
    return [head + where_failed + cut(entry.error or "(no error text)", 80) + _run_by(entry)]


def _thread_change(entry: ThreadEntry) -> str:
    """What a deletion or copy did to which thread, as its event counts it."""
    thread = f"thread {printable(cut(entry.thread_id or '-', 40))}"
    if entry.checkpoint_ns:
        thread += f" ns {printable(cut(entry.checkpoint_ns, 30))}"
    counts = [counted(entry.checkpoints, "checkpoint") if entry.checkpoints is not None else ""]
    counts += [counted(entry.writes, "write") if entry.writes is not None else ""]
    counts += [f"runs {printable(cut(', '.join(entry.run_ids), 40))}" if entry.run_ids else ""]
    if entry.action == "copied":
        return f"{thread} from {printable(cut(entry.source_thread_id or '-', 40))}" + _paren(counts)
    whole = "every checkpoint" if entry.type == "ThreadDeleted" else "some checkpoints"
    return f"{thread}: {whole}" + _paren([*counts, printable(entry.reason or "")])


def _run_by(entry: FailureEntry) -> str:
    """Whose run a LangGraph task failed in, where that is not the runtime the failure is by."""
    run_by = entry.details.get("run_by") if entry.type == "TaskFailed" else None
    if not isinstance(run_by, str) or run_by == entry.actor:
        return ""
    return f" (in a run {'resumed ' if entry.details.get('resumed') else ''}by {printable(run_by)})"


def _questions(values: tuple[Any, ...]) -> list[Any]:
    """An interrupt's ``[{"id": ..., "value": ...}]`` as its values; anything else as it is."""
    out: list[Any] = []
    for value in values:
        if (
            isinstance(value, list)
            and value
            and all(isinstance(i, dict) and set(i) == {"id", "value"} for i in value)
        ):
            out.extend(item["value"] for item in value)
        else:
            out.append(value)
    return out


def _paren(parts: list[str]) -> str:
    kept = [part for part in parts if part]
    return f" ({', '.join(kept)})" if kept else ""


def _label_colour(entry: AuditEntry) -> str | None:
    if isinstance(entry, DecisionEntry):
        return "cyan"
    return colour_of(entry.type)


# -- --why ---------------------------------------------------------------------------


def resolve_event(store: EventStore, ref: str) -> RecordedEvent:
    """An event by id, or by ``FLOW@REVISION``."""
    flow_id, at, text = ref.rpartition("@")
    revision = number_in(text, "revision") if at and flow_id else None
    if revision is not None:
        if revision < 1:
            raise InvalidInput(f"no event {ref}: revisions start at 1")
        found = list(store.read_flow(flow_id, from_revision=revision, to_revision=revision))
        if not found:
            missing = flow_not_found(store, flow_id) if store.revision(flow_id) == 0 else None
            raise missing if isinstance(missing, FlowArchived) else EventNotFound(ref)
        return found[0]
    return find_event(store, ref)


def _explain(store: EventStore, ref: str, as_json: bool) -> None:
    event = resolve_event(store, ref)
    chain = causes(store, event.event_id, limit=_CAUSES)
    ended = _chain_end(store, event, chain)
    opening = None
    if not chain and ended is None and event.type in ("GateApproved", "GateRejected"):
        # No causation recorded: the gate it answered led to it, and what led to that gate
        opening = gate_opening(store, event)
        if opening is not None:
            before = causes(store, opening.event_id, limit=_CAUSES - 1)
            chain, ended = (opening, *before), _chain_end(store, opening, before)
    caused = effects(store, event.event_id)
    if as_json:
        echo_json(
            {
                "event": event_dict(event),
                "causes": [event_dict(cause) for cause in chain],
                "gate_opening": None if opening is None else str(opening.event_id),
                "effects": [{**event_dict(e.event), "depth": e.depth, "cause": str(e.cause)} for e in caused],
            }
        )
        return
    echo(
        click.style(f"{printable(event.flow_id)}@{event.revision} {printable(event.type)}", bold=True)
        + f" by {actor_of(event)} at {when(event.recorded_at)}"
    )
    echo(f"  {summarize(event, 100)}")
    correlation = event.metadata.get("correlation_id")
    if correlation is not None:
        echo(f"  correlation {printable(correlation)}")
    if opening is not None:
        echo("what led to it, nearest first (no causation_id: the gate it answered, by its step):")
    elif chain or ended is not None:
        echo("what led to it, nearest first:")
    else:
        echo("what led to it: nothing recorded (no causation_id)")
    for cause in chain:
        echo(_event_line(cause, 1))
    if ended is not None:
        echo(f"  ... {ended}")
    echo("what it caused:" if caused else "what it caused: nothing recorded")
    for effect in _tree(event, caused):
        echo(_event_line(effect.event, effect.depth))


def _chain_end(store: EventStore, event: RecordedEvent, chain: tuple[RecordedEvent, ...]) -> str | None:
    """Why the walk back stopped at the last event's causation id (None if it has none)."""
    last = chain[-1] if chain else event
    origin = last.metadata.get("causation_id")
    if origin is None:
        return None
    shown = printable(origin)
    parent = cause_id(last)
    if parent is None:
        if isinstance(origin, str) and _spells_uuid(origin):
            return f"{shown}, not followed: a causation id links as str(uuid) spells it (lowercase, hyphens)"
        return f"{shown}, which is not an event id"
    again = next((seen for seen in (event, *chain) if seen.event_id == parent), None)
    if again is not None:
        return f"{shown}, which is {printable(again.flow_id)}@{again.revision} again: a cycle"
    try:
        find_event(store, parent)
    except EventNotFound:
        return f"{shown}, which is not an event in this log"
    return f"{shown}, not followed: --why follows {_CAUSES} causes at most"  # the walk's only other end


def _spells_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _event_line(event: RecordedEvent, depth: int) -> str:
    where = f"{printable(event.flow_id)}@{event.revision}"
    kind = click.style(printable(event.type), fg=colour_of(event.type))
    return f"{'  ' * depth}{where}  {kind}  {actor_of(event)}  {summarize(event, 80)}"


def _tree(root: RecordedEvent, caused: tuple[Effect, ...]) -> list[Effect]:
    """The effects depth first, each under its cause, siblings in log order."""
    children: dict[Any, list[Effect]] = {}
    for effect in caused:
        children.setdefault(effect.cause, []).append(effect)
    out: list[Effect] = []
    stack = list(reversed(children.get(root.event_id, [])))
    while stack:
        effect = stack.pop()
        out.append(effect)
        stack.extend(reversed(children.get(effect.event.event_id, [])))
    return out
