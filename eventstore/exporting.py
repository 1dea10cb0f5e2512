"""Export a flow, a session, a time range or the whole log from a store to a file.

The file format, and its check from the files alone, are in ``exportfile.py``
(docs/exchange.md describes both); ``importing.py`` puts an export into a
store. An export re-verifies the chains it copies and refuses to write over
the store's own files.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from .audit import session_flows
from .backends.base import VERIFY_COLUMNS
from .checks import check_callback, check_flag
from .errors import EventStoreError, IntegrityViolation, InvalidInput, SessionNotFound
from .exportfile import ProgressCallback, write_export
from .integrity import StoredRow, format_time
from .manifest import Manifest, export_path, manifest_path
from .preparation import check_flow_id
from .privileged import CHUNK, chunks
from .schema import flow_events
from .serialization import canonical
from .store import EventStore
from .tombstones import PrunedFlows, flow_not_found, pruned_flows
from .unfinished_import import unfinished_import


def export_events(
    store: EventStore,
    path: str | os.PathLike[str],
    *,
    flow: str | None = None,
    flows: Iterable[str] | None = None,
    session: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> Manifest:
    """Write the chosen events to ``path`` (gzip if it ends in ``.gz``) and the manifest beside it.

    Choose at most one of: ``flow``; ``flows`` (a list of flow ids); ``session``
    (the flows whose first event names it as ``owner_session_key``); a time
    range ``since <= recorded_at < until`` (either bound may be left out);
    nothing, for the whole log. ``FlowNotFound`` if ``flow``, or a flow
    listed in ``flows``, has no events; ``SessionNotFound`` if no flow in the store has
    ``session`` (its ``pruned`` says what retention pruned of the session's, and of flows
    whose owner is unknown, pruned before migration 0019: the session may own some of those).
    A selection across flows (a session, a time range, the whole log) cannot
    hold the flows retention pruned: the manifest then says how many
    (``source["pruned"]``, ``Manifest.warnings``): of a session, those it owned and those of
    unknown owner.
    Every chain is checked on the way out: a broken one raises
    ``IntegrityViolation`` and leaves no files behind.
    An existing file at ``path`` or ``<path>.manifest.json`` is refused
    (``InvalidInput``) unless ``overwrite``; the store's own database files
    always are.
    Returns the manifest, also written to ``<path>.manifest.json``.
    """
    check_flag("overwrite", overwrite)
    check_callback("progress", progress)
    chosen = [
        name for name, value in (("flow", flow), ("flows", flows), ("session", session)) if value is not None
    ]
    if since is not None or until is not None:
        chosen.append("since/until")
    if len(chosen) > 1:
        raise InvalidInput(f"choose one selection, not {' and '.join(chosen)}")
    wanted = None if flows is None else _flow_ids(flows)
    if since is not None or until is not None:
        _check_range(since, until)
    target = export_path(path)
    _refuse_own_files(store, target)
    if flow is not None:
        if store.revision(flow) == 0:
            raise flow_not_found(store, flow)
        selection: dict[str, Any] = {"kind": "flow", "flow_id": flow}
        rows = _flow_rows(store, [flow])
    elif wanted is not None:
        _require_events(store, wanted)
        selection, rows = {"kind": "flows"}, _flow_rows(store, wanted)
    elif session is not None:
        owned = sorted(session_flows(store, session))
        if not owned:  # as audit_trail: a mistyped key is not an empty export
            with store.reading() as conn:  # a session whose flows were all pruned: the error says so
                raise SessionNotFound(session, pruned=pruned_flows(conn, session=session))
        selection, rows = {"kind": "session", "session": session}, _flow_rows(store, owned)
    elif since is not None or until is not None:
        selection = {
            "kind": "range",
            "since": None if since is None else format_time(since),
            "until": None if until is None else format_time(until),
        }
        rows = _range_rows(store, since, until)
    else:
        selection, rows = {"kind": "all"}, _all_rows(store)
    pruned = None
    if selection["kind"] in ("session", "range", "all"):  # a choice across flows: pruned ones are left out
        with store.reading() as conn:  # of a session, those it owned and those of unknown owner
            pruned = pruned_flows(conn, session=session)
    return _write(store, target, selection, rows, overwrite=overwrite, progress=progress, pruned=pruned)


def _flow_ids(flows: Any) -> list[str]:
    """``flows`` as sorted distinct flow ids, each checked as ``flow=`` is, else ``InvalidInput``."""
    if isinstance(flows, str | bytes):
        raise InvalidInput(f"flows is a list of flow ids, not the string {flows!r}: for one flow, use flow=")
    try:
        items = list(flows)
    except TypeError:
        raise InvalidInput(f"flows must be a list of flow ids, not {flows!r}") from None
    return sorted({check_flow_id(flow_id) for flow_id in items})


def _check_range(since: Any, until: Any) -> None:
    """``InvalidInput`` unless each bound given is a timezone-aware datetime and ``since <= until``."""
    for name, moment in (("since", since), ("until", until)):
        if moment is None:
            continue
        if not isinstance(moment, datetime) or moment.utcoffset() is None:
            raise InvalidInput(f"{name} must be a timezone-aware datetime, not {moment!r}")
        format_time(moment)  # refuses a time outside the years 1 to 9999 in UTC
    if since is not None and until is not None and since > until:
        raise InvalidInput(
            f"since ({format_time(since)}) is after until ({format_time(until)}): the range is empty"
        )


def export_flows(
    store: EventStore, path: Path, flow_ids: Sequence[str], *, progress: ProgressCallback | None = None
) -> Manifest:
    """Retention's archive: ``export_events(flows=flow_ids)``, leaving out a flow another run pruned
    since they were chosen (that run archived it; this one's prune skips it)."""
    _refuse_own_files(store, path)
    rows = _flow_rows(store, sorted(set(flow_ids)))
    return _write(store, path, {"kind": "flows"}, rows, overwrite=False, progress=progress)


def _write(
    store: EventStore,
    path: Path,
    selection: dict[str, Any],
    rows: Iterable[StoredRow],
    *,
    overwrite: bool,
    progress: ProgressCallback | None,
    pruned: PrunedFlows | None = None,
) -> Manifest:
    source: dict[str, Any] = {"dialect": store.dialect, "last_position": store.last_position()}
    if pruned is not None:  # what the selection may have held but the store no longer does
        source["pruned"] = pruned.as_dict()
    checkpoint, now = _latest_checkpoint(store), store.clock()
    noted = _noting_unfinished_import(store, rows, source)
    return write_export(path, noted, selection, source, checkpoint, now, progress, overwrite=overwrite)


def _noting_unfinished_import(
    store: EventStore, rows: Iterable[StoredRow], source: dict[str, Any]
) -> Iterator[StoredRow]:
    """``rows``, then, before the manifest is written, the record of an import unfinished when the
    export began or once its rows are read (that one, if both) as ``source["unfinished_import"]``:
    the export may lack the rest of that import. Absent when there is none, so the manifest is as
    before; a reader that does not know the member ignores it."""
    before = unfinished_import(store)
    yield from rows
    found = unfinished_import(store) or before
    if found is not None:
        source["unfinished_import"] = dataclasses.asdict(found)


def _require_events(store: EventStore, flow_ids: list[str]) -> None:
    """``FlowNotFound`` (``FlowArchived`` if pruned) for the first of these flows without events,
    naming the others without events too."""
    c = flow_events.c
    found: set[str] = set()
    for chunk in chunks(flow_ids):
        found.update(
            row[0] for row in store._fetch(sa.select(c.flow_id).where(c.flow_id.in_(chunk)).distinct())
        )
    missing = [flow_id for flow_id in flow_ids if flow_id not in found]
    if not missing:
        return
    error = flow_not_found(store, missing[0])
    if len(missing) > 1:  # name the others too, so one attempt finds them all
        others = ", ".join(map(repr, missing[1:4])) + (
            f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        )
        error.args = (f"{error} (also without events: {others})",)
    raise error


def _refuse_own_files(store: EventStore, path: Path) -> None:
    """``InvalidInput`` if the export or its manifest would be written over the store's SQLite files."""
    manifest = manifest_path(path)
    refuse_own_files(store, path, (manifest, *(p.with_name(p.name + ".partial") for p in (path, manifest))))


def refuse_own_files(store: EventStore, path: Path, others: Iterable[Path] = ()) -> None:
    """``InvalidInput`` if writing ``path`` (or ``others``, written with it) would overwrite the store's
    SQLite files.

    The database and its ``-wal``, ``-shm`` and ``-journal`` files, by resolved
    path (symbolic links followed) or as the same file (a hard link).
    """
    if store.dialect != "sqlite":
        return
    with store.reading() as conn:
        rows = conn.exec_driver_sql("PRAGMA database_list").all()
    database = next((str(file) for _, name, file in rows if name == "main"), "")
    if not database:
        return  # in memory
    own = [Path(database + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
    for target in (path, *others):
        for file in own:
            if _resolved(target) == _resolved(file) or _same_file(target, file):
                raise InvalidInput(
                    f"cannot export to {path}: it would overwrite {file}, a file of this store's database"
                )


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symbolic link loop: compare the path as given
        return path.absolute()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False  # either does not exist


def _stored(store: EventStore, row: Sequence[Any]) -> StoredRow:
    """A row as read from the database, with its payloads as canonical text."""
    stored = store._backend.stored_row(row)  # the backend knows its column types
    data, metadata = _text(stored.data), _text(stored.metadata)
    if data is stored.data and metadata is stored.metadata:
        return stored
    return dataclasses.replace(stored, data=data, metadata=metadata)


def _text(value: Any) -> Any:
    """A payload as the canonical text that was hashed (PostgreSQL gives it back parsed)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):  # SQLite keeps the canonical bytes as they were hashed
        return value.decode(errors="replace")
    try:
        return canonical(value).decode()
    except EventStoreError:
        return ""  # cannot be what was stored: the digest check reports the edit


def _paged(
    store: EventStore, query: Callable[[Any], sa.Select[Any]], key: Callable[[Any], Any], start: Any
) -> Iterator[Sequence[Any]]:
    cursor = start
    while True:
        rows = store._fetch(query(cursor).limit(store.page_size))  # keyset pages, errors translated
        if rows:
            yield rows
        if len(rows) < store.page_size:
            return
        cursor = key(rows[-1])


def _flow_rows(store: EventStore, flow_ids: Iterable[str]) -> Iterator[StoredRow]:
    c = flow_events.c
    for flow_id in flow_ids:
        base = sa.select(*VERIFY_COLUMNS).where(c.flow_id == flow_id).order_by(c.revision)

        def after(revision: int, base: sa.Select[Any] = base) -> sa.Select[Any]:
            return base.where(c.revision > revision)

        for rows in _paged(store, after, lambda r: r[2], 0):
            for row in rows:
                yield _stored(store, row)


def _all_rows(store: EventStore) -> Iterator[StoredRow]:
    c = flow_events.c
    base = sa.select(*VERIFY_COLUMNS).order_by(c.position)
    for rows in _paged(store, lambda cur: base.where(c.position > cur), lambda r: r[0], 0):
        for row in rows:
            yield _stored(store, row)


def _range_rows(store: EventStore, since: datetime | None, until: datetime | None) -> Iterator[StoredRow]:
    """The events from the first position recorded at or after ``since`` to the last one before ``until``.

    A range is a stretch of the log: every event recorded in it is included,
    and so is any event between two of them that a skewed clock stamped
    outside it. Cut by position, ranges that meet at a time cover the log
    without a gap: the first position at or after a time is at most one past
    the last position before it (they overlap when the clock stepped back,
    and an import skips the events it already holds), so each range imported
    in turn continues the last. Each flow's part is one unbroken piece of its
    chain; one that starts past revision 1 is checked to chain onto the
    store's own event before it.
    """
    c = flow_events.c
    bound: Callable[[datetime], Any] = format_time if store.dialect == "sqlite" else _checked_time
    low, high = 1, store.last_position()
    if since is not None:
        found = store._fetch(sa.select(sa.func.min(c.position)).where(c.recorded_at >= bound(since)))[0][0]
        low = high + 1 if found is None else found
    if until is not None:
        found = store._fetch(sa.select(sa.func.max(c.position)).where(c.recorded_at < bound(until)))[0][0]
        high = 0 if found is None else found
    if low > high:
        return
    firsts: dict[str, StoredRow] = {}
    base = sa.select(*VERIFY_COLUMNS).where(c.position <= high).order_by(c.position)
    for rows in _paged(store, lambda cur: base.where(c.position > cur), lambda r: r[0], low - 1):
        for row in rows:
            stored = _stored(store, row)
            firsts.setdefault(stored.flow_id, stored)
            yield stored
    _check_predecessors(store, [row for row in firsts.values() if row.revision > 1])


def _check_predecessors(store: EventStore, firsts: list[StoredRow]) -> None:
    """Each flow a range starts past revision 1 chains onto the store's own event before it."""
    c = flow_events.c
    key = sa.tuple_(c.flow_id, c.revision)
    for start in range(0, len(firsts), CHUNK):
        wanted = firsts[start : start + CHUNK]
        query = sa.select(c.flow_id, c.hash).where(key.in_([(r.flow_id, r.revision - 1) for r in wanted]))
        stored = {flow_id: bytes(digest) for flow_id, digest in store._fetch(query)}
        for row in wanted:
            before = stored.get(row.flow_id)
            if before != row.prev_hash:
                what = "is missing" if before is None else "is not the event it chains from"
                raise IntegrityViolation(
                    f"the store's hash chains are broken ({row.flow_id}@{row.revision - 1} {what}): "
                    "nothing was exported",
                    flow_id=row.flow_id,
                    revision=row.revision - 1,
                )


def _checked_time(moment: datetime) -> datetime:
    format_time(moment)  # refuses a naive time with the store's message
    return moment


def _latest_checkpoint(store: EventStore) -> dict[str, Any] | None:
    from .checkpoints import get_checkpoint  # loads cryptography: only exports and their checks need it

    try:
        return get_checkpoint(store).to_dict()
    except InvalidInput:
        return None  # no checkpoint taken yet
