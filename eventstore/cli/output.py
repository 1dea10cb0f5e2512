"""How the command line prints: colour, tables, one-line event summaries, times, progress bars, JSON.

Colour is on when the output is a terminal and ``NO_COLOR`` is not set
(https://no-color.org); click strips the styles otherwise. Progress bars go
to stderr, and only when it is a terminal, so pipes and logs stay clean.

Everything a store holds was written by someone else, often an agent: ids,
actors, goals, rationales, errors. Text output shows it through
``printable`` (or ``cut``, ``compact``, ``summarize``, which use it), so it
reads on one line and never drives the terminal: control characters (an
escape sequence could erase the lines above it) and bidirectional overrides
(which reorder what the operator reads) are written as escapes such as
``\\x1b`` and ``\\u202e``. JSON output escapes the same characters, so it
stays the same JSON value.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import threading
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from types import FrameType
from typing import Any

import click
import orjson

from ..errors import InvalidInput
from ..events import RecordedEvent
from ..integrity import Problem, format_time

STATUS_COLOURS = {
    "finished": "green",
    "completed": "green",
    "approved": "green",
    "running": "cyan",
    "scheduled": "blue",
    "waiting": "yellow",
    "open": "yellow",
    "opened": "yellow",
    "failed": "red",
    "rejected": "red",
    "timed_out": "red",
    "cancelled": "bright_black",
    "skipped": "bright_black",
    "closed": "bright_black",
}


_TYPE_STATUS = {
    "FlowFinished": "finished",
    "StepCompleted": "completed",
    "GateApproved": "approved",
    "FlowFailed": "failed",
    "StepFailed": "failed",
    "GateRejected": "rejected",
    "StepTimedOut": "timed_out",
    "GateOpened": "open",
    "FlowWaiting": "waiting",
    "FlowCancelled": "cancelled",
}


def colour_of(word: str) -> str | None:
    """The colour of a status word, or of an event type that sets one (``StepFailed``: red)."""
    return STATUS_COLOURS.get(_TYPE_STATUS.get(word, word))


def _colour() -> bool | None:
    """False when NO_COLOR is set; otherwise let click decide (colour only on a terminal)."""
    return False if os.environ.get("NO_COLOR") else None


def echo(text: str = "", *, err: bool = False, nl: bool = True) -> None:
    click.echo(text, err=err, nl=nl, color=_colour())


def echo_json(value: Any) -> None:
    """One JSON document on one line (dataclasses as objects, times as ``json_value`` spells them).

    orjson escapes C0 controls; DEL, C1 controls and bidi marks it writes as
    they are, so they are escaped here too (``\\u202e``): the same JSON value.
    """
    document = orjson.dumps(value, default=json_value, option=orjson.OPT_PASSTHROUGH_DATETIME).decode()
    if not document.isprintable():
        document = "".join(_json_escape(char) if _shown(char) != char else char for char in document)
    click.echo(document)


def json_value(value: Any) -> Any:
    """What JSON output writes for a value orjson leaves to it.

    A time is written as the store writes it, and as export files and the
    events' ``recorded_at`` spell it (``format_time``): UTC, to the
    microsecond, with ``Z`` (``2030-01-01T09:00:00.000000Z``). A date (or a
    time without a zone, which no store returns) is ISO 8601; anything else
    (a UUID, a path) is its text.
    """
    if isinstance(value, datetime) and value.utcoffset() is not None:
        return format_time(value)
    if isinstance(value, date | time):
        return value.isoformat()
    return str(value)


def problem_dict(problem: Problem) -> dict[str, Any]:
    """A problem ``verify``, ``verify-export`` or ``checkpoint --verify`` found: ``flow_id``, ``position``,
    ``revision``, ``kind``, ``detail`` (``""`` and ``0`` where it is not about one flow or one event)."""
    return dataclasses.asdict(problem)


def _json_escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # outside the BMP: a UTF-16 surrogate pair, as JSON spells it
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


# -- stored text -------------------------------------------------------------------

_KEPT = frozenset("\u200c\u200d")
"""Zero-width (non-)joiners: format characters, but part of emoji sequences and of words in many scripts."""


@lru_cache(maxsize=4096)
def _shown(char: str) -> str:
    """How one character is shown: as it is, or escaped as Python writes it (``\\x1b``, ``\\u202e``).

    Escaped: controls (C0 with newline and tab, DEL, C1), format characters
    (bidi embeddings, overrides, isolates and marks, zero-width spaces; not
    the joiners, nor the tags of flag emoji), line and paragraph separators,
    and lone surrogates.
    """
    category = unicodedata.category(char)
    if category in ("Cc", "Zl", "Zp", "Cs") or (
        category == "Cf" and char not in _KEPT and not "\U000e0020" <= char <= "\U000e007f"
    ):
        return repr(char)[1:-1]
    return char


def printable(text: object) -> str:
    """Stored text to show on a terminal: on one line, its control and bidi characters escaped.

    Ordinary text, accents and emoji included, is returned as it is.
    """
    text = text if isinstance(text, str) else str(text)
    return text if text.isprintable() else "".join(_shown(char) for char in text)


def status(text: str | None) -> str:
    """A status word in its colour."""
    if text is None:
        return "-"
    return click.style(printable(text), fg=colour_of(text))


@dataclass(frozen=True, slots=True)
class Styled:
    """A table cell with a style: the table pads the plain text, then styles it."""

    text: str
    fg: str | None = None
    bold: bool = False
    dim: bool = False

    def render(self, width: int) -> str:
        return click.style(printable(self.text).ljust(width), fg=self.fg, bold=self.bold, dim=self.dim)


Cell = str | Styled


def table(headers: Sequence[str], rows: Iterable[Sequence[Cell]], *, max_width: int = 60) -> Iterator[str]:
    """Lines of a table: a bold header, columns as wide as their widest cell (up to ``max_width``).

    Every column but the last is cut, so shown through ``printable``, and so
    is a ``Styled`` cell anywhere. The last column is neither padded nor cut,
    and a ``str`` there is printed as given, since it may carry styles: build
    it from ``printable``, ``cut``, ``compact`` or ``status`` pieces.
    """
    body = [
        [_cut(cell, max_width) if i < len(headers) - 1 else cell for i, cell in enumerate(row)]
        for row in rows
    ]
    widths = [len(name) for name in headers]
    for row in body:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths[i], len(_text(cell)))
    yield "  ".join(click.style(name.ljust(widths[i]), bold=True) for i, name in enumerate(headers)).rstrip()
    for row in body:
        cells = [_render(cell, widths[i]) for i, cell in enumerate(row[:-1])]
        yield "  ".join([*cells, _render(row[-1], 0)]).rstrip()


def _text(cell: Cell) -> str:
    return cell.text if isinstance(cell, Styled) else cell


def _render(cell: Cell, width: int) -> str:
    return cell.render(width) if isinstance(cell, Styled) else cell.ljust(width)


def _cut(cell: Cell, width: int) -> Cell:
    if isinstance(cell, Styled):
        return Styled(cut(cell.text, width), cell.fg, cell.bold, cell.dim)
    return cut(cell, width)


def cut(text: str, width: int) -> str:
    """``printable(text)``, shortened to ``width`` characters with an ellipsis (never inside an escape)."""
    shown = printable(text)
    if len(shown) <= width:
        return shown
    pieces, used = [], 0
    for char in text:
        piece = _shown(char)
        if used + len(piece) > width - 1:
            break
        pieces.append(piece)
        used += len(piece)
    return "".join(pieces) + "…"


def compact(value: Any, width: int = 60) -> str:
    """A JSON value on one short line."""
    return cut(orjson.dumps(value, default=str).decode(), width)


# -- times -------------------------------------------------------------------------

_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """An ISO 8601 time with a zone, a date (midnight UTC), or an age such as ``15m``, ``2h``, ``7d``."""
    match = _RELATIVE.match(text.strip())
    if match:
        amount, unit = match.groups()
        try:
            return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: int(amount)})
        except OverflowError as exc:
            raise InvalidInput(f"{text!r} is further back than the year 1") from exc
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidInput(
            f"{text!r} is not a time: use ISO 8601 (2030-01-01T09:00Z), a date, or 15m/2h/7d"
        ) from exc
    if moment.tzinfo is None:
        raise InvalidInput(f"{text!r} has no time zone; add Z or +00:00")
    return moment


def when(moment: datetime | None) -> str:
    """A time as people read it in a table, in UTC, to the second (the year in four digits, as 0001)."""
    # Not strftime("%Y"): glibc writes year 1 as "1", which shifts every column cut from this text.
    return "-" if moment is None else moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "seconds")


def clock(moment: datetime) -> str:
    """The time of day, in UTC, to the millisecond."""
    return moment.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3]


def took(seconds: float) -> str:
    """A duration, short: ``0.25s``, ``42s``, ``3m05s``, ``2h03m``, ``4d02h``."""
    if seconds < 10:
        return f"{seconds:.2f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


# -- events --------------------------------------------------------------------------


def actor_of(event: RecordedEvent) -> str:
    """Who recorded the event, to show (``printable``), or ``-``."""
    actor = event.metadata.get("actor")
    return "-" if actor is None else printable(actor)


def event_dict(event: RecordedEvent) -> dict[str, Any]:
    """An event as JSON for scripts: everything the log holds, hashes as hex."""
    return {
        "position": event.position,
        "flow_id": event.flow_id,
        "revision": event.revision,
        "event_id": str(event.event_id),
        "type": event.type,
        "schema_version": event.schema_version,
        "recorded_at": format_time(event.recorded_at),
        "actor": event.metadata.get("actor"),
        "data": event.data,
        "metadata": event.metadata,
        "hash": event.hash,
    }


def summarize(event: RecordedEvent, width: int = 90) -> str:
    """What an event says, in one line of at most ``width`` characters."""
    data = event.data
    describe = _SUMMARIES.get(event.type)
    try:
        text = describe(data) if describe is not None else compact(data, width)
    except (KeyError, TypeError, ValueError, AttributeError):
        text = compact(data, width)  # a hand-written event that lacks a field: show it raw
    return cut(text, width)


def _quote(value: Any) -> str:
    return f'"{value}"' if value else ""


def _join(*parts: str) -> str:
    return " · ".join(part for part in parts if part)


def _options(data: dict[str, Any]) -> str:
    values = [str(option.get("value")) for option in data.get("options") or [] if isinstance(option, dict)]
    return f"[{'|'.join(values)}]" if values else ""


_SUMMARIES: dict[str, Callable[[dict[str, Any]], str]] = {
    "FlowStarted": lambda d: _join(f'goal "{d["goal"]}"', f"session {d['owner_session_key']}"),
    "FlowForked": lambda d: f"fork of {d['origin_flow_id']}@{d['origin_revision']}",
    "FlowAdvanced": lambda d: _join(
        f"-> {d['current_step']}" if d.get("current_step") else "",
        f"state {compact(d['state_patch'], 50)}" if d.get("state_patch") else "",
    ),
    "FlowWaiting": lambda d: f"waiting for {d['waiting_for']}",
    "FlowResumed": lambda d: _join(
        f"resumed by {d['by']}" if d.get("by") else "resumed", compact(d.get("input"))
    ),
    "FlowCancelRequested": lambda d: _join(f"cancel requested by {d['by']}", _quote(d.get("reason"))),
    "FlowCancelled": lambda d: _join("cancelled", _quote(d.get("reason"))),
    "FlowFinished": lambda d: f"result {compact(d.get('result'))}",
    "FlowFailed": lambda d: f"failed: {d['error']}",
    "StepScheduled": lambda d: f"step {d['step_id']} ({d['name']}) scheduled",
    "StepStarted": lambda d: f"step {d['step_id']} started",
    "StepCompleted": lambda d: f"step {d['step_id']} completed: {compact(d.get('result'))}",
    "StepFailed": lambda d: f"step {d['step_id']} failed: {d['error']}",
    "StepSkipped": lambda d: _join(f"step {d['step_id']} skipped", _quote(d.get("reason"))),
    "StepTimedOut": lambda d: _join(f"step {d['step_id']} timed out", _quote(d.get("reason"))),
    "StepRetried": lambda d: _join(f"step {d['step_id']} retry #{d['retry_count']}", _quote(d.get("error"))),
    "GateOpened": lambda d: _join(f'gate on {d["step_id"]}: "{d["prompt"]}"', _options(d)),
    "GateApproved": lambda d: _join(
        f"gate on {d['step_id']} approved by {d['by']}",
        f"chose {', '.join(d['selections'])}" if d.get("selections") else "",
        _quote(d.get("feedback")),
    ),
    "GateRejected": lambda d: _join(
        f"gate on {d['step_id']} rejected by {d['by']}", _quote(d.get("feedback"))
    ),
    "LeaseAcquired": lambda d: f"lease to {d['owner_token']} (generation {d['generation']})",
    "LeaseReleased": lambda d: f"lease released by {d['owner_token']}",
    "DecisionRecorded": lambda d: _join(
        f'"{d["decision"]}"',
        f"confidence {d['confidence']:.2f}" if isinstance(d.get("confidence"), int | float) else "",
        d.get("rationale") or "",
    ),
    "CheckpointSaved": lambda d: (
        f"checkpoint {d['checkpoint_id']} step {d['metadata'].get('step', '?')} "
        f"({d['metadata'].get('source', '?')})"
        + (" channels: " + ", ".join(str(blob["channel"]) for blob in d["blobs"]) if d["blobs"] else "")
    ),
    "WritesSaved": lambda d: _writes(d),
    "InterruptRecorded": lambda d: _writes(d),
    "ResumeRecorded": lambda d: _writes(d),
    "TaskFailed": lambda d: _writes(d),
    "ThreadCopied": lambda d: f"copied from {d['source_flow_id']}@{d['source_revision']}",
    "CheckpointsDeleted": lambda d: _join(
        f"{_deleted_count(d)} checkpoints deleted", _quote(d.get("reason"))
    ),
    "ThreadDeleted": lambda d: _join(
        f"thread deleted ({d.get('checkpoints', '?')} checkpoints, {d.get('writes', '?')} writes)",
        _quote(d.get("reason")),
    ),
}


def _deleted_count(data: dict[str, Any]) -> str:
    """How many checkpoints a ``CheckpointsDeleted`` took: counted (``prune``), or listed."""
    if isinstance(data.get("checkpoints"), int):
        return str(data["checkpoints"])
    listed = data.get("checkpoint_ids")
    return str(len(listed)) if isinstance(listed, list) else "?"


def _writes(data: dict[str, Any]) -> str:
    """A LangGraph task's writes: its node (the last of its path) and the channels, with the
    readable value of a question, answer or error; ``--json`` has them whole. A task a ``Send``
    started has no node in its path (``~__pregel_push, <index>, ...``): it is named by its id."""
    path = str(data.get("task_path") or "")
    if path.startswith("~__pregel_push"):
        task = f"a Send's task {str(data.get('task_id') or '?')[:8]}"
    else:
        task = f"task {path.rsplit(', ', 1)[-1]}" if path else "the run's input"
    channels = [
        f"{write['channel']} {compact(_asked(write['value']), 40)}"
        if "value" in write
        else str(write["channel"])
        for write in data["writes"]
    ]
    return f"writes of {task}: {', '.join(channels)}"


def _asked(value: Any) -> Any:
    """LangGraph's interrupts (``[{"id", "value"}]``) as their values; anything else as it is."""
    if (
        isinstance(value, list)
        and value
        and all(isinstance(i, dict) and set(i) == {"id", "value"} for i in value)
    ):
        return [item["value"] for item in value]
    return value


# -- progress -----------------------------------------------------------------------


@contextmanager
def progress(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr while the block runs; call the function with how many are done.

    Shown only when stderr is a terminal: nothing is printed into a pipe or a log.
    """
    stream = sys.stderr
    if total <= 0 or not stream.isatty():
        yield lambda done: None
        return
    with click.progressbar(
        length=total, label=label, file=stream, show_pos=True, show_eta=True, color=_colour()
    ) as bar:

        def update(done: int) -> None:
            bar.update(min(done, total) - bar.pos)

        yield update


def live_line() -> Callable[[str], None]:
    """A function that writes a line on stderr over the one before it (``\\r``), padded to the
    widest so far: a shorter line (a rate that fell from 10,234 to 987 events/s) leaves no
    characters of a longer one behind it."""
    widest = 0

    def write(text: str) -> None:
        nonlocal widest
        widest = max(widest, len(text))
        click.echo("\r" + text.ljust(widest), nl=False, err=True)

    return write


def signal_setter(event: threading.Event) -> Callable[[int, FrameType | None], None]:
    """A signal handler that sets ``event``, from a short-lived thread.

    A handler runs in the main thread between two bytecodes, possibly while
    that thread is inside ``event.wait()`` holding the event's own lock;
    setting it there would wait for that lock for ever.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=event.set, daemon=True).start()

    return handler
