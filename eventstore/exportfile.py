"""The export file format: JSON Lines of stored events, a manifest beside them, and their check.

An export is two files. The events file holds one JSON object per line with
every stored field: payloads as the exact canonical JSON text that was hashed,
hashes as lowercase hex, so each hash re-checks offline. It is gzip-compressed
when its name ends in ``.gz``. Beside it, ``<events file>.manifest.json``
(``manifest.py``) pins what the events file holds: this module writes both and
checks that they agree. docs/exchange.md is the normative description.

This module needs no database: ``verify_export`` checks an export from its
two files alone. ``exporting.py`` writes exports from a store, ``importing.py`` imports them.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import stat
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import orjson

from .checks import check_callback
from .errors import EventStoreError, ExportInvalid, IntegrityViolation, InvalidInput, StorageError
from .integrity import GENESIS, Problem, StoredRow, check_envelope, format_time
from .manifest import FlowSegment, Manifest, manifest_path
from .merkle import RootBuilder
from .preparation import check_flow_id, check_type_name
from .serialization import canonical

PROGRESS_EVERY = 1000


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a long export, import, verification or retention run has got."""

    phase: str
    done: int
    total: int | None = None


ProgressCallback = Callable[[Progress], None]


# -- the format ------------------------------------------------------------------


def encode_line(row: StoredRow) -> bytes:
    """One line of the events file (``data`` and ``metadata`` already canonical text)."""
    return (
        orjson.dumps(
            {
                "position": row.position,
                "flow_id": row.flow_id,
                "revision": row.revision,
                "event_id": row.event_id,
                "type": row.type,
                "schema_version": row.schema_version,
                "recorded_at": row.recorded_at,
                "data": row.data,
                "metadata": row.metadata,
                "data_hash": row.data_hash.hex(),
                "metadata_hash": row.metadata_hash.hex(),
                "prev_hash": row.prev_hash.hex(),
                "hash": row.hash.hex(),
            }
        )
        + b"\n"
    )


_INTS = ("position", "revision", "schema_version")
_TEXTS = ("flow_id", "event_id", "type", "recorded_at", "data", "metadata")
_HASHES = ("data_hash", "metadata_hash", "prev_hash", "hash")
_HEX = frozenset("0123456789abcdef")


def decode_line(line: bytes) -> StoredRow:
    """Parse one line of an events file; ``ValueError`` says what is wrong with it."""
    try:
        item = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(item, dict) or set(item) != {*_INTS, *_TEXTS, *_HASHES}:
        raise ValueError("not an object with exactly the fields of an event")
    for name in _INTS:
        if type(item[name]) is not int:
            raise ValueError(f"{name} is not an integer")
    for name in _TEXTS:
        if not isinstance(item[name], str):
            raise ValueError(f"{name} is not a string")
    for name in _HASHES:
        value = item[name]
        if not isinstance(value, str) or len(value) != 64 or not _HEX.issuperset(value):
            raise ValueError(f"{name} is not 64 lowercase hex digits")
    if str(_uuid(item["event_id"])) != item["event_id"]:
        raise ValueError("event_id is not a lowercase hyphenated UUID")
    _check_storable(item)
    row = StoredRow(
        item["position"],
        item["flow_id"],
        item["revision"],
        item["event_id"],
        item["type"],
        item["schema_version"],
        item["data"],
        item["metadata"],
        item["recorded_at"],
        bytes.fromhex(item["data_hash"]),
        bytes.fromhex(item["metadata_hash"]),
        bytes.fromhex(item["prev_hash"]),
        bytes.fromhex(item["hash"]),
    )
    spelled = encode_line(row)
    if spelled != line:
        raise ValueError(_misspelling(line, spelled))
    return row


def _misspelling(line: bytes, spelled: bytes) -> str:
    """Why a line of sound values is not ``spelled``, the one spelling of them the format allows."""
    order = list(orjson.loads(spelled))
    if not line.endswith(b"\n"):
        return "the line does not end in \\n"
    if line.endswith(b"\r\n"):
        return "the line ends in \\r\\n, not \\n"
    try:
        names = [name for name, _ in json.loads(line, object_pairs_hook=lambda pairs: pairs)]
    except ValueError:  # a line orjson reads and the standard library does not: just say it differs
        names = order
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        return f"member {repeated[0]!r} appears more than once"
    if names != order:
        return "the members are not in the format's order"
    return (
        "not in the format's compact encoding (whitespace, or characters escaped that it writes as they are)"
    )


_LIMITS = {"position": (2**63 - 1, "2**63 - 1"), "revision": (2**31 - 1, "2**31 - 1")}
_LIMITS["schema_version"] = _LIMITS["revision"]
"""The largest value each integer column holds on both backends (revision and schema_version are INTEGER)."""


def _check_storable(item: dict[str, Any]) -> None:
    """What a store could have written: so an import gives back rows that read and verify as these."""
    for name in _INTS:
        if item[name] < 1:
            raise ValueError(f"{name} is below 1")
        highest, spelled = _LIMITS[name]
        if item[name] > highest:
            raise ValueError(f"{name} is above {spelled}, more than a store holds")
    try:
        check_flow_id(item["flow_id"])
        check_type_name(item["type"])
    except InvalidInput as exc:
        raise ValueError(str(exc)) from exc
    try:
        moment = datetime.fromisoformat(item["recorded_at"])
        canonical_time = format_time(moment) == item["recorded_at"]
    except (ValueError, OverflowError, InvalidInput):  # OverflowError: out of range once in UTC
        canonical_time = False
    if not canonical_time:
        raise ValueError("recorded_at is not a time in the canonical form YYYY-MM-DDTHH:MM:SS.ffffffZ")
    for name in ("data", "metadata"):
        try:
            value = orjson.loads(item[name])
            stored = isinstance(value, dict) and canonical(value, what=name) == item[name].encode()
        except (orjson.JSONDecodeError, EventStoreError):
            stored = False
        if not stored:
            raise ValueError(f"{name} is not a JSON object in the canonical encoding")


def _uuid_number(text: str) -> int | None:
    found = _uuid(text)
    return None if found is None else found.int


def _uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


# -- checking rows -----------------------------------------------------------------


@dataclass(slots=True)
class _Head:
    first_revision: int
    first_prev_hash: bytes
    revision: int
    hash: bytes
    position: int
    events: int


def holds_whole_flows(selection: dict[str, Any]) -> bool:
    """Whether an export of this selection holds each of its flows from revision 1.

    Every selection but a time range does; a range starts each flow at its
    first event in the range, and the manifest names the hash it chains from.
    """
    return selection.get("kind") != "range"


class ChainChecker:
    """Checks an export's rows as they come, keeping one small record per flow (and each event id).

    Each flow's rows must follow each other in revision order with rising
    positions, and with ``unique_ids`` no event id may appear twice. With
    ``whole_flows`` each flow must start at revision 1 (from GENESIS);
    otherwise (a time-range export) a flow may start at any revision, and
    then chains from the hash its first row names.
    """

    def __init__(self, *, whole_flows: bool, unique_ids: bool = True) -> None:
        self.whole_flows = whole_flows
        self.heads: dict[str, _Head] = {}
        self._ids: set[int] | None = set() if unique_ids else None
        """Every event id so far, as its number (about 80 bytes an event): no id may come twice."""
        self.events = 0
        self.first_position: int | None = None
        self.last_position: int | None = None

    def check(self, row: StoredRow) -> list[Problem]:
        problems = []

        def problem(kind: str, detail: str) -> None:
            problems.append(Problem(row.flow_id, row.position, row.revision, kind, detail))

        problems.extend(check_envelope(row))
        ids = self._ids
        number = None if ids is None else _uuid_number(row.event_id)
        if ids is not None and number is not None:
            if number in ids:
                problem("duplicate-event-id", f"event id {row.event_id} is also on an earlier line")
            ids.add(number)
        head = self.heads.get(row.flow_id)
        if head is None:
            if row.revision < 1:
                problem("revision-gap", f"revision {row.revision} is below 1")
            elif row.revision > 1 and self.whole_flows:
                missing = f"revisions 1 to {row.revision - 1}" if row.revision > 2 else "revision 1"
                problem("revision-gap", f"the flow starts at revision {row.revision}: {missing} missing")
            elif row.revision == 1 and row.prev_hash != GENESIS:
                problem("broken-link", "revision 1 does not chain from GENESIS")
            self.heads[row.flow_id] = _Head(
                row.revision, row.prev_hash, row.revision, row.hash, row.position, 1
            )
        else:
            if row.revision != head.revision + 1:
                problem("revision-gap", f"expected revision {head.revision + 1}, found {row.revision}")
            if row.prev_hash != head.hash:
                problem("broken-link", "prev_hash does not match the previous event's hash")
            if row.position <= head.position:
                problem("position-order", f"position {row.position} is not after {head.position}")
            head.revision, head.hash, head.position = row.revision, row.hash, row.position
            head.events += 1
        self.events += 1
        if self.first_position is None or row.position < self.first_position:
            self.first_position = row.position
        if self.last_position is None or row.position > self.last_position:
            self.last_position = row.position
        return problems

    def segments(self) -> tuple[FlowSegment, ...]:
        return tuple(
            FlowSegment(
                flow_id, h.first_revision, h.first_prev_hash.hex(), h.revision, h.hash.hex(), h.events
            )
            for flow_id, h in sorted(self.heads.items())
        )


# -- writing ------------------------------------------------------------------------


def write_export(
    path: Path,
    rows: Iterable[StoredRow],
    selection: dict[str, Any],
    source: dict[str, Any],
    checkpoint: dict[str, Any] | None,
    now: datetime,
    progress: ProgressCallback | None = None,
    *,
    overwrite: bool = False,
) -> Manifest:
    """Write rows (payloads as canonical text) and their manifest; both appear only when complete.

    Either file existing already is ``InvalidInput`` unless ``overwrite``
    (checked before the rows are read, and again before the files are put in
    place).
    """
    _refuse_existing(path, overwrite=overwrite)
    partial = path.with_name(path.name + ".partial")
    # The store's unique index keeps its event ids apart: no need to hold them all in memory.
    checker = ChainChecker(whole_flows=holds_whole_flows(selection), unique_ids=False)
    problems: list[Problem] = []
    try:
        with open(partial, "wb") as raw:
            sink = _HashingWriter(raw)
            buffered = io.BufferedWriter(sink, 1 << 20)
            out: gzip.GzipFile | io.BufferedWriter[_HashingWriter] = (
                gzip.GzipFile(filename="", mode="wb", fileobj=buffered, compresslevel=6, mtime=0)
                if path.name.endswith(".gz")
                else buffered
            )
            for row in rows:
                problems.extend(checker.check(row))
                out.write(encode_line(row))
                if progress is not None and checker.events % PROGRESS_EVERY == 0:
                    progress(Progress("exporting", checker.events))
            if out is not buffered:
                out.close()
            buffered.flush()
            raw.flush()
            os.fsync(raw.fileno())
        if problems:
            shown = "; ".join(str(p) for p in problems[:3])
            raise IntegrityViolation(
                f"the store's hash chains are broken ({shown}): nothing was exported", problems=problems
            )
        _refuse_existing(path, overwrite=overwrite)
        os.replace(partial, path)
        manifest = Manifest(
            events_file=path,
            sha256=sink.sha256.hexdigest(),
            event_count=checker.events,
            flows=checker.segments(),
            first_position=checker.first_position,
            last_position=checker.last_position,
            created_at=format_time(now),
            selection=selection,
            source=source,
            checkpoint=checkpoint,
        )
        write_durably(manifest.path, manifest.to_json())
    except OSError as exc:
        _remove(partial)
        raise StorageError(f"cannot write the export {path}: {exc}") from exc
    except BaseException:
        _remove(partial)
        raise
    if progress is not None:
        progress(Progress("exporting", checker.events, checker.events))
    return manifest


def refuse_non_file(path: Path) -> None:
    """``InvalidInput`` if ``path`` is there but not a regular file (a device, a FIFO, a directory):
    replacing it would put a file in its place (``/dev/null``, for root)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # nothing there: a new file is written
    if not stat.S_ISREG(mode):
        raise InvalidInput(f"{path} is not a regular file: not replacing it")


def _refuse_existing(path: Path, *, overwrite: bool) -> None:
    """``InvalidInput`` if the export's events file or manifest exists and may not be replaced."""
    if overwrite:
        refuse_non_file(path)
        refuse_non_file(manifest_path(path))
        return
    for target in (path, manifest_path(path)):
        # os.path, not Path.exists: a name too long is "not there", for the write to report
        if os.path.exists(target):
            raise InvalidInput(
                f"{target} exists already: export to a new file, or replace it "
                "(overwrite=True; `eventstore export --force`)"
            )


def _remove(partial: Path) -> None:
    """Remove a half-written file if it can be: on a read-only disk that fails too, and must not
    hide the error that brought us here."""
    with contextlib.suppress(OSError):
        partial.unlink(missing_ok=True)


def write_durably(path: Path, content: bytes) -> None:
    """Write a file through a temporary name, synced, so it is whole or absent."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as out:
        out.write(content)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class _HashingWriter(io.RawIOBase):
    """Writes through to a file, hashing the bytes as they land on disk."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.sha256.update(data)
        return self._raw.write(data)


# -- verifying a file ----------------------------------------------------------------


@dataclass(slots=True)
class ExportReport:
    """What ``verify_export`` checked and every problem it found."""

    manifest: Manifest | None = None
    events_checked: int = 0
    flows_checked: int = 0
    checkpoint_checked: bool = False
    """True if the file holds every event up to the manifest's checkpoint, and its Merkle root matched."""
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_export(path: str | os.PathLike[str], *, progress: ProgressCallback | None = None) -> ExportReport:
    """Check an export using nothing but its two files.

    The manifest must be readable; the events file must have the manifest's
    SHA-256, and each line must parse, match its digests and hash and chain
    onto the line before it in its flow, with no event id twice and, unless
    the export is a time range, each flow from revision 1; counts, positions
    and each flow's first and last revision and hash must be those the
    manifest lists. If the
    manifest carries a checkpoint, its signature is checked against its own
    key, and when the file holds every event up to its tree size, the Merkle
    root is recomputed from the file and compared.
    """
    check_callback("progress", progress)
    return scan_export(path, progress=progress)


def scan_export(
    path: str | os.PathLike[str],
    *,
    on_row: Callable[[StoredRow], None] | None = None,
    strict: bool = False,
    expected: Manifest | None = None,
    progress: ProgressCallback | None = None,
    phase: str = "verifying",
) -> ExportReport:
    """``verify_export``, also handing each sound row to ``on_row``.

    With ``strict`` the first problem raises ``ExportInvalid`` at once (an
    importer's second pass: the file changed since it was verified). With
    ``expected``, a manifest other than that one is a problem before any line
    is read.
    """
    report = ExportReport()
    try:
        manifest = report.manifest = Manifest.read(path)
    except ExportInvalid as exc:
        problems = [Problem("", 0, 0, "manifest", str(p)) for p in exc.problems]
        return _reported(report, problems, exc.path, strict)
    if expected is not None and manifest != expected:
        detail = "the manifest differs from the one read before"
        return _reported(report, [Problem("", 0, 0, "manifest", detail)], str(manifest.path), strict)
    checker = ChainChecker(whole_flows=holds_whole_flows(manifest.selection))
    checkpoint = _Checkpoint(manifest.checkpoint, report)
    try:
        with open(manifest.events_file, "rb") as raw:
            hashing = _HashingReader(raw)
            lines: gzip.GzipFile | io.BufferedReader = (
                gzip.GzipFile(fileobj=io.BufferedReader(hashing, 1 << 20), mode="rb")
                if manifest.compression
                else io.BufferedReader(hashing, 1 << 20)
            )
            for number, line in enumerate(lines, 1):
                problems = _check_line(number, line, checker, checkpoint, on_row)
                if problems and strict:
                    raise ExportInvalid(str(manifest.events_file), problems)
                report.problems.extend(problems)
                if progress is not None and number % PROGRESS_EVERY == 0:
                    progress(Progress(phase, number, manifest.event_count))
            hashing.drain()
    except FileNotFoundError:
        problem = Problem("", 0, 0, "missing-file", f"{manifest.events_file} does not exist")
        return _reported(report, [problem], str(manifest.events_file), strict)
    except (OSError, EOFError, zlib.error) as exc:
        problem = Problem("", 0, 0, "unreadable", f"{manifest.events_file}: {exc}")
        return _reported(report, [problem], str(manifest.events_file), strict)
    report.events_checked, report.flows_checked = checker.events, len(checker.heads)
    report.problems.extend(_compare(manifest, checker, hashing.sha256.hexdigest()))
    checkpoint.finish()
    if strict and report.problems:
        raise ExportInvalid(str(manifest.events_file), report.problems)
    if progress is not None:
        progress(Progress(phase, checker.events, manifest.event_count))
    return report


def _reported(report: ExportReport, problems: list[Problem], path: str, strict: bool) -> ExportReport:
    """The report of a scan that cannot go on; with ``strict``, ``ExportInvalid`` instead."""
    report.problems.extend(problems)
    if strict:
        raise ExportInvalid(path, report.problems)
    return report


def _check_line(
    number: int,
    line: bytes,
    checker: ChainChecker,
    checkpoint: _Checkpoint,
    on_row: Callable[[StoredRow], None] | None,
) -> list[Problem]:
    try:
        row = decode_line(line)
    except ValueError as exc:
        return [Problem("", 0, 0, "malformed-line", f"line {number}: {exc}")]
    problems = checker.check(row)
    checkpoint.add(row)
    if not problems and on_row is not None:
        on_row(row)
    return problems


def _compare(manifest: Manifest, checker: ChainChecker, sha256: str) -> list[Problem]:
    problems = []

    def mismatch(kind: str, detail: str, flow_id: str = "") -> None:
        problems.append(Problem(flow_id, 0, 0, kind, detail))

    if sha256 != manifest.sha256:
        mismatch(
            "sha256-mismatch", f"the events file's SHA-256 is {sha256}, the manifest says {manifest.sha256}"
        )
    if checker.events != manifest.event_count:
        mismatch(
            "count-mismatch", f"{checker.events} events in the file, {manifest.event_count} in the manifest"
        )
    found = (checker.first_position, checker.last_position)
    if found != (manifest.first_position, manifest.last_position):
        listed = (manifest.first_position, manifest.last_position)
        mismatch("count-mismatch", f"positions {found} in the file, {listed} in the manifest")
    listed_flows = {s.flow_id: s for s in manifest.flows}
    for segment in checker.segments():
        expected = listed_flows.pop(segment.flow_id, None)
        if expected != segment:
            mismatch(
                "head-mismatch", f"the file holds {segment}, the manifest lists {expected}", segment.flow_id
            )
    for flow_id in listed_flows:
        mismatch("head-mismatch", "listed in the manifest, but not in the file", flow_id)
    return problems


class _Checkpoint:
    """Recomputes the Merkle root of the manifest's checkpoint while the lines go by, if it can.

    It can when the lines start at position 1 and go on without a gap, in
    order, at least to the checkpoint's tree size: a whole-log export of a
    store that has pruned nothing before that size.
    """

    def __init__(self, document: dict[str, Any] | None, report: ExportReport) -> None:
        self._report = report
        self._builder: RootBuilder | None = None
        self._size = 0
        self._root = b""
        self._matched: bool | None = None
        if document is None:
            return
        from .checkpoints import Checkpoint, verify_checkpoint_signature

        try:
            checkpoint = Checkpoint.from_dict(document)
            verify_checkpoint_signature(checkpoint)
        except EventStoreError as exc:
            report.problems.append(Problem("", 0, 0, "checkpoint", str(exc)))
            return
        self._builder, self._size, self._root = RootBuilder(), checkpoint.tree_size, checkpoint.root_hash

    def add(self, row: StoredRow) -> None:
        builder = self._builder
        if builder is None or self._matched is not None:
            return
        if row.position != builder.size + 1:
            self._builder = None  # a gap or another order: this file cannot show the root
            return
        builder.append(row.hash)
        if builder.size == self._size:
            self._matched = builder.root() == self._root

    def finish(self) -> None:
        if self._matched is False:
            detail = f"the Merkle root of the first {self._size} events is not the checkpoint's"
            self._report.problems.append(Problem("", self._size, 0, "checkpoint-mismatch", detail))
        self._report.checkpoint_checked = self._matched is True


class _HashingReader(io.RawIOBase):
    """Reads a file, hashing every byte read from it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self._raw.readinto(buffer)  # type: ignore[attr-defined]  # a file opened "rb"
        if count:
            self.sha256.update(memoryview(buffer)[:count])
        return int(count or 0)

    def drain(self) -> None:
        """Hash whatever the reader above did not need (trailing bytes)."""
        while chunk := self._raw.read(1 << 20):
            self.sha256.update(chunk)
