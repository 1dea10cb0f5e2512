"""The built-in maintenance jobs: each a function of a ``JobContext`` (docs/operations.md has what each does).

The jobs that need read models import ``projections`` inside the job (the
package never imports it at module level); retention and signed checkpoints
are imported inside their jobs too, and a job whose module is not there is
skipped, not failed.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pydantic
import sqlalchemy as sa

from . import reconnecting
from .errors import (
    FlowNotFound,
    IntegrityViolation,
    InvalidInput,
    JobLeaseLost,
    NotSupported,
    RetentionInProgress,
    StorageError,
)
from .flow_fold import FOLD_VERSION
from .housekeeping import (
    PG_DUMP_ADVICE,
    backup,
    check_database,
    remove_stale_partials,
    sqlite_file,
    wal_checkpoint,
)
from .incremental_verify import SYSTEM_INTEGRITY_FLOW, record_problems, verify_since
from .integrity import Problem
from .maintenance_config import DEFAULT_JOBS
from .schema import flow_events, flow_snapshots, snapshot_parts
from .store import EventStore
from .timetravel import state_at
from .wording import counted

if TYPE_CHECKING:
    from .maintenance import Job, JobContext

log = logging.getLogger("eventstore.maintenance")


def builtin_jobs() -> list[Job]:
    from .maintenance import Job

    functions = {
        "catch-up": catch_up,
        "sweep-leases": sweep_leases,
        "snapshots": snapshots,
        "integrity": integrity,
        "wal-checkpoint": checkpoint_wal,
        "quick-check": quick_check,
        "integrity-check": full_integrity_check,
        "backup": scheduled_backup,
        "retention": retention,
    }
    return [Job(name, functions[name], DEFAULT_JOBS[name]) for name in DEFAULT_JOBS]


class _Stopped(Exception):  # control flow: the service is shutting down
    """Raised from a progress hook to end a job early (``_renew_or_stop``)."""


def _renew_or_stop(ctx: JobContext) -> None:
    """A progress hook's turn: stop the job if the service is shutting down, else keep its lease."""
    if ctx.stopping:
        raise _Stopped
    ctx.renew_if_due()


def _skip(reason: str) -> Exception:
    from .maintenance import JobSkipped

    return JobSkipped(reason)


def _failed(message: str, details: dict[str, Any]) -> Exception:
    from .maintenance import JobFailed

    return JobFailed(message, details)


# -- read models -----------------------------------------------------------------------
def catch_up(ctx: JobContext) -> dict[str, Any]:
    """Apply the log to each registered catch-up projection until it is current."""
    if not ctx.service.catch_up:
        raise _skip("no catch-up projections registered")
    from projections import CatchUpRunner

    from .maintenance import log_error

    runners: dict[str, Any] = ctx.service.state.setdefault("catch-up", {})
    applied: dict[str, int] = {}
    failed: dict[str, str] = {}
    for projection in ctx.service.catch_up:
        if ctx.stopping:  # shutting down: the next run goes on from each one's checkpoint
            break
        # Each on its own: one projection's failing handler must not hold the others back for ever.
        total = 0
        try:
            runner = runners.get(projection.name)
            if runner is None:
                runner = runners[projection.name] = CatchUpRunner(ctx.store, projection)
            while not ctx.stopping and (count := runner.run_once()):
                total += count
                ctx.renew()
        except JobLeaseLost:
            raise  # another process runs the job now: this run stops
        except Exception as exc:  # recorded below; the batches it applied before it failed stay
            log_error(f"maintenance: catch-up of {projection.name!r} failed", exc)
            failed[projection.name] = f"{type(exc).__name__}: {exc}"
        applied[projection.name] = total
    if failed:
        said = "; ".join(f"{name!r}: {error}" for name, error in failed.items())
        raise _failed(
            f"{len(failed)} of {len(ctx.service.catch_up)} catch-up projections failed: {said}",
            {"applied": applied, "failed": failed},
        )
    return {"applied": applied, "stopped": True} if ctx.stopping else {"applied": applied}


def sweep_leases(ctx: JobContext) -> dict[str, Any]:
    """End the steps left running under expired leases (``projections.recovery``)."""
    from projections import FlowProjection, FlowService
    from projections.recovery import sweep_expired_leases

    if not any(isinstance(p, FlowProjection) for p in ctx.store.projections):
        raise _skip("the store was opened without FlowProjection")
    policy = ctx.config.sweeper
    report = sweep_expired_leases(
        FlowService(ctx.store),
        now=ctx.now(),
        on_expired=policy.on_expired,
        reason=policy.reason,
        batch_size=policy.batch_size,
        between_batches=ctx.renew,
        should_stop=lambda: ctx.stopping,
    )
    return {
        "swept": len(report.swept),
        "skipped": len(report.skipped),
        "steps": [f"{flow}/{step}" for flow, step in report.swept[:50]],
    }


# -- snapshots -------------------------------------------------------------------------
def snapshots(ctx: JobContext) -> dict[str, Any]:
    """Snapshot the flows that grew past a multiple of ``every`` since the last run; drop obsolete ones."""
    every = ctx.config.snapshots.every
    head = ctx.store.last_position()
    made = 0
    for flow_id, target in _unsnapshotted(ctx.store, ctx.position, head, every):
        if ctx.stopping:
            return {"snapshotted": made, "stopped": True}  # the position stays: the next run redoes it
        try:
            state_at(ctx.store, flow_id, revision=target, snapshot_every=every)
        except (FlowNotFound, InvalidInput):
            continue  # pruned meanwhile
        made += 1
        if made % 100 == 0:
            ctx.renew()
    removed = remove_obsolete_snapshots(ctx.store)
    ctx.renew(position=head)
    return {"snapshotted": made, "removed": removed, "position": head}


def _unsnapshotted(store: EventStore, after: int, head: int, every: int) -> Iterator[tuple[str, int]]:
    """Flows written to in ``(after, head]`` whose last multiple of ``every`` has no current snapshot."""
    e, s = flow_events.c, flow_snapshots.c
    grown = (
        sa.select(e.flow_id, sa.func.max(e.revision))
        .where(e.position > after, e.position <= head)
        .group_by(e.flow_id)
        .having(sa.func.max(e.revision) >= every)
    )
    with store.reading() as conn:
        candidates = {row[0]: (row[1] // every) * every for row in conn.execute(grown)}
    ids = sorted(candidates)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        newest = (
            sa.select(s.flow_id, sa.func.max(s.revision))
            .where(s.flow_id.in_(chunk), s.fold_version == FOLD_VERSION)
            .group_by(s.flow_id)
        )
        with store.reading() as conn:
            have = {row[0]: row[1] for row in conn.execute(newest)}
        for flow_id in chunk:
            if have.get(flow_id, 0) < candidates[flow_id]:
                yield flow_id, candidates[flow_id]


def remove_obsolete_snapshots(store: EventStore) -> int:
    """Delete snapshots (and their parts) made by an older fold than ``FOLD_VERSION``; how many snapshots.

    Snapshots of a newer fold are kept: a newer version of the library,
    running beside this one during an upgrade, still uses them.
    """
    with reconnecting.transaction(store) as tx:
        done = tx.connection.execute(
            flow_snapshots.delete().where(flow_snapshots.c.fold_version < FOLD_VERSION)
        )
        tx.connection.execute(snapshot_parts.delete().where(snapshot_parts.c.fold_version < FOLD_VERSION))
    return int(done.rowcount)


# -- integrity ---------------------------------------------------------------------------
def integrity(ctx: JobContext) -> dict[str, Any]:
    """Verify the chains of the events written since the last run; then sign a checkpoint if keyed."""
    start = ctx.position
    found: list[Problem] = []

    def batch_done(position: int, problems: list[Problem]) -> None:
        if problems:  # on record before the position moves past them
            record_problems(ctx.store, ctx.position, position, problems)
            found.extend(problems)
        ctx.renew(position=position)

    report = verify_since(
        ctx.store,
        start,
        batch_size=ctx.config.integrity.batch_size,
        on_batch=batch_done,
        should_stop=lambda: ctx.stopping,
    )
    unfinished = [p for p in report.problems if p.kind == "import-unfinished"]
    if unfinished and not _on_record(ctx.store, unfinished):  # once, not once a run
        record_problems(ctx.store, start, report.to_position, unfinished)
    found.extend(unfinished)  # the job fails on every run until the import is finished or abandoned
    if found:
        low, high = min(start, report.to_position), max(start, report.to_position)
        raise IntegrityViolation(
            f"{counted(len(found), 'integrity problem')} among positions {low + 1} to {high}, "
            f"first: {found[0]}; recorded in flow {SYSTEM_INTEGRITY_FLOW!r}",
            problems=found,
        )
    details: dict[str, Any] = {
        "from_position": start + 1,
        "to_position": report.to_position,
        "events_checked": report.events_checked,
    }
    if ctx.stopping:  # shutting down: no checkpoint
        return {**details, "stopped": True}  # the next run goes on from the position reached
    checkpoint = _sign_checkpoint(ctx)
    if checkpoint is not None:
        details["checkpoint"] = checkpoint
    return details


def _on_record(store: EventStore, problems: list[Problem]) -> bool:
    """Whether the newest record in ``$system-integrity`` lists exactly these problems."""
    newest = next(store.read_flow(SYSTEM_INTEGRITY_FLOW, backwards=True, limit=1), None)
    if newest is None or newest.type != "IntegrityProblemsFound":
        return False
    return bool(newest.data.get("problems") == [dataclasses.asdict(p) for p in problems])


def _sign_checkpoint(ctx: JobContext) -> dict[str, Any] | None:
    """Sign a checkpoint over the verified log with the configured key (``eventstore.checkpoints``)."""
    key = ctx.service.signing_key or ctx.config.integrity.signing_key_file
    if key is None or ctx.store.last_position() == 0:
        return None
    from .checkpoints import take_checkpoint

    signed = take_checkpoint(ctx.store, key)
    return {"tree_size": signed.tree_size, "root_hash": signed.root_hash.hex(), "key_id": signed.key_id}


# -- SQLite housekeeping ---------------------------------------------------------------
def checkpoint_wal(ctx: JobContext) -> dict[str, Any]:
    """``PRAGMA wal_checkpoint(TRUNCATE)``: fold the WAL into the database file and empty it."""
    try:
        done = wal_checkpoint(ctx.store)
    except NotSupported as exc:
        raise _skip(str(exc)) from exc
    return dataclasses.asdict(done)


def quick_check(ctx: JobContext) -> dict[str, Any]:
    """``PRAGMA quick_check``: SQLite's fast check of the database file."""
    return _check(ctx, quick=True)


def full_integrity_check(ctx: JobContext) -> dict[str, Any]:
    """``PRAGMA integrity_check``: SQLite's full check, indexes included (slow on big files)."""
    return _check(ctx, quick=False)


def _check(ctx: JobContext, *, quick: bool) -> dict[str, Any]:
    try:
        found = check_database(ctx.store, quick=quick, stop=lambda: ctx.stopping)
    except NotSupported as exc:
        raise _skip(str(exc)) from exc
    if found is None:  # shutting down: the check ended unfinished, and the next period checks
        return {"result": None, "stopped": True}
    if found != ["ok"]:
        pragma = "quick_check" if quick else "integrity_check"
        for line in found[:100]:
            log.error("sqlite %s: %s", pragma, line)
        raise IntegrityViolation(
            f"PRAGMA {pragma} found {counted(len(found), 'problem')}, first: {found[0]}", problems=found
        )
    return {"result": "ok"}


def scheduled_backup(ctx: JobContext) -> dict[str, Any]:
    """Back the SQLite database up into ``[backup] directory``, keeping the newest ``keep`` copies."""
    policy = ctx.config.backup
    if policy.directory is None:
        raise _skip("no backup directory configured")
    if ctx.store.dialect != "sqlite":
        raise _skip("online backup is for SQLite; back PostgreSQL up with pg_dump")
    try:
        policy.directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in its place, a read-only parent: say which directory, as retention does
        raise StorageError(f"cannot create the backup directory {policy.directory}: {exc}") from exc
    # Each run names its copy anew, so the partial file of a run that died is removed here, not by
    # ``backup`` (which removes those of its own path); one a live run holds is left alone.
    stale = remove_stale_partials(policy.directory, lambda name: _BACKUP_NAME.fullmatch(name) is not None)
    name = f"eventstore-{ctx.now().astimezone(UTC):{BACKUP_TIME}}Z.db"
    try:
        made = backup(ctx.store, policy.directory / name, progress=lambda _left, _total: _renew_or_stop(ctx))
    except _Stopped:
        return {"path": None, "stopped": True}  # the half-made copy is deleted; the next period backs up
    live = sqlite_file(ctx.store, "backup", instead=PG_DUMP_ADVICE)
    # The copy just made counts as the newest, whatever the stamps of the others (a clock ahead).
    older = sorted(
        (taken, path)
        for taken, path in _backups_in(policy.directory, live=live)
        if path.name != made.path.name
    )
    removed = [path for _taken, path in older[: max(0, len(older) + 1 - policy.keep)]]
    for old in removed:
        old.unlink()
    return {
        "path": str(made.path),
        "bytes": made.bytes,
        "removed": [p.name for p in removed],
        "removed_partials": [p.name for p in stale],
    }


BACKUP_TIME = "%Y%m%dT%H%M%S%f"
_BACKUP_NAME = re.compile(r"eventstore-(\d{8}T\d{12})Z\.db")


def _backups_in(directory: Path, *, live: Path) -> Iterator[tuple[datetime, Path]]:
    """The copies the backup job made in ``directory``, with their UTC times: only files named as it
    names them, and never the live database, whatever its name (a link to it included)."""
    live = live.resolve()
    for path in directory.iterdir():
        found = _BACKUP_NAME.fullmatch(path.name)
        if found is None or not path.is_file() or path.resolve() == live:
            continue
        try:
            taken = datetime.strptime(found[1], BACKUP_TIME).replace(tzinfo=UTC)
        except ValueError:  # looks like ours but is no time (month 13): not ours
            continue
        yield taken, path


# -- retention -------------------------------------------------------------------------
def retention(ctx: JobContext) -> dict[str, Any]:
    """Archive, verify and prune terminal flows past their retention (``eventstore.retention``)."""
    module = _optional("eventstore.retention")
    if module is None:
        raise _skip("eventstore.retention is not available in this version")
    from projections.pruning import prune_flow_read_models  # the flow read models go with their events

    config = ctx.config.retention
    policy = ctx.service.retention_policy
    if policy is None:
        policy = dict(config.keep_days)
    try:
        report = module.run_retention(
            ctx.store,
            policy,
            config.archive_dir,
            pruners=[prune_flow_read_models],
            max_flows=config.max_flows,
            progress=lambda _progress: _renew_or_stop(ctx),  # a long run keeps its lease
        )
    except _Stopped:  # an archive written or verified is finished by the next run, as after a crash
        return {"stopped": True}
    except RetentionInProgress as exc:  # an `eventstore prune` doing this very work: not a failure
        raise _skip(str(exc)) from exc
    # The policy it ran with: a run with none ({}) keeps everything, and its ``ok`` should say so.
    if not isinstance(policy, module.RetentionPolicy):  # days per status, which the run accepted
        policy = module.RetentionPolicy.from_days(policy)
    kept = {status: getattr(policy, status) for status in ("finished", "failed", "cancelled")}
    return {"keep_days": {status: _days(age) for status, age in kept.items() if age is not None}} | summary(
        report
    )


def _days(age: timedelta) -> float:
    days = age / timedelta(days=1)
    return int(days) if days.is_integer() else days


# -- helpers -----------------------------------------------------------------------------
def _optional(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return None
        raise


def summary(report: Any) -> dict[str, Any]:
    """A JSON-able summary of whatever a job's library call returned."""
    if isinstance(report, pydantic.BaseModel):
        return report.model_dump(mode="json")
    if dataclasses.is_dataclass(report) and not isinstance(report, type):
        return _plain(dataclasses.asdict(report))  # type: ignore[no-any-return]  # a dict in, a dict out
    if isinstance(report, dict):
        return _plain(report)  # type: ignore[no-any-return]  # a dict in, a dict out
    return {"result": None if report is None else str(report)}


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
