"""Retention: archive flows that ended long ago, verify the archive, then prune them.

``run_retention`` selects the flows a ``RetentionPolicy`` lets go (terminal,
last event older than the status's maximum age, no legal hold, not pruned
yet), writes them to one gzip-compressed export per run in the archive
directory, reads that file back and verifies it, and only then, in one
transaction, records the leaves of their events in ``pruned_events``, writes a
tombstone per flow, deletes the events (the one delete the append-only guard
allows, see ``privileged.py``) and the read-model rows, and marks the archive
pruned. An ``archives`` row moves ``written`` → ``verified`` → ``pruned``; a
run cut short anywhere is finished by the next one, and an archive whose file
no longer verifies is marked ``failed`` without anything being deleted.

Legal holds (``hold``/``release``, in ``legal_holds.py``) keep a flow from ever being pruned;
``restore`` puts a pruned flow back from its archive. A pruned flow's id
stays taken (appending to it raises ``FlowPruned``), and no prune or restore
runs while a projection rebuild holds its claim (``RebuildInProgress``). Nor
is anything pruned while an import is unfinished (``ImportUnfinished``): it may
still write to flows that look terminal. docs/operations.md describes the whole cycle.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from . import process_locks, reconnecting
from .checks import check_callback, check_count, check_flag, check_store, check_text, shown
from .errors import (
    ArchiveNotFound,
    ExportInvalid,
    IntegrityViolation,
    InvalidInput,
    RetentionInProgress,
    StorageError,
)
from .exportfile import Progress, ProgressCallback, verify_export
from .exporting import export_flows
from .flow_fold import FLOW_TERMINAL, FlowView
from .importing import flow_heads, run_import
from .integrity import format_time
from .legal_holds import (
    SYSTEM_RETENTION_FLOW,
    LegalHold,
    LegalHoldPlaced,
    LegalHoldReleased,
    held_flows,
    hold,
    list_holds,
    release,
)
from .manifest import Manifest
from .preparation import check_flow_id
from .privileged import chunks, delete_flows, lock_appends
from .rebuild_claims import refuse_during_rebuild
from .schema import (
    archives,
    flow_events,
    flow_snapshots,
    flow_tombstones,
    legal_holds,
    snapshot_parts,
)
from .sqljson import JsonText
from .store import EventStore, Transaction
from .tombstones import tombstone_owners
from .unfinished_import import refuse_during_import

__all__ = [  # legal holds live in legal_holds.py; their names stay importable from here
    "MAX_AGE",
    "MAX_DAYS",
    "SYSTEM_RETENTION_FLOW",
    "Archive",
    "LegalHold",
    "LegalHoldPlaced",
    "LegalHoldReleased",
    "Pruner",
    "RestoreReport",
    "RetentionPolicy",
    "RetentionReport",
    "hold",
    "list_archives",
    "list_holds",
    "release",
    "restore",
    "run_retention",
]

Pruner = Callable[[Transaction, Sequence[str]], None]
"""Drops a read model's rows for flows being pruned, inside the prune's transaction."""

ENDING_EVENTS = {"finished": "FlowFinished", "failed": "FlowFailed", "cancelled": "FlowCancelled"}

MAX_DAYS = 36_525
"""The longest maximum age a policy takes, in days (a century), as ``[retention] keep_days`` does;
leave a status out to keep its flows for ever."""
MAX_AGE = timedelta(days=MAX_DAYS)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long flows are kept after they end, per terminal status; ``None`` keeps them (the default).

    A flow's age is measured from its last event's ``recorded_at`` to the
    store's clock; it may be pruned once the age exceeds its status's maximum.
    """

    finished: timedelta | None = None
    failed: timedelta | None = None
    cancelled: timedelta | None = None

    def __post_init__(self) -> None:
        for status in ENDING_EVENTS:
            age = getattr(self, status)
            if age is not None and (not isinstance(age, timedelta) or not timedelta(0) <= age <= MAX_AGE):
                raise InvalidInput(
                    f"the maximum age of {status} flows must be a timedelta from 0 to {MAX_DAYS:,} days, "
                    f"not {age!r}"
                )

    @classmethod
    def from_days(cls, days: Mapping[str, float]) -> RetentionPolicy:
        """From days per status: ``{"finished": 30, "failed": 90}``."""
        return cls(**{status: _max_age(status, count, repr(count)) for status, count in days.items()})

    @classmethod
    def parse(cls, specs: Iterable[str]) -> RetentionPolicy:
        """From ``status=days`` texts, as the command line takes them: ``["finished=30", "failed=90"]``.

        A status given twice is refused, not settled by the last one.
        """
        days: dict[str, tuple[float, str]] = {}
        for spec in specs:
            status, _, count = spec.partition("=")
            status = status.strip()
            try:
                value = float(count)
            except ValueError as exc:
                raise InvalidInput(f"{spec!r}: expected STATUS=DAYS, such as finished=30") from exc
            if status in days:
                raise InvalidInput(f"{spec!r}: the days to keep {status} flows are given twice")
            days[status] = value, count.strip()
        # a refused count is shown as typed (-1, not the -1.0 it was read as)
        return cls(**{status: _max_age(status, value, typed) for status, (value, typed) in days.items()})

    def max_age(self, status: str) -> timedelta | None:
        age: timedelta | None = getattr(self, status) if status in ENDING_EVENTS else None
        return age

    @property
    def keeps_everything(self) -> bool:
        return all(self.max_age(status) is None for status in ENDING_EVENTS)


def _max_age(status: str, count: object, shown: str) -> timedelta:
    """``count`` days as the maximum age of ``status`` flows; ``shown`` is how a refusal shows it."""
    if status not in ENDING_EVENTS:
        raise InvalidInput(f"{status!r} is not a terminal status; one of {', '.join(ENDING_EVENTS)}")
    if isinstance(count, bool) or not isinstance(count, int | float):
        raise InvalidInput(f"the days to keep {status} flows must be a number, not {shown}")
    if not 0 <= count <= MAX_DAYS:  # also refuses NaN, which compares false
        limit = f"from 0 to {MAX_DAYS:,} (a century)"
        raise InvalidInput(f"the days to keep {status} flows must be {limit}, not {shown}")
    return timedelta(days=count)


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What a retention run did (or, with ``dry_run``, would do)."""

    dry_run: bool
    eligible: tuple[str, ...] = ()
    """The flows this run selected (at most ``max_flows``)."""
    held: tuple[str, ...] = ()
    """Flows old enough to go, kept by a legal hold: every one, whatever ``max_flows``."""
    archive_id: str | None = None
    archive_path: str | None = None
    pruned: tuple[str, ...] = ()
    """Flows pruned by this run, including those of earlier archives it finished."""
    events_pruned: int = 0
    skipped: tuple[str, ...] = ()
    """Archived flows not pruned: they changed, were held or were pruned since they were archived."""
    repaired: tuple[str, ...] = ()
    """Archives of earlier runs that this run finished."""
    failed: tuple[str, ...] = ()
    """Archives of earlier runs whose files no longer verify: marked failed, nothing of them pruned."""
    removed_partials: tuple[str, ...] = ()
    """Half-written archive files (``*.partial``) of runs that died, removed from the archive directory."""


@dataclass(frozen=True, slots=True)
class Archive:
    """One retention run's archive, as recorded in the store."""

    archive_id: str
    path: str
    sha256: str | None
    status: str
    flows: int
    events: int
    created_at: datetime
    finished_at: datetime | None
    flows_pruned: int
    """How many of its flows are pruned now (restored ones no longer count)."""


@dataclass(frozen=True, slots=True)
class RestoreReport:
    archive_id: str
    flows: tuple[str, ...]
    events: int


@dataclass(slots=True)
class _Outcome:
    pruned: list[str] = field(default_factory=list)
    events: int = 0
    skipped: list[str] = field(default_factory=list)
    partials: list[str] = field(default_factory=list)


# -- the run ----------------------------------------------------------------------


LOCK_KIND = "retention"
"""The process lock (``eventstore.process_locks``) a retention run holds: one at a time per store."""


def run_retention(
    store: EventStore,
    policy: RetentionPolicy | Mapping[str, float],
    archive_dir: str | os.PathLike[str],
    *,
    pruners: Sequence[Pruner] = (),
    max_flows: int = 10_000,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
) -> RetentionReport:
    """Archive, verify and prune the flows ``policy`` lets go; finish earlier runs first.

    ``policy`` is a ``RetentionPolicy`` or days per status (``{"finished": 30}``).

    ``pruners`` drop read-model rows of the pruned flows in the prune's
    transaction (``projections.pruning.prune_flow_read_models`` for the flow
    read models), in addition to the ``prune_flows`` method of any inline
    projection the store was opened with. At most ``max_flows`` flows are
    pruned per run, the oldest first. With ``dry_run`` nothing is written.

    While a projection rebuild holds its claim, the run raises
    ``RebuildInProgress`` before it prunes anything; an archive already
    verified stays so, and the next run prunes it. Likewise, while an import
    is unfinished (cut short, ``eventstore.unfinished_import``) it raises
    ``ImportUnfinished``: the import may still write to flows whose ending
    event it has written. Finish the import (import its file again) or give
    it up (``abandon_import``), then run retention again. A dry run is
    refused the same way: it never promises a prune the run would refuse.
    One run at a time: while another holds the store's retention lock (one
    that dies with its process), ``RetentionInProgress``, before anything is
    written; two runs would archive the same flows twice.
    """
    check_store(store)
    check_count("max_flows", max_flows, minimum=1)
    check_flag("dry_run", dry_run)
    check_callback("progress", progress)
    listed = isinstance(pruners, Sequence) and not isinstance(pruners, str | bytes)
    if not listed or not all(map(callable, pruners)):
        raise InvalidInput(f"pruners must be a list of functions (tx, flow_ids), not {shown(pruners)}")
    policy = _policy(policy)
    directory = _directory(archive_dir)
    with store.reading() as conn:  # before writing an archive it could not prune; a dry run says so too
        refuse_during_rebuild(store, conn, "retention")
        refuse_during_import(
            conn,
            "retention refused, as the import may still write to flows that look ended: nothing was "
            "archived or pruned",
        )
    if dry_run:
        eligible, held = _select(store, policy, max_flows)
        return RetentionReport(dry_run=True, eligible=tuple(eligible), held=tuple(held))
    lock = process_locks.take(store, LOCK_KIND, "run")
    if lock is None:
        raise RetentionInProgress(
            "another retention run is under way in this store (a prune, or the maintenance job's): "
            "nothing was archived or pruned by this one; run it again once that one has finished"
        )
    try:
        return _run(store, policy, directory, pruners, max_flows, progress)
    finally:
        lock.release()


def _run(
    store: EventStore,
    policy: RetentionPolicy,
    directory: Path,
    pruners: Sequence[Pruner],
    max_flows: int,
    progress: ProgressCallback | None,
) -> RetentionReport:
    total = _Outcome()
    total.partials = _remove_partials(directory, store.clock())
    repaired, failed = [], []
    for archive in list_archives(store):
        if archive.status in ("written", "verified"):
            outcome = _finish(store, archive, pruners, progress)
            if outcome is None:
                failed.append(archive.archive_id)
            else:
                repaired.append(archive.archive_id)
                _add(total, outcome)
    eligible, held = _select(store, policy, max_flows)
    if not eligible:
        return _report(total, repaired, failed, held=held)
    archive = _write_archive(store, directory, eligible, progress)
    outcome = _finish(store, archive, pruners, progress)
    if outcome is None:
        raise StorageError(
            f"the archive {archive.path} did not verify after it was written; nothing was pruned"
        )
    _add(total, outcome)
    return _report(total, repaired, failed, held=held, eligible=eligible, archive=archive)


def _policy(policy: object) -> RetentionPolicy:
    if isinstance(policy, RetentionPolicy):
        return policy
    if isinstance(policy, Mapping):
        return RetentionPolicy.from_days(policy)
    wanted = "a RetentionPolicy or days per status ({'finished': 30})"
    raise InvalidInput(f"a retention policy must be {wanted}, not {shown(policy)}")


def _exists(path: Path) -> bool:
    """Whether ``path`` is there; one that cannot be looked at (permission denied) is, for the reader
    to say why it cannot be read."""
    try:
        return path.exists()
    except OSError:
        return True


def _directory(archive_dir: object) -> Path:
    """``archive_dir`` as a ``Path``, if it is a path (``str`` or ``os.PathLike``) without NUL."""
    path = os.fspath(archive_dir) if isinstance(archive_dir, str | os.PathLike) else None
    if not isinstance(path, str) or "\x00" in path:
        raise InvalidInput(
            f"archive_dir must be a directory's path (str or os.PathLike), not {shown(archive_dir)}"
        )
    return Path(path)


def _add(total: _Outcome, outcome: _Outcome) -> None:
    total.pruned += outcome.pruned
    total.events += outcome.events
    total.skipped += outcome.skipped


def _report(
    total: _Outcome,
    repaired: list[str],
    failed: list[str],
    *,
    held: list[str],
    eligible: Sequence[str] = (),
    archive: Archive | None = None,
) -> RetentionReport:
    return RetentionReport(
        dry_run=False,
        eligible=tuple(eligible),
        held=tuple(held),
        archive_id=None if archive is None else archive.archive_id,
        archive_path=None if archive is None else archive.path,
        pruned=tuple(total.pruned),
        events_pruned=total.events,
        skipped=tuple(total.skipped),
        repaired=tuple(repaired),
        failed=tuple(failed),
        removed_partials=tuple(total.partials),
    )


PARTIAL_AGE = timedelta(hours=1)
"""A ``.partial`` archive file untouched this long belongs to a run that died: one being
written is appended to (and its modification time moved) every few thousand events."""


def _remove_partials(directory: Path, now: datetime) -> list[str]:
    """Delete the half-written archives (``<id>.jsonl.gz.partial``) runs left when they died."""
    removed: list[str] = []
    try:
        candidates = sorted(directory.glob("*.jsonl.gz.partial"))
    except OSError:
        return removed  # no directory yet: nothing was ever written there
    for path in candidates:
        try:
            touched = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            if now - touched >= PARTIAL_AGE:
                path.unlink()
                removed.append(str(path))
        except FileNotFoundError:
            continue  # its run finished (renamed it) or another run removed it meanwhile
        except OSError as exc:
            raise StorageError(f"cannot remove the half-written archive {path}: {exc}") from exc
    return removed


def _select(store: EventStore, policy: RetentionPolicy, limit: int) -> tuple[list[str], list[str]]:
    """The flows to prune now (at most ``limit``, oldest first), and every one old enough but held.

    Candidates are read a page at a time, oldest first, until ``limit`` of
    them fold to the status, or none are left: a candidate that does not (a
    flow resumed after it finished) never hides an eligible one behind it.
    The held flows are not bounded by ``limit``: legal holds are few, and
    the report names every flow they keep.
    """
    if policy.keeps_everything:
        return [], []
    now = store.clock()
    chosen: list[tuple[Any, str]] = []
    held: set[str] = set()
    for status in ENDING_EVENTS:
        age = policy.max_age(status)
        if age is None:
            continue
        cutoff = now - age
        for flow_id, revision, _ in _candidates(store, status, cutoff, held=True):
            if _status(store, flow_id, revision) == status:
                held.add(flow_id)
        found = 0
        after: tuple[Any, str] | None = None
        while found < limit:
            page = _candidates(store, status, cutoff, held=False, limit=limit, after=after)
            for flow_id, revision, last_at in page:
                if found < limit and _status(store, flow_id, revision) == status:
                    chosen.append((last_at, flow_id))
                    found += 1
            if len(page) < limit:
                break
            after = (page[-1][2], page[-1][0])
    chosen.sort()
    return [flow_id for _, flow_id in chosen[:limit]], sorted(held)


def _candidates(
    store: EventStore,
    status: str,
    cutoff: datetime,
    *,
    held: bool,
    limit: int | None = None,
    after: tuple[Any, str] | None = None,
) -> list[tuple[str, int, Any]]:
    """Flows that may have ``status``, whose last event is older than ``cutoff``, not pruned yet.

    Those under a legal hold, or those without one: oldest first, at most
    ``limit``, past ``after`` (the last event's time and flow id of the
    previous page).

    A flow gets a terminal status from its ending event (``FlowFinished``, ...),
    or, a fork taken of a flow that had ended, from the state its
    ``FlowForked`` event copies. Both are found through the index on the
    event type (forks are few); ``_status`` then folds each candidate.
    """
    c, m, e = flow_events.c, flow_events.alias("m").c, flow_events.alias("e").c
    t, h = flow_tombstones.c, legal_holds.c
    ending = sa.select(e.flow_id).where(e.type == ENDING_EVENTS[status])
    forked = sa.select(e.flow_id).where(
        e.type == "FlowForked", JsonText(e.data, "snapshot", "flow", "status") == status
    )
    last_revision = sa.select(sa.func.max(m.revision)).where(m.flow_id == c.flow_id).scalar_subquery()
    bound: Any = format_time(cutoff) if store.dialect == "sqlite" else cutoff
    is_held = sa.exists().where(h.flow_id == c.flow_id)
    query = (
        sa.select(c.flow_id, c.revision, c.recorded_at)
        .where(
            c.flow_id.in_(ending.union_all(forked)),
            c.revision == last_revision,
            c.recorded_at < bound,
            ~sa.exists().where(t.flow_id == c.flow_id),
            is_held if held else ~is_held,
        )
        .order_by(c.recorded_at, c.flow_id)
        .limit(limit)
    )
    if after is not None:
        last_at, last_flow = after
        query = query.where(
            sa.or_(c.recorded_at > last_at, sa.and_(c.recorded_at == last_at, c.flow_id > last_flow))
        )
    return [(row[0], row[1], row[2]) for row in store._fetch(query)]


def _status(store: EventStore, flow_id: str, revision: int) -> str | None:
    """The flow's status by the one fold, if it is still at ``revision``."""
    view = FlowView()
    last = 0
    for event in store.read_flow(flow_id):
        view.apply(event)
        last = event.revision
    if last != revision or view.flow is None or view.flow.status not in FLOW_TERMINAL:
        return None
    return view.flow.status


def _write_archive(
    store: EventStore, directory: Path, flow_ids: list[str], progress: ProgressCallback | None
) -> Archive:
    """Export the flows to a new archive file, synced to disk, and record it as ``written``."""
    now = store.clock()
    archive_id = f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the archive directory {directory}: {exc}") from exc
    path = (directory / f"{archive_id}.jsonl.gz").resolve()
    manifest = export_flows(store, path, flow_ids, progress=progress)
    values = {
        "archive_id": archive_id,
        "path": str(path),
        "sha256": manifest.sha256,
        "status": "written",
        "flows": len(manifest.flows),
        "events": manifest.event_count,
        "created_at": format_time(now),
        "finished_at": None,
    }
    with reconnecting.transaction(store) as tx:
        tx.connection.execute(archives.insert().values(**values))
    if progress is not None:
        progress(Progress("written", len(manifest.flows), len(manifest.flows)))
    return _archive_of(values, 0)


def _finish(
    store: EventStore, archive: Archive, pruners: Sequence[Pruner], progress: ProgressCallback | None
) -> _Outcome | None:
    """Verify a written archive, then prune its flows; None if the file does not verify."""
    path = Path(archive.path)
    try:
        report = verify_export(path, progress=progress)
    except (InvalidInput, ExportInvalid):
        report = None  # the manifest is gone or unreadable
    manifest = None if report is None else report.manifest
    if report is None or not report.ok or manifest is None or manifest.sha256 != archive.sha256:
        _set_status(store, archive.archive_id, "failed", finished=True)
        return None
    if archive.status == "written":
        _set_status(store, archive.archive_id, "verified")
    if progress is not None:
        progress(Progress("verified", len(manifest.flows), len(manifest.flows)))
    outcome = _prune(store, archive.archive_id, manifest, pruners)
    if progress is not None:
        progress(Progress("pruned", len(outcome.pruned), len(manifest.flows)))
    return outcome


def _set_status(store: EventStore, archive_id: str, status: str, *, finished: bool = False) -> None:
    values: dict[str, Any] = {"status": status}
    if finished:
        values["finished_at"] = format_time(store.clock())
    with reconnecting.transaction(store) as tx:
        tx.connection.execute(archives.update().where(archives.c.archive_id == archive_id).values(**values))


def _prune(store: EventStore, archive_id: str, manifest: Manifest, pruners: Sequence[Pruner]) -> _Outcome:
    """In one transaction: leaves, tombstones, the events and read-model rows go; the archive is pruned."""
    outcome = _Outcome()
    with reconnecting.transaction(store, lock_appends) as tx:  # no append, hold or prune interleaves
        conn = tx.connection
        query = sa.select(archives.c.status).where(archives.c.archive_id == archive_id)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        if conn.execute(query).scalar_one_or_none() != "verified":
            return outcome  # another process finished it meanwhile
        refuse_during_rebuild(store, conn, f"pruning archive {archive_id} (it stays verified)")
        refuse_during_import(
            conn,
            f"pruning archive {archive_id} refused, as the import may still write to its flows: "
            "nothing was pruned, the archive stays verified",
        )
        flow_ids = [segment.flow_id for segment in manifest.flows]
        heads = flow_heads(conn, flow_ids)
        kept = held_flows(conn, flow_ids) | set(_tombstoned(conn, flow_ids))
        segments = []
        for segment in manifest.flows:
            whole = heads.get(segment.flow_id) == (segment.last_revision, bytes.fromhex(segment.last_hash))
            if whole and segment.first_revision == 1 and segment.flow_id not in kept:
                segments.append(segment)
            else:
                outcome.skipped.append(segment.flow_id)
        outcome.pruned = [segment.flow_id for segment in segments]
        owners = tombstone_owners(conn, outcome.pruned)  # read before the events that name them go
        outcome.events = delete_flows(conn, outcome.pruned)
        expected = sum(segment.events for segment in segments)
        if outcome.events != expected:
            raise IntegrityViolation(
                f"archive {archive_id}: the store held {outcome.events} events of its flows, the archive "
                f"{expected}; nothing was pruned (run `eventstore verify`)"
            )
        now = format_time(store.clock())
        if segments:
            conn.execute(
                flow_tombstones.insert(),
                [
                    {
                        "flow_id": segment.flow_id,
                        "last_revision": segment.last_revision,
                        "last_hash": bytes.fromhex(segment.last_hash),
                        "archive_id": archive_id,
                        "archive_sha256": manifest.sha256,
                        "pruned_at": now,
                        "owner_session_key": owners.get(segment.flow_id),
                    }
                    for segment in segments
                ],
            )
        for chunk in chunks(outcome.pruned):  # time-travel caches of the pruned flows go too
            conn.execute(flow_snapshots.delete().where(flow_snapshots.c.flow_id.in_(chunk)))
            conn.execute(snapshot_parts.delete().where(snapshot_parts.c.flow_id.in_(chunk)))
        if outcome.pruned:
            for pruner in _pruners(store, pruners):
                pruner(tx, outcome.pruned)
        conn.execute(
            archives.update()
            .where(archives.c.archive_id == archive_id)
            .values(status="pruned", finished_at=now)
        )
    return outcome


def _pruners(store: EventStore, extra: Sequence[Pruner]) -> list[Pruner]:
    """The given pruners, after the ``prune_flows`` method of each inline projection that has one."""
    own = [getattr(p, "prune_flows", None) for p in store.projections]
    return [*(pruner for pruner in own if callable(pruner)), *extra]


def _tombstoned(conn: sa.Connection, flow_ids: Sequence[str]) -> dict[str, tuple[int, bytes, str, str]]:
    t = flow_tombstones.c
    found: dict[str, tuple[int, bytes, str, str]] = {}
    for chunk in chunks(flow_ids):
        query = sa.select(t.flow_id, t.last_revision, t.last_hash, t.archive_id, t.archive_sha256)
        for flow_id, revision, last_hash, archive_id, sha256 in conn.execute(
            query.where(t.flow_id.in_(chunk))
        ):
            found[flow_id] = (revision, bytes(last_hash), archive_id, sha256)
    return found


# -- archives and restore ----------------------------------------------------------


def list_archives(store: EventStore, *, archive_id: str | None = None) -> list[Archive]:
    """Every archive recorded in the store, oldest first (or the one with ``archive_id``)."""
    check_store(store)
    a, t = archives.c, flow_tombstones.c
    pruned = sa.select(sa.func.count()).where(t.archive_id == a.archive_id).scalar_subquery()
    query = sa.select(archives, pruned).order_by(a.created_at, a.archive_id)
    if archive_id is not None:
        check_text("an archive id", archive_id)
        query = query.where(a.archive_id == archive_id)
    with store.reading() as conn:  # the store's translation of driver errors
        rows = conn.execute(query).all()
    return [_archive_of(row._mapping, row[-1]) for row in rows]


def _archive_of(values: Any, flows_pruned: int) -> Archive:
    finished = values["finished_at"]
    return Archive(
        archive_id=values["archive_id"],
        path=values["path"],
        sha256=values["sha256"],
        status=values["status"],
        flows=values["flows"],
        events=values["events"],
        created_at=datetime.fromisoformat(values["created_at"]),
        finished_at=None if finished is None else datetime.fromisoformat(finished),
        flows_pruned=flows_pruned,
    )


def restore(
    store: EventStore,
    archive_id: str,
    flow_ids: Collection[str] | None = None,
    *,
    archive_dir: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
) -> RestoreReport:
    """Put pruned flows back from their archive: all of its flows still pruned, or ``flow_ids``.

    The archive (found where it was written, or by name in ``archive_dir``)
    is verified, and must be the file the tombstones name. The events go back
    with their ids, revisions, times and hashes, at new positions at the end
    of the log, and each flow's tombstone is dropped in the transaction that
    writes its last event: until then an append cannot start the flow anew,
    while the guard lets exactly the pruned events back in (their revision 1
    matches the pruned leaf's hash). The store's inline projections are
    applied; catch-up projections pick the events up as new. ``pruned_events``
    keeps the leaves of the old positions: the Merkle tree never shrinks.
    Refused with ``RebuildInProgress`` while a projection rebuild holds its
    claim; a refusal part way through a long flow leaves its tombstone in
    place, and running ``restore`` again finishes it.
    """
    check_store(store)
    check_text("an archive id", archive_id)
    if isinstance(flow_ids, str | bytes):
        raise InvalidInput(f"flow_ids is a list of flow ids, not the string {flow_ids!r}")
    if flow_ids is not None and not isinstance(flow_ids, Collection):
        raise InvalidInput(f"flow_ids must be a list of flow ids, not {shown(flow_ids)}")
    found = list_archives(store, archive_id=archive_id)
    if not found:
        raise ArchiveNotFound(archive_id)
    path = Path(found[0].path) if archive_dir is None else _directory(archive_dir) / Path(found[0].path).name
    with store.reading() as conn:  # the store's translation of driver errors
        t = flow_tombstones.c
        pruned = list(conn.execute(sa.select(t.flow_id).where(t.archive_id == archive_id)).scalars())
        tombstones = _tombstoned(conn, pruned)
    if flow_ids is not None and not flow_ids:  # else "no flow is pruned", while they may all be
        raise InvalidInput("flow_ids is empty: name the flows to restore, or give None for all still pruned")
    if flow_ids is not None:
        for flow_id in flow_ids:
            check_flow_id(flow_id)
        wrong = sorted(set(flow_ids) - set(tombstones))
        if wrong:
            raise InvalidInput(f"not pruned into archive {archive_id!r}: {', '.join(map(repr, wrong))}")
        tombstones = {flow_id: tombstones[flow_id] for flow_id in flow_ids}
    if not tombstones:
        raise InvalidInput(f"no flow of archive {archive_id!r} is pruned: nothing to restore")
    if not _exists(path):  # the usual reason: the archive directory was moved
        where = "archive_dir (`eventstore archive restore --archive-dir DIR`), the directory it is in now"
        raise InvalidInput(
            f"the file of archive {archive_id!r} is not at {path}: if it was moved, give {where}"
        )
    manifest = Manifest.read(path)
    _check_archive(path, manifest, tombstones)
    action = f"restoring from archive {archive_id}"
    with store.reading() as conn:  # fail early; the writes check again
        refuse_during_rebuild(store, conn, action)

    def drop_tombstones(conn: sa.Connection, done: list[str]) -> None:
        refuse_during_rebuild(store, conn, action)  # under the import's append lock
        for chunk in chunks(done):
            conn.execute(flow_tombstones.delete().where(t.flow_id.in_(chunk), t.archive_id == archive_id))

    imported = run_import(
        store,
        path,
        only=set(tombstones),
        pruned=set(tombstones),
        on_complete=drop_tombstones,
        progress=progress,
    )
    return RestoreReport(archive_id, tuple(sorted(tombstones)), imported.events_imported)


def _check_archive(
    path: Path, manifest: Manifest, tombstones: dict[str, tuple[int, bytes, str, str]]
) -> None:
    segments = {segment.flow_id: segment for segment in manifest.flows}
    problems = []
    for flow_id, (revision, last_hash, _archive, sha256) in sorted(tombstones.items()):
        segment = segments.get(flow_id)
        if manifest.sha256 != sha256:
            problems.append(
                f"{flow_id}: the tombstone names archive SHA-256 {sha256}, the file's is {manifest.sha256}"
            )
        elif segment is None or (segment.last_revision, segment.last_hash) != (revision, last_hash.hex()):
            problems.append(f"{flow_id}: the archive does not end where the tombstone says it was pruned")
    if problems:
        raise ExportInvalid(str(path), problems)
