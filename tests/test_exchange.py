"""Export to JSON Lines, verify offline, import into another store (SQLite to PostgreSQL and back)."""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from click.testing import CliRunner

from eventstore import (
    EventStore,
    ExportInvalid,
    FlowNotFound,
    ImportConflict,
    IntegrityViolation,
    InvalidInput,
    NewEvent,
)
from eventstore.checkpoints import generate_key, take_checkpoint
from eventstore.cli import main
from eventstore.exchange import export_events, import_events
from eventstore.exportfile import verify_export
from eventstore.manifest import Manifest
from projections import FlowProjection, FlowQueries, FlowService

from .conftest import Target
from .readmodels import assert_matches_rebuild
from .test_projections import DecisionsByActor
from .test_tamper import drop_guards, sql

T0 = datetime(2030, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def source(target: Target) -> Iterator[EventStore]:
    """Two sessions' flows through the flow service, and a plain flow; one event per second from T0."""
    with target.open(projections=[FlowProjection()], clock=Clock()) as store:
        service = FlowService(store)
        for flow_id, session in (("a", "s1"), ("b", "s1"), ("c", "s2")):
            service.start_flow(flow_id, controller_id="ctl", goal="g", owner_session_key=session)
            service.advance(flow_id, state_patch={"price": 0.1, "note": "naïve"})
        service.finish("a")
        store.append("plain", [NewEvent("T", {"i": i}) for i in range(3)], metadata={"actor": "agent:x"})
        yield store


@pytest.fixture
def other(target: Target, tmp_path: Path, request: pytest.FixtureRequest) -> Target:
    """A fresh place on the other backend."""
    if target.dialect == "sqlite":
        pg: Target = request.getfixturevalue("pg_target")
        return pg
    return Target(f"sqlite:///{tmp_path / 'other.db'}")


def lines(path: Path) -> list[dict[str, Any]]:
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as file:
        return [orjson.loads(line) for line in file]


def stripped(store: EventStore) -> list[tuple[Any, ...]]:
    """Every event without its position, in flow order."""
    return sorted(tuple(e)[1:] for e in store.read_all())


class TestExport:
    def test_whole_log_round_trips_through_the_file(self, source: EventStore, tmp_path: Path) -> None:
        path = tmp_path / "all.jsonl.gz"
        manifest = export_events(source, path)
        assert path.read_bytes()[:2] == b"\x1f\x8b"
        assert manifest.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert (manifest.event_count, len(manifest.flows)) == (source.last_position(), 4)
        assert (manifest.first_position, manifest.last_position) == (1, source.last_position())
        assert Manifest.read(manifest.path) == manifest
        rows = lines(path)
        assert [row["position"] for row in rows] == list(range(1, source.last_position() + 1))
        for row, event in zip(rows, source.read_all(), strict=True):
            assert hashlib.sha256(row["data"].encode()).hexdigest() == row["data_hash"]
            assert orjson.loads(row["data"]) == event.data and row["hash"] == event.hash
        assert verify_export(path).ok

    def test_flow_session_and_time_range(self, source: EventStore, tmp_path: Path) -> None:
        flow = export_events(source, tmp_path / "a.jsonl", flow="a")
        assert [s.flow_id for s in flow.flows] == ["a"] and flow.flows[0].last_revision == 3
        session = export_events(source, tmp_path / "s1.jsonl", session="s1")
        assert [s.flow_id for s in session.flows] == ["a", "b"]
        assert session.selection == {"kind": "session", "session": "s1"}
        events = list(source.read_all())  # a@1 a@2 b@1 b@2 c@1 c@2 a@3 plain@1..3
        since, until = events[3].recorded_at, events[5].recorded_at
        ranged = export_events(source, tmp_path / "r.jsonl", since=since, until=until)
        assert [row["position"] for row in lines(tmp_path / "r.jsonl")] == [4, 5]
        assert [(s.flow_id, s.first_revision) for s in ranged.flows] == [("b", 2), ("c", 1)]
        assert all(verify_export(tmp_path / name).ok for name in ("a.jsonl", "s1.jsonl", "r.jsonl"))

    def test_one_selection_at_a_time(self, source: EventStore, tmp_path: Path) -> None:
        with pytest.raises(InvalidInput, match="flow and since/until"):
            export_events(source, tmp_path / "x.jsonl", flow="a", since=T0)
        with pytest.raises(FlowNotFound):
            export_events(source, tmp_path / "x.jsonl", flow="nobody")

    def test_flows_is_a_list_of_flows_that_have_events(self, source: EventStore, tmp_path: Path) -> None:
        with pytest.raises(InvalidInput, match="not the string 'plain': for one flow, use flow="):
            export_events(source, tmp_path / "x.jsonl", flows="plain")
        with pytest.raises(FlowNotFound, match=r"^flow 'yy' does not exist \(also without events: 'zz'\)$"):
            export_events(source, tmp_path / "x.jsonl", flows=["zz", "plain", "yy"])
        assert not (tmp_path / "x.jsonl").exists()

    def test_an_existing_file_is_replaced_only_when_asked(self, source: EventStore, tmp_path: Path) -> None:
        path = tmp_path / "a.jsonl"
        first = export_events(source, path, flow="a")
        with pytest.raises(InvalidInput, match=r"a\.jsonl exists already.*overwrite=True"):
            export_events(source, path, flow="b")
        assert Manifest.read(path) == first and verify_export(path).ok
        path.unlink()
        with pytest.raises(InvalidInput, match=r"a\.jsonl\.manifest\.json exists already"):
            export_events(source, path, flow="b")
        assert not path.exists()
        assert [s.flow_id for s in export_events(source, path, flow="b", overwrite=True).flows] == ["b"]

    @pytest.mark.parametrize("fifo", ["a.jsonl", "a.jsonl.manifest.json"])
    def test_overwrite_never_replaces_what_is_not_a_regular_file(
        self, source: EventStore, tmp_path: Path, fifo: str
    ) -> None:
        os.mkfifo(tmp_path / fifo)  # as /dev/null is to root: os.replace put a file in its place
        with pytest.raises(InvalidInput, match=f"{fifo} is not a regular file: not replacing it"):
            export_events(source, tmp_path / "a.jsonl", overwrite=True)
        assert stat.S_ISFIFO(os.lstat(tmp_path / fifo).st_mode) and not list(tmp_path.glob("*partial*"))

    def test_never_onto_the_stores_own_database(self, tmp_path: Path) -> None:
        with EventStore.open(f"sqlite:///{tmp_path / 'audit.db'}") as store:
            store.append("f", [NewEvent("T", {})])
            (tmp_path / "link.db").symlink_to(tmp_path / "audit.db")
            (tmp_path / "hard.db").hardlink_to(tmp_path / "audit.db")
            for name in (
                "audit.db",
                "audit.db-wal",
                "audit.db-shm",
                "audit.db-journal",
                "link.db",
                "hard.db",
            ):
                with pytest.raises(InvalidInput, match=r"audit\.db.*, a file of this store's database"):
                    export_events(store, tmp_path / name, overwrite=True)
            assert store.verify().ok and store.last_position() == 1

    def test_a_broken_store_exports_nothing(self, source: EventStore, tmp_path: Path) -> None:
        drop_guards(source)
        sql(source, "UPDATE flow_events SET type = 'X' WHERE flow_id = 'plain' AND revision = 2")
        (tmp_path / "out").mkdir()
        with pytest.raises(IntegrityViolation, match="plain@2"):
            export_events(source, tmp_path / "out" / "x.jsonl")
        assert list((tmp_path / "out").iterdir()) == []


class TestVerifyExport:
    @pytest.fixture
    def exported(self, source: EventStore, tmp_path: Path) -> Path:
        path = tmp_path / "all.jsonl"
        export_events(source, path)
        return path

    def kinds(self, path: Path) -> set[str]:
        return {problem.kind for problem in verify_export(path).problems}

    def test_an_edited_payload(self, exported: Path) -> None:
        exported.write_bytes(exported.read_bytes().replace(b'{\\"i\\":1}', b'{\\"i\\":7}'))
        assert self.kinds(exported) == {"data-edited", "sha256-mismatch"}

    def test_a_line_no_store_could_have_written(self, exported: Path) -> None:
        exported.write_bytes(exported.read_bytes().replace(b'{\\"i\\":1}', b'{\\"i\\": 1}'))
        report = verify_export(exported)
        assert {"malformed-line", "sha256-mismatch"} <= {p.kind for p in report.problems}
        assert "not a JSON object in the canonical encoding" in str(report.problems[0])

    def test_a_removed_line(self, exported: Path) -> None:
        kept = exported.read_bytes().splitlines(keepends=True)
        exported.write_bytes(b"".join(kept[:-2] + kept[-1:]))
        assert {"revision-gap", "broken-link", "count-mismatch", "head-mismatch"} <= self.kinds(exported)

    def test_a_manifest_that_lies(self, exported: Path) -> None:
        manifest = exported.with_name(exported.name + ".manifest.json")
        document = orjson.loads(manifest.read_bytes())
        document["flows"][0]["last_hash"] = "0" * 64
        manifest.write_bytes(orjson.dumps(document))
        assert self.kinds(exported) == {"head-mismatch"}

    @pytest.mark.parametrize(
        ("member", "value"),
        [("selection", [["kind", "flow"], ["flow_id", "a"]]), ("source", [["dialect", "sqlite"]])],
    )
    def test_a_member_that_is_a_list_of_pairs_not_an_object(
        self, exported: Path, store: EventStore, member: str, value: Any
    ) -> None:
        manifest = exported.with_name(exported.name + ".manifest.json")
        document = orjson.loads(manifest.read_bytes())
        document[member] = value
        manifest.write_bytes(orjson.dumps(document))
        with pytest.raises(ExportInvalid, match=f"{member} is list .* not a JSON object"):
            Manifest.read(exported)
        assert self.kinds(exported) == {"manifest"}
        with pytest.raises(ExportInvalid, match=f"{member} is list"):
            import_events(store, exported)

    def test_a_missing_events_file(self, exported: Path) -> None:
        exported.unlink()
        assert self.kinds(exported) == {"missing-file"}

    def test_the_checkpoint_root_is_recomputed(self, source: EventStore, tmp_path: Path) -> None:
        take_checkpoint(source, generate_key())
        path = tmp_path / "all.jsonl"
        manifest = export_events(source, path)
        assert manifest.checkpoint is not None and verify_export(path).checkpoint_checked
        assert not verify_export(
            export_events(source, tmp_path / "a.jsonl", flow="a").events_file
        ).checkpoint_checked
        document = orjson.loads(manifest.path.read_bytes())
        document["checkpoint"]["root_hash"] = "ab" * 32
        manifest.path.write_bytes(orjson.dumps(document))
        assert self.kinds(path) == {"checkpoint"}


class TestImport:
    def test_across_backends_keeping_ids_times_and_hashes(
        self, source: EventStore, other: Target, tmp_path: Path
    ) -> None:
        path = tmp_path / "all.jsonl.gz"
        export_events(source, path)
        with other.open(create=True, projections=[FlowProjection()]) as dest:
            dest.append("here-first", [NewEvent("T", {})])
            report = import_events(dest, path)
            assert (report.events_imported, report.first_position) == (source.last_position(), 2)
            assert stripped(dest) == sorted(
                [*stripped(source), *[tuple(e)[1:] for e in dest.read_flow("here-first")]]
            )
            assert dest.verify().ok
            assert FlowQueries(dest).flow("a").status == "finished"
            assert_matches_rebuild(dest)
            again = import_events(dest, path)
            assert (again.events_imported, again.events_skipped, len(again.flows_present)) == (
                0,
                report.events_imported,
                4,
            )

    def test_an_exact_continuation_is_imported(
        self, source: EventStore, other: Target, tmp_path: Path
    ) -> None:
        export_events(source, tmp_path / "first.jsonl", flow="plain")
        source.append("plain", [NewEvent("T", {"i": 3})])
        (newest,) = source.read_flow("plain", from_revision=4)
        later = export_events(source, tmp_path / "later.jsonl", since=newest.recorded_at)
        assert [(s.flow_id, s.first_revision) for s in later.flows] == [("plain", 4)]
        with other.open(create=True) as dest:
            import_events(dest, tmp_path / "first.jsonl")
            report = import_events(dest, tmp_path / "later.jsonl")
            assert (report.events_imported, report.flows_imported) == (1, ("plain",))
            assert [e.hash for e in dest.read_flow("plain")] == [e.hash for e in source.read_flow("plain")]

    def test_conflicts_write_nothing(self, source: EventStore, other: Target, tmp_path: Path) -> None:
        path = tmp_path / "all.jsonl"
        export_events(source, path)
        with other.open(create=True) as dest:
            dest.append("plain", [NewEvent("T", {"i": "different"})])
            with pytest.raises(ImportConflict, match=r"'plain'.*histories differ") as caught:
                import_events(dest, path)
            assert caught.value.flow_id == "plain" and dest.last_position() == 1
            (event,) = source.read_flow("b", to_revision=1)
            dest.append("elsewhere", [NewEvent("T", {}, event_id=event.event_id)])
            export_events(source, tmp_path / "b.jsonl", flow="b")
            with pytest.raises(ImportConflict, match=r"already stored.*'elsewhere'"):
                import_events(dest, tmp_path / "b.jsonl")
            assert dest.last_position() == 2

    def test_a_broken_file_writes_nothing(self, source: EventStore, other: Target, tmp_path: Path) -> None:
        path = tmp_path / "all.jsonl"
        export_events(source, path)
        path.write_bytes(path.read_bytes().replace("naïve".encode(), b"naive"))
        with other.open(create=True) as dest, pytest.raises(ExportInvalid, match="does not verify"):
            import_events(dest, path)
        with other.open(create=True) as dest:
            assert dest.last_position() == 0


def run(target: Target, *args: str, code: int = 0) -> str:
    schema = target.options.get("schema")
    prefix = ["--url", target.url, *(["--schema", schema] if schema else [])]
    result = CliRunner().invoke(main, [*prefix, *args])
    assert result.exit_code == code, result.output
    return result.output


class TestCommands:
    def test_export_verify_import(
        self, source: EventStore, target: Target, other: Target, tmp_path: Path
    ) -> None:
        path = str(tmp_path / "s1.jsonl.gz")
        out = run(target, "export", "--session", "s1", path)
        assert "exported 5 events of 2 flows" in out and "exporting: 5/5" in out
        assert (
            orjson.loads(run(target, "export", "--flow", "c", str(tmp_path / "c.jsonl"), "--json"))[
                "event_count"
            ]
            == 2
        )
        assert "OK: 5 events in 2 flows" in run(target, "verify-export", path)
        run(other, "db", "upgrade")
        assert "imported 5 events of 2 flows" in run(other, "import", path)
        assert orjson.loads(run(other, "import", path, "--json"))["events_skipped"] == 5
        Path(path).write_bytes(b"garbage")
        assert not orjson.loads(run(target, "verify-export", path, "--json", code=2))["ok"]
        assert "error: " in run(other, "import", path, code=1)


class InlineDecisions(DecisionsByActor):
    name: ClassVar[str] = "inline_decisions"
    kind: ClassVar[str] = "inline"


def test_an_imported_langgraph_thread_reaches_the_savers_read_model(target: Target, tmp_path: Path) -> None:
    """`eventstore import` folds into every built-in read model the store has, LangGraph's too; a
    projection of the application's it cannot load is named as not updated."""
    from eventstore.integrations.langgraph import EventStoreSaver, flow_id_for

    from .test_langgraph_saver import put

    there = Target(f"sqlite:///{tmp_path / 'there.db'}")
    with EventStoreSaver.from_url(there.url) as saver:
        stored = put(saver, "t", {"n": 42}, {"n": 1})
    path = str(tmp_path / "t.jsonl")
    run(there, "export", "--flow", flow_id_for("t"), path)
    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        put(saver, "other", {"n": 1}, {"n": 1})  # the saver's read model exists here
        with target.open(projections=[InlineDecisions()]):
            pass
        out = run(target, "import", path)
        assert "imported 1 event of 1 flow" in out
        assert "note: projection 'inline_decisions' was not updated" in out
        found = saver.get_tuple(stored)
        assert found is not None and found.checkpoint["channel_values"] == {"n": 42}
        assert "t" in run(target, "threads")
