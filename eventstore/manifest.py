"""An export's manifest: what the events file beside it holds, and the check of its own shape.

``<events file>.manifest.json`` holds the counts, each flow's first and last
revision and hash, the first and last position, the SHA-256 of the events
file, the selection the export was made with and the source's latest signed
checkpoint. ``Manifest.read`` refuses a manifest whose members do not have the
shapes an export writes (``ExportInvalid``); whether the events file agrees
with it is ``exportfile.py``'s check. docs/exchange.md is the normative
description.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from .checks import MAX_COUNT, encodable, shown
from .errors import ExportInvalid, InvalidInput
from .integrity import format_time
from .wording import nouns

FORMAT = "agent-eventstore/export"
FORMAT_VERSION = 1
MANIFEST_SUFFIX = ".manifest.json"


@dataclass(frozen=True, slots=True)
class FlowSegment:
    """One flow's events in an export: revisions ``first_revision .. last_revision``.

    ``first_prev_hash`` is what the first event chains from: 64 zeros when the
    segment starts at revision 1, else the hash of the event before it, which
    the importing store must already hold.
    """

    flow_id: str
    first_revision: int
    first_prev_hash: str
    last_revision: int
    last_hash: str
    events: int


@dataclass(frozen=True, slots=True)
class Manifest:
    """What an export holds, written beside its events file."""

    events_file: Path
    sha256: str
    event_count: int
    flows: tuple[FlowSegment, ...]
    first_position: int | None
    last_position: int | None
    created_at: str
    selection: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    checkpoint: dict[str, Any] | None = None

    @property
    def path(self) -> Path:
        return manifest_path(self.events_file)

    @property
    def compression(self) -> str | None:
        return "gzip" if self.events_file.name.endswith(".gz") else None

    @property
    def unfinished_import(self) -> dict[str, Any] | None:
        """The import the source store had unfinished while this was exported (the record of it,
        ``source["unfinished_import"]``): the export may lack the rest of that import's events."""
        found = self.source.get("unfinished_import")
        return found if isinstance(found, dict) else None

    @property
    def pruned(self) -> dict[str, Any] | None:
        """What retention had pruned from the source store (``flows``, ``events``, ``archives``) when
        a selection across flows was exported (``source["pruned"]``): none of it is in the export.
        Of a session's export, the flows the session owned and the ``unknown_owner`` of them whose
        owner the store did not record (pruned before migration 0019), with the ``session``."""
        found = self.source.get("pruned")
        return found if isinstance(found, dict) else None

    @property
    def warnings(self) -> tuple[str, ...]:
        """What a user of this export should know that its counts do not say."""
        found, pruned, said = self.unfinished_import, self.pruned, []
        if found is not None:
            said.append(
                f"the source store had an unfinished import of {found.get('events_file')} (export SHA-256 "
                f"{str(found.get('export_sha256'))[:16]}…, {found.get('events_imported')} of its "
                f"{found.get('event_count')} events in) while this was exported: the export may lack "
                "the rest of that import's events"
            )
        if pruned is not None:
            flows, archives = pruned.get("flows", 0), pruned.get("archives", 0)
            said.append(
                f"the source store had pruned {flows} {nouns(flows, 'flow')} ({pruned.get('events')} events) "
                f"into {archives} retention {nouns(archives, 'archive')}: "
                f"{_held(pruned)}, and none is in this export (`eventstore archive list` names the archives)"
            )
        return tuple(said)

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2) + b"\n"

    def to_dict(self) -> dict[str, Any]:
        """The manifest document, as written to its file."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created_at": self.created_at,
            "events_file": self.events_file.name,
            "compression": self.compression,
            "sha256": self.sha256,
            "event_count": self.event_count,
            "flow_count": len(self.flows),
            "first_position": self.first_position,
            "last_position": self.last_position,
            "selection": self.selection,
            "source": self.source,
            "checkpoint": self.checkpoint,
            "flows": [
                {
                    "flow_id": s.flow_id,
                    "first_revision": s.first_revision,
                    "first_prev_hash": s.first_prev_hash,
                    "last_revision": s.last_revision,
                    "last_hash": s.last_hash,
                    "events": s.events,
                }
                for s in self.flows
            ],
        }

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Manifest:
        """The manifest of an export (its own path or its events file's); ``ExportInvalid`` if unusable."""
        events_path, document_path = export_paths(path)
        try:
            document = orjson.loads(document_path.read_bytes())
        except FileNotFoundError as exc:
            if not os.path.lexists(events_path):  # neither file: the name is wrong, not the manifest lost
                raise InvalidInput(f"no export at {events_path}: the file is not there") from exc
            raise InvalidInput(
                f"no export manifest at {document_path}: the export {events_path} is there without it"
            ) from exc
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ExportInvalid(str(document_path), [f"the manifest cannot be read: {exc}"]) from exc
        try:
            return cls._parse(events_path, document)
        except (KeyError, TypeError, ValueError) as exc:
            detail = (
                str(exc) if type(exc) is ValueError else repr(exc)
            )  # a KeyError('sha256') names what is missing
            raise ExportInvalid(str(document_path), [f"the manifest is malformed: {detail}"]) from exc

    @classmethod
    def _parse(cls, events_path: Path, document: Any) -> Manifest:
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError(f"not an {FORMAT} manifest")
        if document["format_version"] != FORMAT_VERSION:
            raise ValueError(f"format version {document['format_version']!r}; this library reads 1")
        if document["events_file"] != events_path.name:
            raise ValueError(f"it describes {document['events_file']!r}, not {events_path.name!r}")
        flows = tuple(
            FlowSegment(
                str(s["flow_id"]),
                _count(s["first_revision"], "a flow's first_revision"),
                str(s["first_prev_hash"]),
                _count(s["last_revision"], "a flow's last_revision"),
                str(s["last_hash"]),
                _count(s["events"], "a flow's events"),
            )
            for s in document["flows"]
        )
        if len(flows) != document["flow_count"]:
            raise ValueError("flow_count does not match the flows listed")
        listed: set[str] = set()
        for segment in flows:
            if segment.flow_id in listed:
                raise ValueError(f"it lists flow {segment.flow_id!r} more than once")
            listed.add(segment.flow_id)
        positions = (document["first_position"], document["last_position"])
        checkpoint = document["checkpoint"]
        event_count = _count(document["event_count"], "event_count")
        if event_count != sum(s.events for s in flows):
            raise ValueError(f"event_count {event_count} is not the sum of the flows' events")
        return cls(
            events_file=events_path,
            sha256=str(document["sha256"]),
            event_count=event_count,
            flows=flows,
            first_position=None if positions[0] is None else _count(positions[0], "first_position"),
            last_position=None if positions[1] is None else _count(positions[1], "last_position"),
            created_at=str(document["created_at"]),
            selection=_selection(document["selection"], flows),
            source=_object(document["source"], "source"),
            checkpoint=None if checkpoint is None else _object(checkpoint, "checkpoint"),
        )


_SELECTION_KEYS = {
    "all": {"kind"},
    "flow": {"kind", "flow_id"},
    "flows": {"kind"},
    "session": {"kind", "session"},
    "range": {"kind", "since", "until"},
}
"""The members of each kind of ``selection`` an export writes (docs/exchange.md, the manifest)."""


def _held(pruned: dict[str, Any]) -> str:
    """Whether the selection held the pruned flows ``source["pruned"]`` counts: a session's it owned
    did; those of unknown owner may have (a manifest read from a file: any member may be odd)."""
    session, unknown = pruned.get("session"), pruned.get("unknown_owner")
    if not isinstance(session, str) or not isinstance(unknown, int):
        return "the selection may have held some of them"
    flows = pruned.get("flows")
    owned = flows - unknown if isinstance(flows, int) else 0
    said = [f"owned {owned}"] if owned > 0 else []
    if unknown > 0:
        said.append(f"may have owned some of the {unknown} pruned before the store recorded their owners")
    return f"session {session!r} {' and '.join(said)}" if said else "the selection may have held some of them"


def _selection(value: Any, flows: tuple[FlowSegment, ...]) -> dict[str, Any]:
    """The manifest's ``selection``: one of the shapes an export writes, agreeing with the flows listed."""
    selection = _object(value, "selection")
    kind = selection.get("kind")
    if not isinstance(kind, str) or kind not in _SELECTION_KEYS:
        raise ValueError(f"selection kind {kind!r} is not one of {', '.join(_SELECTION_KEYS)}")
    if set(selection) != _SELECTION_KEYS[kind]:
        members = ", ".join(sorted(_SELECTION_KEYS[kind]))
        raise ValueError(f"a {kind!r} selection has the members {members}, not {sorted(selection)}")
    if kind == "flow":
        flow_id = selection["flow_id"]
        if not isinstance(flow_id, str) or not flow_id:
            raise ValueError(f"the selection's flow_id is {flow_id!r}, not a flow id")
        others = [s.flow_id for s in flows if s.flow_id != flow_id]
        if others:
            raise ValueError(f"the selection is flow {flow_id!r}, but it lists flow {others[0]!r}")
    if kind == "session" and not isinstance(selection["session"], str):
        raise ValueError(f"the selection's session is {selection['session']!r}, not a string")
    if kind == "range":
        since, until = (_bound(selection, name) for name in ("since", "until"))
        if since is not None and until is not None and since > until:
            raise ValueError(f"the selection's range is reversed: since {selection['since']} is after until")
    return selection


def _bound(selection: dict[str, Any], name: str) -> datetime | None:
    """A range selection's bound: null or a time in ``format_time``'s spelling."""
    text = selection[name]
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text) if isinstance(text, str) and text.endswith("Z") else None
    except ValueError:
        moment = None
    if moment is None or format_time(moment) != text:  # a time ending in Z is in UTC: format_time takes it
        raise ValueError(
            f"the selection's {name} is {text!r}, not null or a UTC time such as 2030-01-01T00:00:00.000000Z"
        )
    return moment


def _count(value: Any, name: str) -> int:
    """A whole number from 0 to ``MAX_COUNT``. JSON's 1e30, 2.0, and whole numbers past 64 bits (which
    the JSON parser reads as floats) are not counts: named as such, not shown as a float."""
    if type(value) is int and 0 <= value <= MAX_COUNT:
        return value
    shown = (
        "a number with a fraction or an exponent, or past 64 bits" if type(value) is float else repr(value)
    )
    raise ValueError(f"{name} is {shown}, not a count (a whole number from 0 to {MAX_COUNT})")


def _object(value: Any, name: str) -> dict[str, Any]:
    """A member that must be a JSON object: a list of pairs (which ``dict()`` would take) is refused."""
    if not isinstance(value, dict):
        raise ValueError(f"{name} is {type(value).__name__} {value!r}, not a JSON object")
    return dict(value)


def manifest_path(events_path: Path) -> Path:
    """The manifest beside ``events_path``.

    ``InvalidInput`` for a path with no file name (``""``, ``/``) or one that is
    not UTF-8, which the manifest could not record.
    """
    if not events_path.name:
        raise InvalidInput(f"an export needs a file name, not {os.fspath(events_path)!r}")
    if not encodable(events_path.name):  # the manifest names its events file, in JSON
        raise InvalidInput(f"an export's file name must be valid UTF-8, not {events_path.name!r}")
    return events_path.with_name(events_path.name + MANIFEST_SUFFIX)


def export_path(path: Any) -> Path:
    """``path`` as a ``Path``; ``InvalidInput`` for one that names no file (not a str or a str
    ``os.PathLike``, or holding NUL, which the OS refuses with a ``ValueError`` of its own)."""
    try:
        given = Path(path)
    except TypeError as exc:
        raise InvalidInput(f"an export's path must be a str or os.PathLike, not {shown(path)}") from exc
    if "\x00" in str(given):
        raise InvalidInput(f"an export's path may not hold NUL characters, not {shown(str(given))}")
    return given


def export_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(events file, manifest) of an export named by either of its two files."""
    given = export_path(path)
    if given.name.endswith(MANIFEST_SUFFIX):
        return given.with_name(given.name[: -len(MANIFEST_SUFFIX)]), given
    return given, manifest_path(given)
