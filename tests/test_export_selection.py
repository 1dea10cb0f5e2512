"""What an export selects: its arguments are checked, and its manifest's selection must be one it writes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from eventstore import InvalidInput, NewEvent
from eventstore.audit import session_flows
from eventstore.cli import main
from eventstore.exchange import export_events, import_events
from eventstore.exportfile import verify_export
from projections import FlowProjection, FlowQueries, FlowService

from .conftest import Target

T0 = datetime(2030, 1, 1, tzinfo=UTC)
BAD_FLOWS = {
    "a number among names": (["a", 1], "a flow id must be a non-empty string, not 1"),
    "not a list": (5, "flows must be a list of flow ids, not 5"),
    "a lone surrogate": (["\ud800"], "a flow id must be valid UTF-8 text"),
    "a number": ([1], "a flow id must be a non-empty string, not 1"),
    "bytes": (b"ab", "flows is a list of flow ids"),
    "None": ([None], "a flow id must be a non-empty string, not None"),
    "empty": ([""], "a flow id must be a non-empty string, not ''"),
}
BAD_BOUNDS = {
    "text": {"since": "2030-01-01"},
    "a date": {"until": date(2030, 1, 1)},
    "a number": {"since": 0},
    "naive": {"until": datetime(2030, 1, 1)},  # the point of the test
}


@pytest.fixture
def two_flows(target: Target) -> Target:
    with target.open(projections=[FlowProjection()]) as store:
        for flow_id in ("a", "b"):
            FlowService(store).start_flow(flow_id, controller_id="c", goal="g", owner_session_key="s")
    return target


class TestArguments:
    @pytest.mark.parametrize(("flows", "message"), BAD_FLOWS.values(), ids=BAD_FLOWS.keys())
    def test_every_listed_flow_is_checked_as_one_flow_is(
        self, two_flows: Target, tmp_path: Path, flows: Any, message: str
    ) -> None:
        with two_flows.open() as store, pytest.raises(InvalidInput, match=message):
            export_events(store, tmp_path / "x.jsonl", flows=flows)
        assert not (tmp_path / "x.jsonl").exists()

    @pytest.mark.parametrize("bounds", BAD_BOUNDS.values(), ids=BAD_BOUNDS.keys())
    def test_a_bound_that_is_not_an_aware_datetime_is_invalid_input(
        self, two_flows: Target, tmp_path: Path, bounds: dict[str, Any]
    ) -> None:
        with two_flows.open() as store, pytest.raises(InvalidInput, match="a timezone-aware datetime"):
            export_events(store, tmp_path / "x.jsonl", **bounds)

    def test_a_reversed_range_is_invalid_input(self, two_flows: Target, tmp_path: Path) -> None:
        with two_flows.open() as store, pytest.raises(InvalidInput, match="is after until"):
            export_events(store, tmp_path / "x.jsonl", since=T0 + timedelta(days=1), until=T0)
        assert not (tmp_path / "x.jsonl").exists()

    def test_the_cli_refuses_a_reversed_range_in_one_line(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'e.db'}"
        args = ["--url", url, "export", "--since", "2030-02-01", "--until", "2030-01-01", "x.jsonl"]
        CliRunner().invoke(main, ["--url", url, "db", "upgrade"])
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1 and result.output.count("\n") == 1 and "is after until" in result.output


class TestSessionOfNoName:
    """Session "" is a session like any other, and holds the flows whose start names no owner."""

    def test_export_and_the_read_model_agree(self, target: Target, tmp_path: Path) -> None:
        with target.open() as bare:  # a writer without the projection, leaving the owner null
            bare.append("legacy", [NewEvent("FlowStarted", {"controller_id": "c", "goal": "g"})])
        with target.open(projections=[FlowProjection()]) as store:
            FlowService(store).start_flow("f", controller_id="c", goal="g", owner_session_key="")
            assert sorted(f.flow_id for f in FlowQueries(store).flows(owner="").items) == ["f", "legacy"]
            assert sorted(session_flows(store, "")) == ["f", "legacy"]
            manifest = export_events(store, tmp_path / "s.jsonl", session="")
        assert sorted(s.flow_id for s in manifest.flows) == ["f", "legacy"]
        assert manifest.selection == {"kind": "session", "session": ""}
        assert verify_export(tmp_path / "s.jsonl").ok


def every_selection(store: Any, tmp_path: Path) -> dict[str, Path]:
    """An export of each kind of selection, as this library writes them."""
    kinds: dict[str, dict[str, Any]] = {
        "all": {},
        "flow": {"flow": "a"},
        "flows": {"flows": ["a", "b"]},
        "session": {"session": "s"},
        "range": {"since": T0, "until": T0 + timedelta(days=1)},
        "open range": {"since": T0},
        "empty range": {"since": T0, "until": T0},
        "no flows": {"flows": []},
    }
    paths = {}
    for kind, selection in kinds.items():
        paths[kind] = tmp_path / f"{kind.replace(' ', '-')}.jsonl"
        export_events(store, paths[kind], **selection)
    return paths


class TestManifestSelection:
    def test_every_selection_an_export_writes_verifies_and_imports(
        self, two_flows: Target, tmp_path: Path
    ) -> None:
        with two_flows.open() as store:
            paths = every_selection(store, tmp_path)
        for kind, path in paths.items():
            assert verify_export(path).ok, kind
        with Target(f"sqlite:///{tmp_path / 'other.db'}").open(create=True) as other:
            assert import_events(other, paths["all"]).events_imported == 2

    @pytest.mark.parametrize(
        ("selection", "detail"),
        [
            ({}, "selection kind None is not one of"),
            ({"kind": 5}, "selection kind 5 is not one of"),
            ({"kind": "bogus"}, "selection kind 'bogus' is not one of"),
            ({"kind": "flow"}, "a 'flow' selection has the members flow_id, kind"),
            ({"kind": "flow", "flow_id": "zzz"}, "the selection is flow 'zzz', but it lists flow 'a'"),
            ({"kind": "all", "extra": 1}, "a 'all' selection has the members kind"),
            ({"kind": "session", "session": 5}, "the selection's session is 5"),
            ({"kind": "range", "since": 5, "until": []}, "the selection's since is 5"),
            (
                {"kind": "range", "since": "2030-01-01", "until": None},
                "the selection's since is '2030-01-01'",
            ),
            (
                {
                    "kind": "range",
                    "since": "2030-01-02T00:00:00.000000Z",
                    "until": "2030-01-01T00:00:00.000000Z",
                },
                "the selection's range is reversed",
            ),
        ],
    )
    def test_a_selection_no_export_writes_is_a_manifest_problem(
        self, two_flows: Target, tmp_path: Path, selection: dict[str, Any], detail: str
    ) -> None:
        with two_flows.open() as store:
            export_events(store, tmp_path / "e.jsonl", flows=["a", "b"])
        manifest = tmp_path / "e.jsonl.manifest.json"
        manifest.write_bytes(orjson.dumps({**orjson.loads(manifest.read_bytes()), "selection": selection}))
        (problem,) = verify_export(tmp_path / "e.jsonl").problems
        assert problem.kind == "manifest" and detail in problem.detail
        result = CliRunner().invoke(main, ["verify-export", str(tmp_path / "e.jsonl")])
        assert result.exit_code == 2 and "Traceback" not in result.output
