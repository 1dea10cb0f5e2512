"""Exports that must not verify, and exports that must import: the edges of docs/exchange.md."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from eventstore import EventStore, ExportInvalid, ImportConflict, IntegrityViolation, InvalidInput, NewEvent
from eventstore.audit import session_flows
from eventstore.cli import main
from eventstore.exchange import export_events, import_events
from eventstore.exportfile import Progress, verify_export
from eventstore.integrity import chain_hash
from eventstore.manifest import FlowSegment, Manifest
from projections import FlowProjection, FlowQueries

from .conftest import Target
from .test_exchange import Clock, lines, other  # noqa: F401  # `other`: a fixture, the other backend
from .test_tamper import drop_guards, sql

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def craft(path: Path, rows: list[dict[str, Any]], selection: dict[str, Any]) -> None:
    """An export of these lines with a manifest that matches them, as a forger would write it."""
    data = b"".join(orjson.dumps(row) + b"\n" for row in rows)
    path.write_bytes(data)
    flows: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        flows.setdefault(row["flow_id"], []).append(row)
    positions = [row["position"] for row in rows]
    manifest = Manifest(
        path,
        hashlib.sha256(data).hexdigest(),
        len(rows),
        tuple(
            FlowSegment(
                flow_id, f[0]["revision"], f[0]["prev_hash"], f[-1]["revision"], f[-1]["hash"], len(f)
            )
            for flow_id, f in sorted(flows.items())
        ),
        min(positions),
        max(positions),
        "2030-01-01T00:00:00.000000Z",
        selection,
        {"dialect": "sqlite", "last_position": max(positions)},
    )
    manifest.path.write_bytes(manifest.to_json())


def rehash(row: dict[str, Any]) -> None:
    """Give an edited line the hash its envelope has now."""
    row["hash"] = chain_hash(
        bytes.fromhex(row["prev_hash"]),
        row["flow_id"],
        row["revision"],
        row["event_id"],
        row["type"],
        row["schema_version"],
        row["recorded_at"],
        bytes.fromhex(row["data_hash"]),
        bytes.fromhex(row["metadata_hash"]),
    ).hex()


def cli(*args: str, code: int) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.output


class TestWholeFlows:
    def test_a_flow_that_lost_its_first_event_is_not_exported(
        self, store: EventStore, tmp_path: Path
    ) -> None:
        store.append("f1", [NewEvent("T", {"i": i}) for i in range(4)])
        store.append("f2", [NewEvent("T", {"i": i}) for i in range(3)])
        drop_guards(store)
        sql(store, "DELETE FROM flow_events WHERE flow_id = 'f1' AND revision = 1")
        (tmp_path / "out").mkdir()
        for selection in ({}, {"flow": "f1"}, {"flows": ["f1", "f2"]}):
            with pytest.raises(IntegrityViolation, match=r"f1@2.*revision 1 missing") as caught:
                export_events(store, tmp_path / "out" / "x.jsonl", **selection)
            assert [(p.flow_id, p.revision) for p in caught.value.problems] == [("f1", 2)]
        assert list((tmp_path / "out").iterdir()) == []

    def test_verify_export_requires_whole_flows_except_in_a_range(
        self, store: EventStore, tmp_path: Path
    ) -> None:
        store.append("f1", [NewEvent("T", {"i": i}) for i in range(4)])
        export_events(store, tmp_path / "f1.jsonl", flow="f1")
        late = lines(tmp_path / "f1.jsonl")[1:]
        craft(tmp_path / "late.jsonl", late, {"kind": "flow", "flow_id": "f1"})
        (problem,) = verify_export(tmp_path / "late.jsonl").problems
        assert (problem.kind, problem.revision) == ("revision-gap", 2)
        assert "revision 1 missing" in cli("verify-export", str(tmp_path / "late.jsonl"), code=2)
        craft(tmp_path / "range.jsonl", late, {"kind": "range", "since": None, "until": None})
        assert verify_export(tmp_path / "range.jsonl").ok


def test_a_session_export_takes_each_flow_by_its_first_start(target: Target, tmp_path: Path) -> None:
    def started(session: str) -> NewEvent:
        return NewEvent("FlowStarted", {"controller_id": "c", "goal": "g", "owner_session_key": session})

    with target.open(projections=[FlowProjection()]) as store:
        store.append("f1", [started("chat-42"), started("chat-42")])
        store.append("f2", [started("chat-1"), started("chat-42")])
        assert session_flows(store, "chat-42") == ["f1"]
        assert [f.flow_id for f in FlowQueries(store).flows(owner="chat-42").items] == ["f1"]
        manifest = export_events(store, tmp_path / "s.jsonl", session="chat-42")
        assert [(s.flow_id, s.events) for s in manifest.flows] == [("f1", 2)]
        assert verify_export(tmp_path / "s.jsonl").ok


class TestEventIds:
    @pytest.fixture
    def doubled(self, tmp_path: Path) -> Path:
        """Flow a with 1,200 events and flow b with one, whose event id is a@1200's."""
        with EventStore.open(f"sqlite:///{tmp_path / 'source.db'}") as source:
            source.append("a", [NewEvent("T", {"i": i}) for i in range(1200)])
            source.append("b", [NewEvent("T", {})])
            export_events(source, tmp_path / "all.jsonl")
        rows = lines(tmp_path / "all.jsonl")
        rows[-1]["event_id"] = rows[-2]["event_id"]
        rehash(rows[-1])
        craft(tmp_path / "doubled.jsonl", rows, {"kind": "all"})
        return tmp_path / "doubled.jsonl"

    def test_an_id_used_twice_does_not_verify(self, doubled: Path) -> None:
        (problem,) = verify_export(doubled).problems
        assert (problem.kind, problem.flow_id, problem.revision) == ("duplicate-event-id", "b", 1)
        assert "duplicate-event-id" in cli("verify-export", str(doubled), code=2)

    def test_an_id_used_twice_imports_nothing(self, doubled: Path, other: Target) -> None:  # noqa: F811
        with other.open(create=True) as dest:
            with pytest.raises(ExportInvalid, match="duplicate-event-id"):
                import_events(dest, doubled)
            assert dest.last_position() == 0

    def test_an_id_stored_by_another_writer_mid_import_is_a_conflict(
        self, store: EventStore, tmp_path: Path
    ) -> None:
        with EventStore.open(f"sqlite:///{tmp_path / 'source.db'}") as source:
            source.append("a", [NewEvent("T", {"i": i}) for i in range(1500)])
            export_events(source, tmp_path / "a.jsonl")
            taken = list(source.read_flow("a"))[-1].event_id

        def intrude(progress: Any) -> None:
            if progress.phase == "importing" and progress.done == 1000:
                store.append("intruder", [NewEvent("T", {}, event_id=taken)])

        with pytest.raises(ImportConflict, match=f"{taken} is already stored.*stopped after 1000 events"):
            import_events(store, tmp_path / "a.jsonl", progress=intrude)
        assert store.revision("a") == 1000
        store.append("elsewhere", [NewEvent("T", {})])  # the store is usable, and consistent
        assert [p.kind for p in store.verify().problems] == ["import-unfinished"]  # but lacks 500


class TestLimits:
    @pytest.fixture
    def exported(self, store: EventStore, tmp_path: Path) -> list[dict[str, Any]]:
        store.append("a", [NewEvent("T", {"i": 1})])
        export_events(store, tmp_path / "a.jsonl")
        return lines(tmp_path / "a.jsonl")

    @pytest.mark.parametrize(
        ("field", "value", "reason"),
        [
            ("recorded_at", "0001-01-01T00:30:00.000000+01:00", "recorded_at is not a time"),
            ("schema_version", 2**31, "schema_version is above 2**31 - 1"),
            ("revision", 2**31, "revision is above 2**31 - 1"),
            ("position", 2**63, "position is above 2**63 - 1"),
        ],
    )
    def test_a_value_no_store_holds_is_a_malformed_line(
        self,
        exported: list[dict[str, Any]],
        store: EventStore,
        tmp_path: Path,
        field: str,
        value: Any,
        reason: str,
    ) -> None:
        (row,) = exported
        row[field] = value
        rehash(row)
        path = tmp_path / "odd.jsonl"
        path.write_bytes(orjson.dumps(row) + b"\n")
        Path(f"{path}.manifest.json").write_bytes(Path(f"{tmp_path / 'a.jsonl'}.manifest.json").read_bytes())
        document = orjson.loads(Path(f"{path}.manifest.json").read_bytes())
        document["events_file"] = path.name
        Path(f"{path}.manifest.json").write_bytes(orjson.dumps(document))
        problems = verify_export(path).problems
        assert problems[0].kind == "malformed-line" and reason in problems[0].detail
        assert reason in cli("verify-export", str(path), code=2)
        with pytest.raises(ExportInvalid, match="malformed-line"):
            import_events(store, path)


class SteppedClock:
    """01:00, then 00:30 (the clock stepped back), then 03:00 and on."""

    def __init__(self) -> None:
        self.minutes = [60, 30, 180]

    def __call__(self) -> datetime:
        minutes = self.minutes.pop(0) if self.minutes else 200
        return T0 + timedelta(minutes=minutes)


def test_back_to_back_ranges_import_in_order_when_the_clock_stepped_back(
    target: Target,
    other: Target,  # noqa: F811
    tmp_path: Path,
) -> None:
    cut = T0 + timedelta(minutes=45)
    with target.open(clock=SteppedClock()) as source:
        for i in range(3):
            source.append("a", [NewEvent("T", {"i": i})])
        first = export_events(source, tmp_path / "1.jsonl", until=cut)
        second = export_events(source, tmp_path / "2.jsonl", since=cut)
        everything = [tuple(e)[1:] for e in source.read_all()]
    assert (first.first_position, first.last_position) == (1, 2)  # a@1 stamped 01:00, before a@2
    assert (second.first_position, second.last_position) == (1, 3)  # a@1 is recorded after the cut
    with other.open(create=True) as dest:
        assert import_events(dest, tmp_path / "1.jsonl").events_imported == 2
        report = import_events(dest, tmp_path / "2.jsonl")
        assert (report.events_imported, report.events_skipped) == (1, 2)
        assert [tuple(e)[1:] for e in dest.read_all()] == everything
        assert dest.verify().ok


def test_a_range_export_checks_the_event_it_chains_from(target: Target, tmp_path: Path) -> None:
    with target.open(clock=SteppedClock()) as store:
        for i in range(3):
            store.append("a", [NewEvent("T", {"i": i})])
        drop_guards(store)
        sql(store, "DELETE FROM flow_events WHERE revision = 2")
        with pytest.raises(IntegrityViolation, match="a@2 is missing") as caught:
            export_events(store, tmp_path / "r.jsonl", since=T0 + timedelta(minutes=100))
        assert (caught.value.flow_id, caught.value.revision, caught.value.problems) == ("a", 2, [])
        assert not (tmp_path / "r.jsonl").exists()


def forge(path: Path, data: bytes, like: Path) -> None:
    """These bytes as an events file, under a copy of ``like``'s manifest that matches them."""
    path.write_bytes(data)
    document = orjson.loads(Path(f"{like}.manifest.json").read_bytes())
    document.update(events_file=path.name, sha256=hashlib.sha256(data).hexdigest())
    Path(f"{path}.manifest.json").write_bytes(orjson.dumps(document))


class TestOneSpelling:
    """A line's values decide its bytes, and a manifest lists each flow once: no other spelling verifies."""

    @pytest.fixture
    def exported(self, tmp_path: Path) -> Path:
        with EventStore.open(f"sqlite:///{tmp_path / 'source.db'}") as source:
            source.append("a", [NewEvent("T", {"i": 1})])
            export_events(source, tmp_path / "a.jsonl")
        return tmp_path / "a.jsonl"

    @pytest.mark.parametrize(
        ("edit", "reason"),
        [
            (
                lambda line: line.replace(b'"data":', b'"data":"{\\"i\\":9}","data":'),
                "'data' appears more than once",
            ),
            (lambda line: line[:-1] + b"\r\n", r"the line ends in \r\n, not \n"),
            (lambda line: line[:-1], r"the line does not end in \n"),
            (lambda line: b" " + line, "not in the format's compact encoding"),
            (
                lambda line: orjson.dumps(dict(reversed(orjson.loads(line).items()))) + b"\n",
                "members are not in",
            ),
        ],
    )
    def test_another_spelling_of_a_sound_line_is_malformed(
        self, exported: Path, edit: Callable[[bytes], bytes], reason: str
    ) -> None:
        forged = exported.with_name("forged.jsonl")
        forge(forged, edit(exported.read_bytes()), like=exported)
        problem = verify_export(forged).problems[0]
        assert problem.kind == "malformed-line" and reason in problem.detail

    def test_a_manifest_that_lists_a_flow_twice(self, exported: Path) -> None:
        manifest = Path(f"{exported}.manifest.json")
        document = orjson.loads(manifest.read_bytes())
        document.update(flows=document["flows"] * 2, flow_count=2)
        manifest.write_bytes(orjson.dumps(document))
        (problem,) = verify_export(exported).problems
        assert problem.kind == "manifest" and "it lists flow 'a' more than once" in problem.detail


class TestAFileChangedDuringAnImport:
    """Replaced between the import's check and its write, a file writes nothing that does not chain on."""

    @pytest.fixture
    def exports(self, tmp_path: Path) -> Path:
        """Flow f in stores a and b, four events each, all different: a-first.jsonl holds a's first two;
        a.jsonl and b.jsonl all four; a-late.jsonl and b-late.jsonl the last two (time ranges)."""
        for name in ("a", "b"):
            with EventStore.open(f"sqlite:///{tmp_path / name}.db", clock=Clock()) as source:
                source.append("f", [NewEvent("T", {"in": name, "n": n}) for n in range(2)])
                if name == "a":
                    export_events(source, tmp_path / "a-first.jsonl")
                source.append("f", [NewEvent("T", {"in": name, "n": n}) for n in range(2, 4)])
                export_events(source, tmp_path / f"{name}.jsonl")
                (third,) = source.read_flow("f", from_revision=3, to_revision=3)
                export_events(source, tmp_path / f"{name}-late.jsonl", since=third.recorded_at)
        return tmp_path

    @pytest.mark.parametrize(
        ("imported", "replacement", "with_manifest", "reason"),
        [
            ("a", "b", True, "manifest differs from the one read before"),
            ("a", "b", False, "f@2 .* its hash is not this store's revision 2"),
            ("a-late", "b-late", False, "f@3 .* it does not chain onto revision 2 here"),
        ],
    )
    def test_nothing_is_written(
        self,
        exports: Path,
        store: EventStore,
        imported: str,
        replacement: str,
        with_manifest: bool,
        reason: str,
    ) -> None:
        import_events(store, exports / "a-first.jsonl")
        path = exports / f"{imported}.jsonl"

        def replace(progress: Progress) -> None:
            if progress.phase == "verifying" and progress.done == progress.total:  # pass one is done
                other = exports / f"{replacement}.jsonl"
                if with_manifest:
                    forge(path, other.read_bytes(), like=other)
                else:
                    path.write_bytes(other.read_bytes())

        with pytest.raises(ExportInvalid) as caught:
            import_events(store, path, batch_size=1, progress=replace)
        assert store.revision("f") == 2 and store.verify().ok
        assert re.search(
            f"{reason}.*changed after it was verified, so nothing was imported", str(caught.value)
        )


COUNTS = ("1e30", "1000000000000000000000000000000", "9223372036854775808", "2.0", "-1", '"2"', "3")
"""Manifest counts no export writes: a float, a whole number past 64 bits or BIGINT, a string, a wrong sum."""


class TestManifestCounts:
    """A count in a manifest is a whole number a store could hold, agreeing with the flows listed."""

    @pytest.fixture
    def exported(self, tmp_path: Path) -> Path:
        with EventStore.open(f"sqlite:///{tmp_path / 'source.db'}") as source:
            source.append("a", [NewEvent("T", {"i": 1}), NewEvent("T", {"i": 2})])
            export_events(source, tmp_path / "a.jsonl")
        return tmp_path / "a.jsonl"

    @staticmethod
    def edit(exported: Path, member: str, value: str) -> None:
        manifest = Path(f"{exported}.manifest.json")
        text = re.sub(rf'"{member}": [^,\n]+', f'"{member}": {value}', manifest.read_text(), count=1)
        manifest.write_text(text)

    @pytest.mark.parametrize("value", COUNTS)
    @pytest.mark.parametrize("member", ["event_count", "events"])
    def test_a_count_that_is_not_a_whole_number_a_store_holds_is_a_manifest_problem(
        self, exported: Path, member: str, value: str
    ) -> None:
        self.edit(exported, member, value)
        (problem,) = verify_export(exported).problems
        assert problem.kind == "manifest" and member in problem.detail, problem.detail
        assert "e+" not in problem.detail and "Error(" not in problem.detail

    @pytest.mark.parametrize("value", COUNTS)
    def test_the_cli_says_which_count_and_imports_nothing(
        self, exported: Path, target: Target, value: str
    ) -> None:
        self.edit(exported, "event_count", value)
        target.open().close()
        runner = CliRunner()
        checked = runner.invoke(main, ["verify-export", str(exported)])
        assert checked.exit_code == 2 and "BROKEN manifest: " in checked.output
        assert "event_count" in checked.output and "e+" not in checked.output, checked.output
        prefix = ["--url", target.url] + (["--schema", target.options["schema"]] if target.options else [])
        imported = runner.invoke(main, [*prefix, "import", str(exported)])
        assert imported.exit_code == 1 and "event_count" in imported.output and "e+" not in imported.output
        with target.open() as store:
            assert store.last_position() == 0


class TestBadArguments:
    """Arguments no export could be made, checked or imported with: InvalidInput at the call, no file."""

    @pytest.mark.parametrize("path", ["a\x00b.jsonl", b"a.jsonl", 5])
    def test_a_path_that_names_no_file_is_refused(self, store: EventStore, tmp_path: Path, path: Any) -> None:
        store.append("f", [NewEvent("T", {})])
        tmp_path = tmp_path / "out"  # the SQLite store's files are in tmp_path
        tmp_path.mkdir()
        full = f"{tmp_path}/{path}" if isinstance(path, str) else path
        for call in (
            lambda: export_events(store, full),
            lambda: verify_export(full),
            lambda: import_events(store, full),
        ):
            with pytest.raises(InvalidInput, match="an export's path"):
                call()
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize("overwrite", ["no", 0, None])
    def test_overwrite_is_true_or_false(self, store: EventStore, tmp_path: Path, overwrite: Any) -> None:
        store.append("f", [NewEvent("T", {})])
        export_events(store, tmp_path / "a.jsonl")
        before = (tmp_path / "a.jsonl").read_bytes()
        store.append("f", [NewEvent("T", {})])
        with pytest.raises(InvalidInput, match="overwrite must be True or False"):
            export_events(store, tmp_path / "a.jsonl", overwrite=overwrite)
        assert (tmp_path / "a.jsonl").read_bytes() == before

    def test_progress_is_callable(self, store: EventStore, tmp_path: Path) -> None:
        store.append("f", [NewEvent("T", {})])
        tmp_path = tmp_path / "out"  # the SQLite store's files are in tmp_path
        tmp_path.mkdir()
        with pytest.raises(InvalidInput, match="progress must be callable"):
            export_events(store, tmp_path / "a.jsonl", progress=5)  # type: ignore[arg-type]  # on purpose
        assert list(tmp_path.iterdir()) == []
        export_events(store, tmp_path / "a.jsonl")
        with pytest.raises(InvalidInput, match="progress must be callable"):
            verify_export(tmp_path / "a.jsonl", progress=5)  # type: ignore[arg-type]  # on purpose
        with pytest.raises(InvalidInput, match="progress must be callable"):
            import_events(store, tmp_path / "a.jsonl", progress=5)  # type: ignore[arg-type]  # on purpose
