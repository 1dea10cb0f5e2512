"""An import cut short is recorded in the store until it is finished: verify, stats and a
second import say so (docs/exchange.md, "An import under way")."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from eventstore import EventStore, ExportInvalid, ImportConflict, ImportUnfinished, NewEvent, migrate
from eventstore.cli import main
from eventstore.exchange import export_events, import_events
from eventstore.exportfile import Progress, verify_export
from eventstore.importing import run_import
from eventstore.incremental_verify import SYSTEM_INTEGRITY_FLOW, verify_since
from eventstore.maintenance import Maintenance
from eventstore.manifest import Manifest
from eventstore.unfinished_import import UnfinishedImport, abandon_import, unfinished_import

from . import kill_workers
from .conftest import Target
from .kill_workers import kill_during
from .test_maintenance_jobs import position_of

FLOWS, EVENTS, BATCH = 4, 1200, 100


def an_export(tmp_path: Path, name: str, flows: int, events: int) -> Path:
    with EventStore.open(f"sqlite:///{tmp_path / (name + '.db')}") as source:
        for f in range(flows):
            for start in range(0, events, BATCH):
                source.append(
                    f"{name}-{f}", [NewEvent("Imported", {"n": n}) for n in range(start, start + BATCH)]
                )
        export_events(source, tmp_path / f"{name}.jsonl")
    return tmp_path / f"{name}.jsonl"


def cli_prefix(target: Target) -> list[str]:
    schema = target.options.get("schema")
    return ["--schema", schema] if schema else []


def cli_env(target: Target) -> dict[str, str]:
    return {"EVENTSTORE_URL": target.url}


def cli(target: Target, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*cli_prefix(target), *args], env=cli_env(target))
    return result.exit_code, result.output


def killed_import(target: Target, path: Path) -> None:
    with target.open():
        pass  # the schema, before the child opens the store
    args = (target.url, target.options, str(path), BATCH)
    finished = kill_during(kill_workers.import_file_killed_mid_way, args, 0.0)
    assert not finished, "the import finished before the kill"


def test_a_killed_import_is_named_by_verify_until_a_rerun_finishes_it(target: Target, tmp_path: Path) -> None:
    path = an_export(tmp_path, "main", FLOWS, EVENTS)
    killed_import(target, path)
    with target.open() as store:
        held = store.last_position()
        assert 0 < held < FLOWS * EVENTS
        marker = unfinished_import(store)
        assert marker is not None
        assert (marker.events_file, marker.events_imported, marker.event_count) == (
            str(path.resolve()),
            held,
            FLOWS * EVENTS,
        )
        report = store.verify()
        assert not report.ok
        (problem,) = report.problems
        assert problem.kind == "import-unfinished"
        assert str(path.resolve()) in problem.detail and f"{held} of its {FLOWS * EVENTS}" in problem.detail
        assert f"`eventstore abandon-import {marker.export_sha256[:16]}`" in problem.detail
        assert not store.verify("main-0").ok  # a flow's check cannot tell whether its tail is missing

        code, out = cli(target, "verify")
        assert code == 2 and "import-unfinished" in out and str(path.resolve()) in out
        code, out = cli(target, "stats", "--json")
        assert code == 0, out
        shown = json.loads(out)["unfinished_import"]
        assert (shown["events_file"], shown["events_imported"]) == (str(path.resolve()), held)
        (line,) = [line for line in cli(target, "stats")[1].splitlines() if line.startswith("import")]
        assert "UNFINISHED" in line and str(path.resolve()) in line and f"{held:,} of" in line

        rest = import_events(store, path, batch_size=BATCH)
        assert rest.events_imported == FLOWS * EVENTS - held
        assert unfinished_import(store) is None and store.verify().ok
        assert json.loads(cli(target, "stats", "--json")[1])["unfinished_import"] is None


def test_another_export_is_refused_while_an_import_is_unfinished(target: Target, tmp_path: Path) -> None:
    path, other = an_export(tmp_path, "main", FLOWS, EVENTS), an_export(tmp_path, "other", 1, BATCH)
    killed_import(target, path)
    with target.open() as store:
        held = store.last_position()
        with pytest.raises(ImportUnfinished, match=r"import .*main\.jsonl .* unfinished") as refused:
            import_events(store, other)
        assert refused.value.events_file == str(path.resolve())
        assert f"{held} of its {FLOWS * EVENTS}" in str(refused.value) and "again" in str(refused.value)
        assert store.last_position() == held and unfinished_import(store) == unfinished_import(store)
        code, out = cli(target, "import", str(other))
        assert code == 1 and "main.jsonl" in out and "Traceback" not in out
        assert store.last_position() == held
        import_events(store, path)
        assert import_events(store, other).events_imported == BATCH
        assert unfinished_import(store) is None and store.verify().ok


@pytest.mark.parametrize("batch_size", [BATCH, 7 * BATCH, FLOWS * EVENTS])
def test_a_finished_import_leaves_no_marker_whatever_its_last_batch(
    target: Target, tmp_path: Path, batch_size: int
) -> None:
    path = an_export(tmp_path, "main", FLOWS, EVENTS)
    with target.open() as store:
        assert import_events(store, path, batch_size=batch_size).events_imported == FLOWS * EVENTS
        assert unfinished_import(store) is None and store.verify().ok


def test_db_upgrade_from_0016_adds_the_record_empty(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    with sa.create_engine(url).begin() as conn:
        migrate.upgrade(conn, "0016")
    result = CliRunner().invoke(main, ["--url", url, "db", "upgrade"])
    assert result.exit_code == 0, result.output
    with EventStore.open(url, create=False) as store:
        assert unfinished_import(store) is None and store.verify().ok


def test_an_import_that_cannot_be_finished_is_abandoned_on_the_record(target: Target, tmp_path: Path) -> None:
    path, other = an_export(tmp_path, "main", FLOWS, EVENTS), an_export(tmp_path, "other", 1, BATCH)
    killed_import(target, path)
    path.unlink()  # the export is lost: the import can never be finished
    with target.open() as store:
        marker = unfinished_import(store)
        assert marker is not None
        code, out = cli(target, "abandon-import", "0" * 8, "--by", "ops:kim", "--reason", "file lost")
        assert code == 1 and "no unfinished import" in out and unfinished_import(store) == marker
        sha = marker.export_sha256[:12]
        code, out = cli(target, "abandon-import", sha, "--by", "ops:kim", "--reason", "file lost")
        assert code == 0 and f"{marker.events_imported:,} of {marker.event_count:,}" in out, out
        assert unfinished_import(store) is None and store.verify().ok
        (record,) = store.read_flow("$system-imports")
        assert record.type == "ImportAbandoned" and record.data["export_sha256"] == marker.export_sha256
        assert (record.data["by"], record.data["reason"]) == ("ops:kim", "file lost")
        assert import_events(store, other).events_imported == BATCH


def test_the_integrity_job_fails_while_an_import_is_unfinished_and_records_it_once(
    target: Target, tmp_path: Path
) -> None:
    path = an_export(tmp_path, "main", FLOWS, EVENTS)
    killed_import(target, path)
    with target.open() as store:
        held = store.last_position()
        assert [p.kind for p in verify_since(store, held).problems] == ["import-unfinished"]
        service = Maintenance(store)
        result = service.run_once("integrity")
        assert result.status == "failed" and "import-unfinished" in (result.error or "")
        assert str(path.resolve()) in (result.error or "") and f"{held} of its" in (result.error or "")
        assert position_of(service, "integrity") == held  # the chains it holds were checked
        assert service.run_once("integrity").status == "failed"  # every run, until it is finished
        (recorded,) = store.read_flow(SYSTEM_INTEGRITY_FLOW)  # on record once, not once a run
        assert [p["kind"] for p in recorded.data["problems"]] == ["import-unfinished"]
        import_events(store, path, batch_size=BATCH)
        assert service.run_once("integrity").status == "ok"


class Interrupted(Exception):
    """Stands in for a kill part way: the batches committed before it stay in."""


def stop_at(done: int) -> Callable[[Progress], None]:
    def stop(progress: Progress) -> None:
        if progress.phase == "importing" and progress.done == done:
            raise Interrupted

    return stop


def cut_short(store: EventStore, path: Path) -> UnfinishedImport:
    """Import ``path`` until 1000 of its events are in, and stop there."""
    with pytest.raises(Interrupted):
        import_events(store, path, batch_size=BATCH, progress=stop_at(1000))
    marker = unfinished_import(store)
    assert marker is not None and marker.events_imported == 1000
    return marker


class TestAnImportThatNoLongerFits:
    def test_a_rerun_after_a_writer_appended_to_a_half_imported_flow_names_abandon_import(
        self, target: Target, tmp_path: Path
    ) -> None:
        path = an_export(tmp_path, "main", FLOWS, EVENTS)
        with target.open() as store:
            marker = cut_short(store, path)
            assert store.revision("main-0") == 1000  # of its 1200
            store.append("main-0", [NewEvent("Local", {})])
            hint = f"`eventstore abandon-import {marker.export_sha256[:16]}`"
            with pytest.raises(ImportConflict, match="histories differ") as refused:
                import_events(store, path, batch_size=BATCH)
            assert hint in str(refused.value) and "1000 of its 4800" in str(refused.value)
            code, out = cli(target, "import", str(path))
            assert code == 1 and hint in out and "Traceback" not in out
            assert unfinished_import(store) == marker and store.last_position() == 1001
            code, out = cli(
                target, "abandon-import", marker.export_sha256[:16], "--by", "ops:kim", "--reason", "x"
            )
            assert code == 0, out
            assert unfinished_import(store) is None and store.verify().ok

    def test_a_writer_appending_mid_import_is_told_the_import_cannot_be_rerun_but_abandoned(
        self, target: Target, tmp_path: Path
    ) -> None:
        path = an_export(tmp_path, "main", FLOWS, EVENTS)
        with target.open() as store:

            def intrude(progress: Progress) -> None:
                if progress.phase == "importing" and progress.done == 1000:
                    store.append("main-0", [NewEvent("Local", {})])

            with pytest.raises(ImportConflict, match="another writer appended") as refused:
                import_events(store, path, batch_size=BATCH, progress=intrude)
            marker = unfinished_import(store)
            assert marker is not None and marker.events_imported == 1000
            message = str(refused.value)
            assert "stopped after 1000 events" in message and "writes the rest" not in message
            assert f"`eventstore abandon-import {marker.export_sha256[:16]}`" in message
            with pytest.raises(ImportConflict, match="abandon-import"):
                import_events(store, path, batch_size=BATCH)
            abandon_import(store, marker.export_sha256, by="ops:kim", reason="appended to")
            assert unfinished_import(store) is None and store.verify().ok

    def test_a_rerun_a_writer_overtakes_before_its_first_batch_names_abandon_import(
        self, target: Target, tmp_path: Path
    ) -> None:
        path = an_export(tmp_path, "main", FLOWS, EVENTS)
        with target.open() as store:
            marker = cut_short(store, path)

            def intrude(progress: Progress) -> None:  # after the rerun's check, before its first batch
                if progress.phase == "verifying" and progress.done == 1000:
                    store.append("main-0", [NewEvent("Local", {})])

            with pytest.raises(ImportConflict, match="another writer appended") as refused:
                import_events(store, path, batch_size=BATCH, progress=intrude)
            message = str(refused.value)
            assert "nothing was imported" in message and "writes the rest" not in message
            assert f"`eventstore abandon-import {marker.export_sha256[:16]}`" in message
            assert unfinished_import(store) == marker


class TestTwoExportsImportedTogether:
    def test_the_import_refused_at_its_first_batch_says_nothing_was_imported(
        self, target: Target, tmp_path: Path
    ) -> None:
        path, other = an_export(tmp_path, "main", FLOWS, EVENTS), an_export(tmp_path, "other", 1, EVENTS)
        with target.open() as store:

            def other_starts(progress: Progress) -> None:  # after main's check, before its first batch
                if progress.phase == "verifying" and progress.done == 1000:
                    cut_short(store, other)

            with pytest.raises(ImportUnfinished, match=r"other\.jsonl .*nothing was imported$"):
                import_events(store, path, batch_size=BATCH, progress=other_starts)
            assert store.last_position() == 1000 and store.revision("main-0") == 0

    def test_the_import_refused_part_way_says_what_it_wrote(self, target: Target, tmp_path: Path) -> None:
        path, other = an_export(tmp_path, "main", FLOWS, EVENTS), an_export(tmp_path, "other", 1, EVENTS)
        with target.open() as store:

            def given_up_and_overtaken(progress: Progress) -> None:
                if progress.phase == "importing" and progress.done == 1000:
                    mine = unfinished_import(store)
                    assert mine is not None
                    abandon_import(store, mine.export_sha256, by="ops:kim", reason="thought it dead")
                    cut_short(store, other)

            with pytest.raises(ImportUnfinished, match=r"other\.jsonl") as refused:
                import_events(store, path, batch_size=BATCH, progress=given_up_and_overtaken)
            message = str(refused.value)
            assert "nothing was imported" not in message
            assert "the import stopped after 1000 events (positions 1 to 1000)" in message
            assert store.revision("main-0") == 1000 and store.revision("other-0") == 1000


def test_a_stale_record_of_an_export_the_store_holds_whole_goes_with_the_next_import(
    target: Target, tmp_path: Path
) -> None:
    path = an_export(tmp_path, "main", FLOWS, EVENTS)
    with target.open() as store:
        cut_short(store, path)
        run_import(store, path, batch_size=BATCH)  # a restore's route: writes the rest, unrecorded
        assert unfinished_import(store) is not None and store.last_position() == FLOWS * EVENTS
        report = import_events(store, path, batch_size=BATCH)
        assert (report.events_imported, report.events_skipped) == (0, FLOWS * EVENTS)
        assert unfinished_import(store) is None and store.verify().ok


def test_a_file_changed_mid_import_names_what_finishes_it(target: Target, tmp_path: Path) -> None:
    """Replaced by another export part way, the file cannot finish the import: its first SHA-256 can."""
    from .test_export_edge_cases import forge

    path, other = an_export(tmp_path, "main", FLOWS, EVENTS), an_export(tmp_path, "other", FLOWS, EVENTS)
    original = path.read_bytes(), Path(f"{path}.manifest.json").read_bytes()

    def replace(progress: Progress) -> None:
        if progress.phase == "importing" and progress.done == 1000:
            forge(path, other.read_bytes(), like=other)

    with target.open() as store:
        with pytest.raises(ExportInvalid) as changed:
            import_events(store, path, batch_size=BATCH, progress=replace)
        marker = unfinished_import(store)
        assert marker is not None and marker.events_imported == store.last_position() >= 1000
        message = str(changed.value)
        assert "writes the rest" not in message and "stopped after" in message
        assert f"SHA-256 {marker.export_sha256[:16]}" in message
        assert f"`eventstore abandon-import {marker.export_sha256[:16]}`" in message
        with pytest.raises(ImportUnfinished, match="the file there now is another export"):
            import_events(store, path, batch_size=BATCH)  # the file as it is now cannot finish it
        path.write_bytes(original[0])  # the export as it was verified can
        Path(f"{path}.manifest.json").write_bytes(original[1])
        finished = import_events(store, path, batch_size=BATCH)
        assert finished.events_imported == FLOWS * EVENTS - marker.events_imported
        assert unfinished_import(store) is None and store.verify().ok


class TestAnExportDuringAnUnfinishedImport:
    """An export taken while an import is unfinished goes ahead, and says it lacks the rest of it."""

    def test_the_manifest_and_the_result_say_so(self, target: Target, tmp_path: Path) -> None:
        path = an_export(tmp_path, "main", FLOWS, EVENTS)
        with target.open() as store:
            marker = cut_short(store, path)
            manifest = export_events(store, tmp_path / "out.jsonl")
            assert manifest.event_count == 1000
            noted = manifest.unfinished_import
            assert noted is not None and noted["export_sha256"] == marker.export_sha256
            assert (noted["events_imported"], noted["event_count"]) == (1000, FLOWS * EVENTS)
            (warning,) = manifest.warnings
            assert "unfinished import" in warning and f"1000 of its {FLOWS * EVENTS}" in warning
            assert Manifest.read(tmp_path / "out.jsonl") == manifest  # whoever imports it learns it
            assert verify_export(tmp_path / "out.jsonl").ok
            document = json.loads((tmp_path / "out.jsonl.manifest.json").read_text())
            assert document["format_version"] == 1 and "unfinished_import" in document["source"]

            code, out = cli(target, "export", str(tmp_path / "cli.jsonl"), "--json")
            assert code == 0, out
            shown = json.loads(out.splitlines()[-1])
            assert shown["warnings"] == [warning] and shown["source"]["unfinished_import"] == noted
            result = CliRunner().invoke(
                main, [*cli_prefix(target), "export", str(tmp_path / "cli2.jsonl")], env=cli_env(target)
            )
            assert result.exit_code == 0 and "exported 1,000 events" in result.stdout
            assert f"warning: {warning}" in result.stderr
            result = CliRunner().invoke(main, ["verify-export", str(tmp_path / "cli2.jsonl")])
            assert result.exit_code == 0 and f"warning: {warning}" in result.stderr
            with EventStore.open(f"sqlite:///{tmp_path / 'elsewhere.db'}") as elsewhere:
                assert import_events(elsewhere, tmp_path / "out.jsonl").warnings == (warning,)

            import_events(store, path, batch_size=BATCH)
            whole = export_events(store, tmp_path / "whole.jsonl")
            assert whole.unfinished_import is None and whole.warnings == ()
            assert "unfinished_import" not in whole.to_dict()["source"]  # the format as before

    def test_an_import_cut_short_while_the_export_runs_is_noted_too(
        self, target: Target, tmp_path: Path
    ) -> None:
        path = an_export(tmp_path, "main", FLOWS, EVENTS)
        with target.open() as store:
            store.append("local", [NewEvent("Local", {"n": n}) for n in range(1500)])

            def import_meanwhile(progress: Progress) -> None:
                if progress.phase == "exporting" and progress.done == 1000:
                    cut_short(store, path)

            manifest = export_events(store, tmp_path / "out.jsonl", flow="local", progress=import_meanwhile)
            noted = manifest.unfinished_import
            assert noted is not None and noted["events_imported"] == 1000 and len(manifest.warnings) == 1
