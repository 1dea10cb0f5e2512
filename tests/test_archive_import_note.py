"""Retention prunes nothing while an import is unfinished: it may still write to flows that look terminal."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from freezegun import freeze_time

from eventstore import EventStore, ImportUnfinished, NewEvent
from eventstore.exchange import export_events, import_events
from eventstore.exportfile import Progress, verify_export
from eventstore.maintenance import Maintenance
from eventstore.maintenance_config import MaintenanceConfig
from eventstore.retention import list_archives, run_retention
from eventstore.unfinished_import import UnfinishedImport, abandon_import, unfinished_import
from projections import FlowProjection, FlowService
from projections.pruning import prune_flow_read_models

from .conftest import Target
from .test_import_marker import cli as run_cli
from .test_import_marker import cut_short
from .test_retention import DAY, FINISHED_30, T0, retain


def an_export(tmp_path: Path) -> Path:
    """At T0 the flow "done" is started and finished, then 1500 notes are appended: 1502 events."""
    with (
        freeze_time(T0),
        EventStore.open(f"sqlite:///{tmp_path / 'source.db'}", projections=[FlowProjection()]) as source,
    ):
        FlowService(source).start_flow("done", controller_id="c", goal="g", owner_session_key="s")
        FlowService(source).finish("done")
        source.append("done", [NewEvent("Note", {"n": n}) for n in range(1500)])
        export_events(source, tmp_path / "source.jsonl")
    return tmp_path / "source.jsonl"


def half_imported(store: EventStore, path: Path) -> UnfinishedImport:
    marker = cut_short(store, path)
    assert store.revision("done") == 1000  # of its 1502, FlowFinished among them: it looks terminal
    return marker


def refused(marker: UnfinishedImport) -> str:
    return rf"abandon-import {marker.export_sha256[:16]}`\); retention refused, as the import may still write"


def test_retention_prunes_nothing_while_an_import_is_unfinished_and_says_why(
    target: Target, tmp_path: Path
) -> None:
    path = an_export(tmp_path)
    with target.open(projections=[FlowProjection()]) as store:
        marker = half_imported(store, path)
        with pytest.raises(ImportUnfinished, match=refused(marker)) as caught:
            retain(store, tmp_path, T0 + 40 * DAY)
        assert "nothing was archived or pruned" in str(caught.value)
        assert f"eventstore import {marker.events_file}" in str(caught.value)
        with pytest.raises(ImportUnfinished, match=refused(marker)):  # never "would prune" what it refuses
            retain(store, tmp_path, T0 + 40 * DAY, dry_run=True)
        assert list_archives(store) == [] and not (tmp_path / "archives").exists()
        code, out = run_cli(target, "prune", "--policy", "finished=30", "--archive-dir", str(tmp_path / "a"))
        assert code == 1 and "retention refused" in out and "Traceback" not in out
        code, out = run_cli(target, "prune", "--policy", "finished=30", "--dry-run")
        assert code == 1 and "retention refused" in out and "would prune" not in out
        assert store.revision("done") == 1000 and unfinished_import(store) == marker

        import_events(store, path)  # finished by importing the same file again
        assert unfinished_import(store) is None and store.revision("done") == 1502
        assert store.verify().ok
        report = retain(store, tmp_path, T0 + 40 * DAY)
        assert report.pruned == ("done",) and report.events_pruned == 1502
        manifest = verify_export(Path(report.archive_path or "")).manifest
        assert [(s.flow_id, s.last_revision) for s in manifest.flows] == [("done", 1502)]
        assert manifest.unfinished_import is None and store.verify().ok


def test_retention_prunes_a_half_imported_flow_once_the_import_is_given_up(
    target: Target, tmp_path: Path
) -> None:
    path = an_export(tmp_path)
    with target.open(projections=[FlowProjection()]) as store:
        marker = half_imported(store, path)
        with pytest.raises(ImportUnfinished, match=refused(marker)):
            retain(store, tmp_path, T0 + 40 * DAY)
        abandon_import(store, marker.export_sha256, by="ops:kim", reason="file lost")
        report = retain(store, tmp_path, T0 + 40 * DAY)
        assert report.pruned == ("done",) and report.events_pruned == 1000
        manifest = verify_export(Path(report.archive_path or "")).manifest
        assert [(s.flow_id, s.last_revision) for s in manifest.flows] == [("done", 1000)]
        assert manifest.unfinished_import is None and store.verify().ok


def test_the_retention_job_fails_naming_the_unfinished_import(target: Target, tmp_path: Path) -> None:
    path = an_export(tmp_path)
    with target.open(projections=[FlowProjection()]) as store:
        marker = half_imported(store, path)
        retention = {"keep_days": {"finished": 30}, "archive_dir": str(tmp_path / "archives")}
        maintenance = Maintenance(store, MaintenanceConfig.parse({"retention": retention}))
        with freeze_time(T0 + 40 * DAY):
            run = maintenance.run_once("retention")
        assert run.status == "failed" and re.search(refused(marker), run.error or "")
        assert store.revision("done") == 1000 and list_archives(store) == []
        import_events(store, path)
        with freeze_time(T0 + 41 * DAY):
            run = maintenance.run_once("retention")
        assert run.status == "ok" and run.details["pruned"] == ["done"] and store.verify().ok


def test_an_import_cut_short_after_the_archive_is_written_stops_its_prune(
    target: Target, tmp_path: Path
) -> None:
    """The prune looks again under the append lock, which each of an import's batches takes to
    write its events and its record: an import that began after the run's first look is seen."""
    path = an_export(tmp_path)
    with target.open(projections=[FlowProjection()]) as store:
        with freeze_time(T0):
            FlowService(store).start_flow("local", controller_id="c", goal="g", owner_session_key="s")
            FlowService(store).finish("local")
        markers: list[UnfinishedImport] = []

        def import_once_verified(item: Progress) -> None:
            if item.phase == "verified" and not markers:
                markers.append(half_imported(store, path))

        with (
            freeze_time(T0 + 40 * DAY),
            pytest.raises(
                ImportUnfinished,
                match=r"pruning archive .* refused.*nothing was pruned, the archive stays verified",
            ),
        ):
            run_retention(
                store,
                FINISHED_30,
                tmp_path / "archives",
                pruners=[prune_flow_read_models],
                progress=import_once_verified,
            )
        assert store.revision("local") == 2 and [a.status for a in list_archives(store)] == ["verified"]
        import_events(store, path)
        later = retain(store, tmp_path, T0 + 40 * DAY)
        assert set(later.pruned) == {"local", "done"} and len(later.repaired) == 1
        assert store.verify().ok
