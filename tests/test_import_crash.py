"""An import or a restore SIGKILLed part way leaves whole batches, and running it again finishes it.

An import writes ``batch_size`` events per transaction (docs/exchange.md:
"not all-or-nothing: resumable"), so a killed one leaves every flow at a
prefix of the export's, each event the export's own; every chain verifies,
``verify`` names the unfinished import (test_import_marker.py), and the next
import writes exactly the rest. A restore drops a flow's
tombstone in the transaction that writes its last event: after a kill a
flow is back whole with no tombstone, or still tombstoned, and a rerun
restores the rest.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time

from eventstore import EventStore, FlowPruned, NewEvent
from eventstore.exchange import export_events, import_events
from eventstore.maintenance import Maintenance
from eventstore.retention import list_archives, run_retention
from projections import FlowProjection, FlowService
from projections.pruning import prune_flow_read_models

from . import kill_workers
from .conftest import Target
from .kill_workers import kill_during
from .readmodels import assert_matches_rebuild
from .test_maintenance_jobs import tamper

FLOWS, EVENTS, CHUNK = 4, 1200, 100
LATEST_KILL = 0.6  # seconds; an import of the file takes about that on SQLite


def hashes(store: EventStore) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for event in store.read_all():
        found.setdefault(event.flow_id, []).append(event.hash)
    return found


def an_export(tmp_path: Path) -> tuple[Path, dict[str, list[str]]]:
    with EventStore.open(f"sqlite:///{tmp_path / 'source.db'}") as source:
        for start in range(0, EVENTS, CHUNK):
            for f in range(FLOWS):
                source.append(
                    f"flow-{f}", [NewEvent("Imported", {"n": n}) for n in range(start, start + CHUNK)]
                )
        export_events(source, tmp_path / "export.jsonl")
        return tmp_path / "export.jsonl", hashes(source)


@pytest.mark.parametrize("kills", [3, pytest.param(10, marks=pytest.mark.slow)])
def test_a_killed_import_leaves_prefixes_and_a_rerun_finishes_it(
    target: Target, tmp_path: Path, kills: int
) -> None:
    path, source = an_export(tmp_path)
    rng = random.Random()
    with target.open() as store:
        for k in range(kills):
            delay = rng.uniform(0.0, LATEST_KILL)
            kill_during(kill_workers.import_file, (target.url, target.options, str(path), CHUNK), delay)
            held = hashes(store)
            for flow_id, chain in held.items():
                assert chain == source[flow_id][: len(chain)], f"kill {k} after {delay} s: {flow_id}"
            complete = sum(map(len, held.values())) in (0, FLOWS * EVENTS)
            assert [p.kind for p in store.verify().problems] == ([] if complete else ["import-unfinished"])
        rest = import_events(store, path, batch_size=CHUNK)
        assert rest.events_imported == FLOWS * EVENTS - sum(map(len, held.values()))
        assert hashes(store) == source and store.verify().ok
        assert import_events(store, path).events_imported == 0


def archived(target: Target, moment: datetime, archive_dir: Path) -> str:
    """Finished flows of many events each, archived and pruned; the archive's id."""
    with freeze_time(moment), target.open(projections=[FlowProjection()]) as store:
        service = FlowService(store)
        for f in range(FLOWS):
            flow_id = f"f{f}"
            service.start_flow(flow_id, controller_id="c", goal="g", owner_session_key="s")
            for start in range(0, EVENTS // 2, CHUNK):
                store.append(flow_id, [NewEvent("Noted", {"n": n}) for n in range(start, start + CHUNK)])
            service.finish(flow_id)
    with freeze_time(moment + timedelta(days=40)), target.open(projections=[FlowProjection()]) as store:
        report = run_retention(store, {"finished": 30}, archive_dir, pruners=[prune_flow_read_models])
        assert report.archive_id is not None and store.last_position() > 0
        return report.archive_id


@pytest.mark.parametrize("kills", [3, pytest.param(10, marks=pytest.mark.slow)])
def test_a_killed_restore_leaves_each_flow_back_whole_or_still_pruned(
    target: Target, tmp_path: Path, kills: int
) -> None:
    archive_id = archived(target, datetime(2030, 1, 1, tzinfo=UTC), tmp_path / "archives")
    rng = random.Random()
    expected = EVENTS // 2 + 2
    with target.open(projections=[FlowProjection()]) as store:
        for k in range(kills):
            args = (target.url, target.options, archive_id, str(tmp_path / "archives"))
            if kill_during(kill_workers.restore_archive, args, rng.uniform(0.0, LATEST_KILL)):
                break
            with store.engine.connect() as conn:
                tombstoned = set(conn.exec_driver_sql("SELECT flow_id FROM flow_tombstones").scalars())
            for f in range(FLOWS):
                revision = store.revision(f"f{f}")
                assert revision == expected or f"f{f}" in tombstoned, (k, f, revision)
                assert revision < expected or f"f{f}" not in tombstoned, (k, f, revision)
            assert store.verify().ok
        else:
            kill_during(kill_workers.restore_archive, args, kill_workers.CHILD_TIMEOUT)
        assert [store.revision(f"f{f}") for f in range(FLOWS)] == [expected] * FLOWS
        assert store.verify().ok
        assert_matches_rebuild(store)


def test_a_restore_killed_part_way_verifies_as_pruned_flows_not_as_missing_events(
    target: Target, tmp_path: Path
) -> None:
    """No import record for a restore: a flow partly back keeps its tombstone, so it is still a
    pruned flow (its archive whole, its stored part checked against its pruned leaves)."""
    archive_id = archived(target, datetime(2030, 1, 1, tzinfo=UTC), tmp_path / "archives")
    args = (target.url, target.options, archive_id, str(tmp_path / "archives"))
    with target.open():
        pass  # the schema, before the child opens the store
    assert not kill_during(kill_workers.restore_archive_killed_mid_way, args, 0.0), "it finished first"
    expected = EVENTS // 2 + 2
    with target.open(projections=[FlowProjection()]) as store:
        with store.engine.connect() as conn:
            tombstoned = set(conn.exec_driver_sql("SELECT flow_id FROM flow_tombstones").scalars())
        revisions = {f"f{f}": store.revision(f"f{f}") for f in range(FLOWS)}
        partly = [f for f, revision in revisions.items() if 0 < revision < expected]
        assert partly and set(partly) <= tombstoned, revisions
        assert {f for f, revision in revisions.items() if revision < expected} == tombstoned
        (archive,) = list_archives(store, archive_id=archive_id)
        assert archive.flows_pruned == len(tombstoned)
        with pytest.raises(FlowPruned):
            store.append(partly[0], [NewEvent("Noted", {})], expected_revision=revisions[partly[0]])
        assert store.verify().ok and Maintenance(store).run_once("integrity").status == "ok"
        tamper(store, f"DELETE FROM flow_events WHERE flow_id = '{partly[0]}' AND revision = 1")
        assert "missing-events" in {p.kind for p in store.verify().problems}  # its part is still checked
