"""Import an export into a store; a restore from a retention archive reuses it (``run_import``).

An import re-verifies every chain and the manifest before it writes
anything, keeps event ids, revisions, times and hashes, and gives the events
new positions at the end of the log (a chain hash does not cover the
position). It writes a batch per transaction and is resumable; an import cut
short is recorded in ``unfinished_imports`` (``unfinished_import.py``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson
import sqlalchemy as sa

from .checks import check_callback, check_count
from .errors import ExportInvalid, ImportConflict, InvalidInput, StorageError
from .events import RecordedEvent, uuid_from_bytes
from .exportfile import PROGRESS_EVERY, Progress, ProgressCallback, scan_export
from .integrity import GENESIS, Problem, StoredRow, format_time
from .manifest import FlowSegment, Manifest
from .privileged import CHUNK, chunks, insert_stored, lock_appends
from .projection import apply_inline
from .schema import flow_events, flow_tombstones
from .store import EventStore, Transaction
from .unfinished_import import UnfinishedImport, read_unfinished, record_progress


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import wrote, and what it found already there."""

    events_imported: int
    events_skipped: int
    """Events the store already held (an exact prefix of the export's flow)."""
    flows_imported: tuple[str, ...]
    flows_present: tuple[str, ...]
    """Flows the store already held in full: nothing to write."""
    first_position: int | None
    last_position: int | None
    warnings: tuple[str, ...] = ()
    """The export's own (``Manifest.warnings``): say, its source had an import unfinished."""


Completion = Callable[[sa.Connection, list[str]], None]
"""Called inside an import's transaction with the flows whose last event it just wrote."""

Head = tuple[int, bytes | None]


def import_events(
    store: EventStore,
    path: str | os.PathLike[str],
    *,
    batch_size: int = 1000,
    progress: ProgressCallback | None = None,
) -> ImportReport:
    """Import an export (named by its events file or its manifest) into ``store``.

    First the whole file is verified (manifest, SHA-256, every chain) and
    checked against the store: a flow the store does not have must start at
    revision 1; a flow it has must be continued exactly, the export's events
    up to the store's revision being the store's own (they are skipped);
    anything else, a pruned flow, or an event id stored already, is an
    ``ImportConflict``. A broken file raises ``ExportInvalid``. Either way
    nothing is written.

    Then the events are inserted in file order, ``batch_size`` per
    transaction, keeping their ids, revisions, times and hashes, at new
    positions. The store's inline projections are applied in each of those
    transactions; catch-up projections see the events as new. Importing the
    same file twice writes nothing the second time.
    """
    return run_import(store, path, batch_size=batch_size, progress=progress, record=True)


def run_import(
    store: EventStore,
    path: str | os.PathLike[str],
    *,
    only: Collection[str] | None = None,
    pruned: Collection[str] = (),
    on_complete: Completion | None = None,
    batch_size: int = 1000,
    progress: ProgressCallback | None = None,
    record: bool = False,
) -> ImportReport:
    """``import_events`` for the flows in ``only`` (default all), allowing the ``pruned`` ones back;
    with ``record``, the import is recorded in ``unfinished_imports`` until its last batch is in."""
    check_count("batch_size", batch_size, minimum=1)
    check_callback("progress", progress)
    manifest = Manifest.read(path)
    segments = {s.flow_id: s for s in manifest.flows if only is None or s.flow_id in only}
    missing = sorted(set(only or ()) - set(segments))
    if missing:
        raise InvalidInput(f"the export holds no events of {', '.join(map(repr, missing))}")
    with store.reading() as conn:  # the store's translation of driver errors
        heads = flow_heads(conn, list(segments))
        tombstones = _tombstones(conn, list(segments))
        unfinished = read_unfinished(conn) if record else None
    if unfinished is not None and unfinished.export_sha256 != manifest.sha256:
        raise unfinished.refusal(_refused_outcome(unfinished, manifest))  # before the file is read
    plan = _Plan(store, segments, heads)
    report = scan_export(path, on_row=plan.collect, expected=manifest, progress=progress, phase="verifying")
    if not report.ok:
        raise ExportInvalid(str(manifest.events_file), report.problems)
    plan.check_ids()
    try:
        plan.decide(tombstones, set(pruned))
    except ImportConflict as exc:
        if unfinished is None:
            raise
        # this export's import was cut short, and this conflict stops any import of it finishing
        raise ImportConflict(exc.flow_id, f"{exc.reason}; {unfinished.abandon_hint()}") from exc
    writer = _Writer(
        store, plan, manifest, batch_size, on_complete, progress, record=record, unfinished=unfinished
    )
    try:
        scan_export(path, on_row=writer.add, strict=True, expected=manifest)
        writer.flush(final=True)
    except StorageError as exc:  # the database failed part way: say what is in, and how to finish
        raise type(exc)(f"{exc}; {writer.stopped()}") from exc
    except ExportInvalid as exc:  # the file changed since pass one: what went in chains on, but say so
        exc.args = (
            f"{exc}; the export changed after it was verified, so {writer.stopped(writer.changed())}",
        )
        raise
    return writer.report()


def _refused_outcome(unfinished: UnfinishedImport, manifest: Manifest) -> str:
    """What an import refused for another export's unfinished one wrote (nothing), and, when its
    file is where that import's was, that the file there is not that export any more."""
    if unfinished.events_file != str(Path(manifest.events_file).resolve()):
        return "nothing was imported"
    return (
        f"the file there now is another export (SHA-256 {manifest.sha256[:16]}…), so importing it again "
        f"cannot finish that import: only the export it began with can; nothing was imported"
    )


def flow_heads(conn: sa.Connection, flow_ids: Sequence[str]) -> dict[str, Head]:
    """The (revision, hash) of each flow's last event; flows without events are left out."""
    c, m = flow_events.c, flow_events.alias("m").c
    last = sa.select(sa.func.max(m.revision)).where(m.flow_id == c.flow_id).scalar_subquery()
    heads: dict[str, Head] = {}
    for chunk in chunks(flow_ids):
        query = sa.select(c.flow_id, c.revision, c.hash).where(c.flow_id.in_(chunk), c.revision == last)
        heads.update(
            (flow_id, (revision, bytes(digest))) for flow_id, revision, digest in conn.execute(query)
        )
    return heads


def _tombstones(conn: sa.Connection, flow_ids: Sequence[str]) -> dict[str, str]:
    t = flow_tombstones.c
    found: dict[str, str] = {}
    for chunk in chunks(flow_ids):
        rows = conn.execute(sa.select(t.flow_id, t.archive_id).where(t.flow_id.in_(chunk)))
        found.update((flow_id, archive_id) for flow_id, archive_id in rows)
    return found


class _Plan:
    """What the store has of each flow, what the export adds, and whether the two fit."""

    def __init__(self, store: EventStore, segments: dict[str, FlowSegment], heads: dict[str, Head]) -> None:
        self.store = store
        self.segments = segments
        self.have = {flow_id: heads.get(flow_id, (0, None)) for flow_id in segments}
        self.file_hash_at_have: dict[str, bytes] = {}
        self._ids: list[tuple[str, str]] = []
        self.conflicts: list[ImportConflict] = []
        self.to_write = 0
        """The export's events the store lacks: what pass two writes."""

    def collect(self, row: StoredRow) -> None:
        """Pass one: note the export's hash at the store's revision, and the ids to be written."""
        have = self.have.get(row.flow_id)
        if have is None:
            return
        if row.revision == have[0]:
            self.file_hash_at_have[row.flow_id] = row.hash
        elif row.revision > have[0]:
            self.to_write += 1
            self._ids.append((row.flow_id, row.event_id))
            if len(self._ids) >= CHUNK:
                self.check_ids()

    def check_ids(self) -> None:
        ids, self._ids = self._ids, []
        if not ids or self.conflicts:
            return
        found = _stored_id(self.store, ids)
        if found is not None:
            flow_id, detail = found
            self.conflicts.append(ImportConflict(flow_id, detail))

    def decide(self, tombstones: dict[str, str], pruned: set[str]) -> None:
        """Raise the first conflict between the export and the store, if there is one."""
        for flow_id, segment in self.segments.items():
            reason = self._reason(segment, tombstones.get(flow_id), flow_id in pruned)
            if reason is not None:
                self.conflicts.append(ImportConflict(flow_id, reason))
        if self.conflicts:
            first = self.conflicts[0]
            if len(self.conflicts) > 1:
                raise ImportConflict(
                    first.flow_id, f"{first.reason} (and {len(self.conflicts) - 1} more flows)"
                )
            raise first

    def _reason(self, segment: FlowSegment, archive: str | None, may_be_pruned: bool) -> str | None:
        have, have_hash = self.have[segment.flow_id]
        first, last = segment.first_revision, segment.last_revision
        if archive is not None and not may_be_pruned:
            return f"it was pruned from this store into archive {archive!r}: restore it from there"
        if have == 0:
            if first == 1:
                return None
            return (
                f"the export starts at revision {first}, and this store has none of the revisions before it"
            )
        if have < first - 1:
            return f"the export starts at revision {first}, and this store stops at revision {have}"
        if have == first - 1:
            ok = have_hash is not None and segment.first_prev_hash == have_hash.hex()
        elif have <= last:
            ok = self.file_hash_at_have.get(segment.flow_id) == have_hash
        else:
            ok = self._stored_hash(segment.flow_id, last) == bytes.fromhex(segment.last_hash)
        return (
            None
            if ok
            else f"this store's revision {min(have, last)} is not the export's: the histories differ"
        )

    def _stored_hash(self, flow_id: str, revision: int) -> bytes | None:
        c = flow_events.c
        found = self.store._fetch(sa.select(c.hash).where(c.flow_id == flow_id, c.revision == revision))
        return bytes(found[0][0]) if found else None


def _stored_id(store: EventStore, ids: list[tuple[str, str]]) -> tuple[str, str] | None:
    """The first of these (flow, event id) pairs whose id the store holds: its flow, and what is stored."""
    c = flow_events.c
    sqlite = store.dialect == "sqlite"
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        params = [uuid.UUID(event_id).bytes if sqlite else uuid.UUID(event_id) for _, event_id in chunk]
        found = store._fetch(sa.select(c.event_id, c.flow_id).where(c.event_id.in_(params)).limit(1))
        if found:
            stored, owner = found[0]
            event_id = str(uuid_from_bytes(stored) if sqlite else stored)
            flow_id = next(flow for flow, e in chunk if e == event_id)
            return flow_id, f"its event {event_id} is already stored (in flow {owner!r})"
    return None


class _Refused(Exception):
    """A batch's insert broke a unique key; carried out of the transaction to be explained."""

    def __init__(self, cause: sa.exc.IntegrityError) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _Writer:
    """Pass two: inserts the events the store lacks, a batch per transaction."""

    def __init__(
        self,
        store: EventStore,
        plan: _Plan,
        manifest: Manifest,
        batch_size: int,
        on_complete: Completion | None,
        progress: ProgressCallback | None,
        *,
        record: bool,
        unfinished: UnfinishedImport | None,
    ) -> None:
        self.store, self.plan, self.batch_size = store, plan, batch_size
        self.path, self.total = manifest.events_file, manifest.event_count
        self.sha256, self.where = manifest.sha256, str(Path(manifest.events_file).resolve())
        self.warnings = manifest.warnings
        self.record = record
        """Whether ``unfinished_imports`` records this import while it is part way."""
        self.unfinished = unfinished
        """The record found before pass one (of this export, if any: another's was refused)."""
        self.on_complete, self.progress = on_complete, progress
        self.expected: dict[str, Head] = dict(plan.have)
        self.queued: dict[str, Head] = dict(plan.have)
        """Each flow's last event stored or waiting in ``pending``: the next row must chain onto it."""
        self.pending: list[StoredRow] = []
        self.present = [
            flow_id
            for flow_id, (have, _) in plan.have.items()
            if have >= plan.segments[flow_id].last_revision
        ]
        self.unfinished_present = list(self.present)  # handed to on_complete with the first batch
        self.imported: dict[str, None] = {}
        self.written = self.skipped = self.seen = 0
        self.positions: list[int] = []

    def add(self, row: StoredRow) -> None:
        self.seen += 1
        have = self.plan.have.get(row.flow_id)
        if have is not None:
            if row.revision < have[0]:
                self.skipped += 1
            elif row.revision == have[0]:
                self._check(row, row.hash == have[1], f"its hash is not this store's revision {have[0]}")
                self.skipped += 1
            else:
                revision, digest = self.queued[row.flow_id]
                follows = row.revision == revision + 1 and row.prev_hash == (digest or GENESIS)
                self._check(row, follows, f"it does not chain onto revision {revision} here")
                self.queued[row.flow_id] = (row.revision, row.hash)
                self.pending.append(row)
                if len(self.pending) >= self.batch_size:
                    self.flush()
        if self.progress is not None and self.seen % PROGRESS_EVERY == 0:
            self.progress(Progress("importing", self.seen, self.total))

    def _check(self, row: StoredRow, ok: bool, detail: str) -> None:
        """Pass one checked the file against the store: pass two's rows must still fit (a guard
        against a file changed in between), or nothing more is written."""
        if not ok:
            problem = Problem(row.flow_id, row.position, row.revision, "broken-link", detail)
            raise ExportInvalid(str(self.path), [problem])

    def flush(self, *, final: bool = False) -> None:
        rows, self.pending = self.pending, []
        if rows or (final and self.unfinished_present and self.on_complete is not None):
            self._write(rows)
        elif final and self.unfinished is not None and self.plan.to_write == 0:
            self._write([])  # nothing was missing after all: the record of this export goes
        if final and self.progress is not None:
            self.progress(Progress("importing", self.seen, self.total))

    def _write(self, rows: list[StoredRow]) -> None:
        flows = list(dict.fromkeys(row.flow_id for row in rows))
        refused: sa.exc.IntegrityError | None = None
        try:
            self._insert(rows, flows)
        except _Refused as exc:
            refused = exc.cause
        if refused is not None:
            raise self._taken(rows) from refused

    def _insert(self, rows: list[StoredRow], flows: list[str]) -> None:
        with self.store.transaction() as tx:
            conn = tx.connection
            lock_appends(conn)
            current = flow_heads(conn, flows)
            for flow_id in flows:
                if current.get(flow_id, (0, None)) != self.expected[flow_id]:
                    reason = f"another writer appended to it during the import; {self.overtaken()}"
                    raise ImportConflict(flow_id, reason)
            try:
                positions = insert_stored(conn, rows)
            except sa.exc.IntegrityError as exc:
                raise _Refused(exc) from exc  # explained once the transaction has rolled back
            if self.record:
                imported = self.total - (self.plan.to_write - self.written - len(rows))
                now = format_time(self.store.clock())
                record_progress(
                    conn,
                    self.where,
                    self.sha256,
                    imported=imported,
                    event_count=self.total,
                    now=now,
                    outcome=self.stopped(
                        "importing the file again, once that one is finished, writes the rest"
                    ),
                )
            tails = {row.flow_id: row for row in rows}
            done = [f for f, row in tails.items() if row.revision == self.plan.segments[f].last_revision]
            done += self.unfinished_present
            if self.on_complete is not None and done:
                self.on_complete(conn, done)
            if tx.store.projections:
                tx.fence()
            _apply_projections(tx, rows, positions)
        self.unfinished_present = []
        for flow_id, row in tails.items():
            self.expected[flow_id] = (row.revision, row.hash)
            self.imported[flow_id] = None
        self.written += len(rows)
        self.positions.extend(positions[:1] + positions[-1:])

    def _taken(self, rows: list[StoredRow]) -> ImportConflict:
        """A batch refused by a unique key: another writer stored one of its event ids meanwhile."""
        found = _stored_id(self.store, [(row.flow_id, row.event_id) for row in rows])
        flow_id, detail = found if found is not None else (rows[0].flow_id, "an event id is stored twice")
        return ImportConflict(
            flow_id, f"{detail}: another writer stored it during the import; {self.overtaken()}"
        )

    def stopped(self, then: str | None = "importing the file again writes the rest") -> str:
        """Where an import that failed part way stopped, and ``then`` how to go on."""
        if not self.written:
            return "nothing was imported"
        first, last = min(self.positions), max(self.positions)
        where = f"the import stopped after {self.written} events (positions {first} to {last})"
        return where if then is None else f"{where}; {then}"

    def changed(self) -> str:
        """How to go on once the file changed under pass two: importing it again as it is now is
        refused (another export's SHA-256), or fails its check; only the export that was verified,
        put back, finishes what went in."""
        sha = self.sha256[:16]
        if not self.record:
            return f"running it again with the file as it was verified (SHA-256 {sha}…) writes the rest"
        return (
            f"only the export as it was verified (SHA-256 {sha}…) finishes the import: put that file back "
            f"and import it again, or give the import up with `eventstore abandon-import {sha}`"
        )

    def overtaken(self) -> str:
        """Where an import stopped because another writer stored into one of its flows first:
        importing the file again finishes it only if what that writer stored is the export's own."""
        stopped = self.stopped(then=None)
        if not self.record or (not self.written and self.unfinished is None):
            return stopped  # no record of this export to give up
        return (
            f"{stopped}; importing the file again finishes the import only if what that writer stored "
            f"is the export's own, else give it up with `eventstore abandon-import {self.sha256[:16]}`"
        )

    def report(self) -> ImportReport:
        return ImportReport(
            events_imported=self.written,
            events_skipped=self.skipped,
            flows_imported=tuple(self.imported),
            flows_present=tuple(self.present),
            first_position=min(self.positions, default=None),
            last_position=max(self.positions, default=None),
            warnings=self.warnings,
        )


def _apply_projections(tx: Transaction, rows: list[StoredRow], positions: list[int]) -> None:
    """Fold the imported events into the store's inline projections, one flow at a time."""
    if not tx.store.projections:
        return
    by_flow: dict[str, list[RecordedEvent]] = {}
    for row, position in zip(rows, positions, strict=True):
        by_flow.setdefault(row.flow_id, []).append(
            RecordedEvent(
                position,
                row.flow_id,
                row.revision,
                uuid.UUID(row.event_id),
                row.type,
                row.schema_version,
                orjson.loads(row.data),
                orjson.loads(row.metadata),
                datetime.fromisoformat(row.recorded_at),
                row.prev_hash.hex(),
                row.hash.hex(),
            )
        )
    for projection in tx.store.projections:
        for events in by_flow.values():
            apply_inline(projection, tx, events)
