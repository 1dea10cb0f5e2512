"""An export across flows says that the flows retention pruned are not in it, instead of looking whole."""

from __future__ import annotations

from pathlib import Path

import orjson

from eventstore import EventStore
from eventstore.exportfile import verify_export
from eventstore.exporting import export_events
from eventstore.importing import import_events

from .conftest import Target
from .test_audit_pruned import cli, pruned  # noqa: F401  (pruned is a fixture)

LEFT_OUT = "the source store had pruned 1 flow (5 events) into 1 retention archive"


def test_a_whole_store_export_says_what_retention_pruned(pruned: EventStore, tmp_path: Path) -> None:  # noqa: F811
    manifest = export_events(pruned, tmp_path / "all.jsonl")
    assert manifest.pruned == {"flows": 1, "events": 5, "archives": 1}
    assert any(warning.startswith(LEFT_OUT) for warning in manifest.warnings)
    assert verify_export(tmp_path / "all.jsonl").manifest.pruned == manifest.pruned  # as written


def test_a_session_export_counts_its_own_and_an_import_passes_it_on(
    pruned: EventStore,  # noqa: F811
    tmp_path: Path,
) -> None:
    with pruned.transaction() as tx:  # z1 as pruned before migration 0019: any session may have owned it
        tx.connection.exec_driver_sql("UPDATE flow_tombstones SET owner_session_key = NULL")
    manifest = export_events(pruned, tmp_path / "sess.jsonl", session="sess-L")
    assert manifest.pruned is not None and manifest.pruned["unknown_owner"] == 1
    said = f"{LEFT_OUT}: session 'sess-L' may have owned some of the 1 pruned before the store recorded"
    assert any(warning.startswith(said) for warning in manifest.warnings)
    with EventStore.open(f"sqlite:///{tmp_path / 'copy.db'}") as copy:
        report = import_events(copy, tmp_path / "sess.jsonl")
    assert any(warning.startswith(said) for warning in report.warnings)


def test_a_session_export_of_a_session_without_pruned_flows_has_no_such_warning(
    pruned: EventStore,  # noqa: F811
    tmp_path: Path,
) -> None:
    manifest = export_events(pruned, tmp_path / "sess.jsonl", session="sess-L")
    assert manifest.pruned is None and manifest.warnings == ()


def test_a_flow_export_has_no_such_warning(pruned: EventStore, tmp_path: Path) -> None:  # noqa: F811
    manifest = export_events(pruned, tmp_path / "live.jsonl", flow="live")
    assert manifest.pruned is None and manifest.warnings == ()


def test_the_cli_prints_it_and_its_json_has_it(pruned: EventStore, target: Target, tmp_path: Path) -> None:  # noqa: F811
    result = cli(target, "export", str(tmp_path / "cli.jsonl"))
    assert LEFT_OUT in " ".join(result.output.split())
    result = cli(target, "export", "--json", str(tmp_path / "cli2.jsonl"))
    document = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert any(warning.startswith(LEFT_OUT) for warning in document["warnings"])
