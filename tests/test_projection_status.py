"""Where each projection stands: how far behind the log a catch-up one is, and a rebuild under way."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

from eventstore import EventStore
from eventstore.cli import main
from projections import CatchUpRunner, FlowProjection
from projections.checkpoints import REBUILD_LEASE, claim
from projections.status import projection_statuses

from .conftest import Target
from .test_projections import DecisionsByActor, decide

T0 = datetime(2026, 12, 7, 12, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def test_a_catch_up_projection_is_behind_by_the_events_it_has_yet_to_apply(target: Target) -> None:
    clock = Clock()
    with target.open(projections=[FlowProjection()], clock=clock) as store:
        decide(store, "agent:a", 3)
        runner = CatchUpRunner(store, DecisionsByActor())  # built from the log: it has applied all 3
        built = store.last_position()
        clock.now = T0 + timedelta(minutes=5)
        decide(store, "agent:b", 4)
        by_name = {status.name: status for status in projection_statuses(store)}
        assert set(by_name) == {"decisions_by_actor", "flows"}
        behind = by_name["decisions_by_actor"]
        assert (behind.kind, behind.version, behind.position, behind.behind) == ("catchup", 1, built, 4)
        assert behind.updated_at == T0 and behind.rebuilding_until is None
        flows = by_name["flows"]
        assert (flows.kind, flows.position, flows.behind) == ("inline", None, 0)
        runner.run_once()
        caught_up = {status.name: status for status in projection_statuses(store)}["decisions_by_actor"]
        assert (caught_up.position, caught_up.behind) == (store.last_position(), 0)
        assert caught_up.updated_at == T0 + timedelta(minutes=5)


def test_a_rebuild_under_way_shows_its_lease_until_it_runs_out(target: Target) -> None:
    clock = Clock()
    with target.open(clock=clock) as store:
        decide(store, "agent:a")
        projection = DecisionsByActor()
        CatchUpRunner(store, projection)
        assert claim(store, projection, "build-1")  # what a rebuild takes before it builds
        (status,) = projection_statuses(store)
        assert status.rebuilding_until == T0 + REBUILD_LEASE
        clock.now = T0 + REBUILD_LEASE + timedelta(seconds=1)  # its holder died: the lease ran out
        (status,) = projection_statuses(store)
        assert status.rebuilding_until is None


def test_the_cli_lists_them_as_a_table_and_as_json(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    with EventStore.open(url, projections=[FlowProjection()]) as store:
        decide(store, "agent:a", 2)
        CatchUpRunner(store, DecisionsByActor())
        decide(store, "agent:a", 1)
    result = CliRunner().invoke(main, ["--url", url, "projections"])
    assert result.exit_code == 0, result.output
    header, *lines = result.output.splitlines()
    assert header.split() == [
        "PROJECTION",
        "KIND",
        "VERSION",
        "APPLIED",
        "TO",
        "BEHIND",
        "UPDATED",
        "REBUILD",
    ]
    assert lines[0].split()[:6] == ["decisions_by_actor", "catch-up", "1", "2", "1", "event"]
    assert lines[1].split()[:6] == ["flows", "inline", str(FlowProjection.version), "every", "append", "-"]
    as_json = json.loads(CliRunner().invoke(main, ["--url", url, "projections", "--json"]).output)
    assert [(p["name"], p["position"], p["behind"]) for p in as_json] == [
        ("decisions_by_actor", 2, 1),
        ("flows", None, 0),
    ]


def test_a_store_with_no_projection_says_so(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    EventStore.open(url).close()
    result = CliRunner().invoke(main, ["--url", url, "projections"])
    assert result.exit_code == 0 and result.output == "no projections: none has been built in this store\n"
