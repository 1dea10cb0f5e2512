"""Retention and a SIGKILLed rebuild: its claim no longer holds a prune back, a live rebuild's still does.

The killed rebuild's lease is still running at the clock retention is given
(stopped there): retention must prune all the same, because the lock its
holder held (a PostgreSQL advisory lock, a file lock beside a SQLite
database) went with its process. A rebuild that starts while retention
prunes reads the log only once the prune is committed: the pruned flows
never come back into the read model.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from eventstore import EventStore, RebuildInProgress, Transaction, utc_now
from eventstore.integrity import format_time
from eventstore.rebuild_claims import LOCKED
from eventstore.retention import Pruner, RetentionPolicy, RetentionReport, list_archives, run_retention
from projections import FlowProjection, FlowQueries, rebuild, rebuild_locks
from projections.pruning import prune_flow_read_models

from . import kill_workers
from .conftest import Target
from .kill_workers import kill_during
from .readmodels import assert_matches_rebuild
from .test_rebuild_crash import FLOWS, some_flows
from .test_rebuild_takeover import paused_rebuild, the_claim

SECOND = RetentionPolicy(finished=timedelta(seconds=1))


def killed_rebuild(target: Target) -> datetime:
    """Finished flows, a rebuild SIGKILLed with its claim held; a moment the claim's lease runs past."""
    some_flows(target)
    assert not kill_during(kill_workers.rebuild_flows, (target.url, target.options, 20, True), 0.0)
    return utc_now() + timedelta(seconds=1)


def prune(store: EventStore, tmp_path: Path, *extra: Pruner) -> RetentionReport:
    return run_retention(store, SECOND, tmp_path / "archives", pruners=[prune_flow_read_models, *extra])


def test_a_killed_rebuilds_claim_does_not_hold_a_prune_back(target: Target, tmp_path: Path) -> None:
    now = killed_rebuild(target)
    with target.open(projections=[FlowProjection()], clock=lambda: now) as store:
        left = the_claim(store, "flows")
        assert left is not None and left.version == LOCKED
        assert left.updated_at > format_time(now), "the killed child's lease has run out: nothing tested"
        report = prune(store, tmp_path)
        assert len(report.pruned) == FLOWS and FlowQueries(store).flows().items == []
        assert the_claim(store, "flows") is not None  # left for the next rebuild to take over
        assert_matches_rebuild(store)
        assert the_claim(store, "flows") is None


def test_a_live_rebuild_still_holds_a_prune_back(target: Target, tmp_path: Path) -> None:
    some_flows(target)
    failures: list[BaseException] = []
    with paused_rebuild(target, failures):
        now = utc_now() + timedelta(seconds=1)
        with target.open(projections=[FlowProjection()], clock=lambda: now) as store:
            with pytest.raises(RebuildInProgress, match="'flows'"):
                prune(store, tmp_path)
            assert list_archives(store) == [] and FlowQueries(store).flows(limit=100).total == FLOWS
    assert not failures


def test_a_rebuild_started_during_a_prune_reads_the_pruned_log(
    target: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention found the killed rebuild's claim dead; a new rebuild takes the lock right after."""
    now = killed_rebuild(target)
    locked, failures = threading.Event(), []
    take = rebuild_locks.take

    def take_and_tell(*args: object) -> rebuild_locks.RebuildLock | None:
        got = take(*args)  # type: ignore[arg-type]
        locked.set()
        return got

    other = target.open(projections=[FlowProjection()])  # opened first: an open waits for the prune

    def rebuilder() -> None:
        try:
            with other:
                rebuild(other, FlowProjection(), wait=True)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=rebuilder)

    def start_a_rebuild(tx: Transaction, flow_ids: Sequence[str]) -> None:
        """Inside the prune's transaction, after its check: a rebuild starts and takes the lock."""
        thread.start()
        assert locked.wait(kill_workers.CHILD_TIMEOUT), "the rebuild never took its lock"

    monkeypatch.setattr(rebuild_locks, "take", take_and_tell)
    with target.open(projections=[FlowProjection()], clock=lambda: now) as store:
        try:
            assert len(prune(store, tmp_path, start_a_rebuild).pruned) == FLOWS
        finally:
            if thread.ident is not None:
                thread.join()
        assert not failures
        assert the_claim(store, "flows") is None  # the rebuild took the dead claim over, and ended
        assert FlowQueries(store).flows().items == []  # the pruned flows did not come back
        assert_matches_rebuild(store)
