"""Whether a retention archive can lack part of an unfinished import's flow, so keeps the note."""

from __future__ import annotations

from pathlib import Path

import pytest
from freezegun import freeze_time

from eventstore import EventStore, ImportConflict, NewEvent
from eventstore.exchange import export_events, import_events
from eventstore.exportfile import verify_export
from projections import FlowProjection, FlowService

from .conftest import Target
from .test_import_marker import cut_short
from .test_retention import DAY, T0, retain


def test_an_archive_may_hold_a_half_imported_flow_and_says_so(target: Target, tmp_path: Path) -> None:
    """A flow whose ending event is among the imported part is terminal: retention prunes it, its
    later events still unimported, so the archive's note of the unfinished import is true."""
    with (
        freeze_time(T0),
        EventStore.open(f"sqlite:///{tmp_path / 'source.db'}", projections=[FlowProjection()]) as source,
    ):
        FlowService(source).start_flow("done", controller_id="c", goal="g", owner_session_key="s")
        FlowService(source).finish("done")
        source.append("done", [NewEvent("Note", {"n": n}) for n in range(1500)])
        export_events(source, tmp_path / "source.jsonl")
    with target.open(projections=[FlowProjection()]) as store:
        marker = cut_short(store, tmp_path / "source.jsonl")
        assert store.revision("done") == 1000  # of its 1502, FlowFinished among them
        report = retain(store, tmp_path, T0 + 40 * DAY)
        assert report.archive_id is not None and report.pruned == ("done",)
        archive = Path(report.archive_path or "")
        manifest = verify_export(archive).manifest
        assert [(s.flow_id, s.last_revision) for s in manifest.flows] == [("done", 1000)]
        assert manifest.unfinished_import is not None
        assert manifest.unfinished_import["export_sha256"] == marker.export_sha256
        assert any("may lack" in warning for warning in manifest.warnings)
        with pytest.raises(ImportConflict, match="'done': it was pruned from this store into archive"):
            import_events(store, tmp_path / "source.jsonl")  # its rest: the archive lacks it for good
