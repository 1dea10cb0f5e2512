"""Time travel on a flow retention pruned: ``FlowArchived`` naming the archive, never a bare KeyError."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from click.testing import CliRunner
from freezegun import freeze_time

from eventstore import EventStore, FlowNotFound
from eventstore.audit import audit_trail
from eventstore.cli import main
from eventstore.errors import FlowArchived
from eventstore.exchange import export_events
from eventstore.flow_fold import FlowView
from eventstore.follow import follow
from eventstore.retention import RetentionPolicy, restore, run_retention
from eventstore.timetravel import diff, fork, replay, state_at, what_if
from projections import FlowProjection, FlowService

from .conftest import Target

T0 = datetime(2030, 1, 1, tzinfo=UTC)


class Pruned(NamedTuple):
    store: EventStore
    early: FlowView  # flow f at revision 4, read from its snapshot before the prune: steps not loaded
    expected: FlowView  # the same state, folded from the log before the prune
    archive_id: str


@pytest.fixture
def pruned(target: Target, tmp_path: Path) -> Iterator[Pruned]:
    """Flow f (6 revisions, snapshots at 2, 4 and 6), pruned by retention after a state was read."""
    with freeze_time(T0), target.open(projections=[FlowProjection()]) as store:
        flows = FlowService(store)
        flows.start_flow("f", controller_id="c", goal="g", owner_session_key="s")
        for i in range(4):
            flows.schedule_step("f", step_id=f"s{i}", name="t", run_id=f"r{i}", position=i)
        flows.finish("f")
        state_at(store, "f", snapshot_every=2)
        early = state_at(store, "f", revision=4)
        expected = state_at(store, "f", revision=4, snapshot_every=0).copy()
        with freeze_time(T0 + timedelta(days=31)):
            report = run_retention(store, RetentionPolicy(finished=timedelta(days=30)), tmp_path / "archives")
        assert report.pruned == ("f",) and report.archive_id is not None
        yield Pruned(store, early, expected, report.archive_id)


def archived(pruned: Pruned, call: Callable[[], Any]) -> None:
    with pytest.raises(
        FlowArchived, match=f"'f' .*pruned by retention into archive '{pruned.archive_id}'"
    ) as error:
        call()
    assert isinstance(error.value, FlowNotFound)
    assert (error.value.flow_id, error.value.archive_id, error.value.last_revision) == (
        "f",
        pruned.archive_id,
        6,
    )


class TestAStateReadBeforeThePrune:
    def test_its_unloaded_steps_raise_flow_archived(self, pruned: Pruned) -> None:
        steps = pruned.early.steps
        assert "s1" in steps and len(steps) == 3  # what the snapshot listed is still known
        archived(pruned, lambda: steps["s1"])
        archived(pruned, pruned.early.copy)
        archived(pruned, steps.load_all)

    def test_after_a_restore_its_steps_load_from_the_log(self, pruned: Pruned) -> None:
        restore(pruned.store, pruned.archive_id)
        assert pruned.early.copy() == pruned.expected


class TestTimeTravelOnAPrunedFlow:
    def test_every_call_raises_flow_archived(self, pruned: Pruned) -> None:
        store = pruned.store
        archived(pruned, lambda: state_at(store, "f", revision=2))
        archived(pruned, lambda: diff(store, "f", 1, 2))
        archived(pruned, lambda: fork(store, "f", at_revision=2, new_flow_id="g"))
        archived(pruned, lambda: replay(store, "f"))
        archived(pruned, lambda: replay(store, "f", from_revision=3))
        archived(pruned, lambda: what_if(store, "f"))

    def test_following_it_raises_flow_archived_instead_of_waiting_forever(self, pruned: Pruned) -> None:
        archived(pruned, lambda: follow(pruned.store, flow_id="f"))
        archived(pruned, lambda: follow(pruned.store, flow_id="f", after_position=0))

    def test_a_follower_of_the_flow_stops_with_flow_archived_when_it_is_pruned(
        self, target: Target, tmp_path: Path
    ) -> None:
        with freeze_time(T0), target.open(projections=[FlowProjection()]) as store:
            FlowService(store).start_flow("f", controller_id="c", goal="g", owner_session_key="s")
            FlowService(store).finish("f")
            followed = follow(store, flow_id="f", after_position=0, stop_when_idle=True)
            assert next(followed).revision == 1
            with freeze_time(T0 + timedelta(days=31)):
                run_retention(store, RetentionPolicy(finished=timedelta(days=30)), tmp_path / "archives")
            with pytest.raises(FlowArchived, match=r"'f' .*pruned by retention"):
                list(followed)

    def test_audit_and_export_of_the_flow_raise_flow_archived(self, pruned: Pruned, tmp_path: Path) -> None:
        archived(pruned, lambda: list(audit_trail(pruned.store, flow_id="f")))
        archived(pruned, lambda: export_events(pruned.store, tmp_path / "f.jsonl", flow="f"))

    @pytest.mark.parametrize(
        "command",
        [
            ["state", "f", "--at", "2"],
            ["history", "f"],
            ["verify", "f"],
            ["tail", "--flow", "f", "--until-idle"],
            ["show", "f"],
            ["audit", "--why", "f@2"],
        ],
    )
    def test_the_command_line_names_the_archive(
        self, pruned: Pruned, target: Target, command: list[str]
    ) -> None:
        schema = target.options.get("schema")
        prefix = ["--url", target.url, *(["--schema", schema] if schema else [])]
        result = CliRunner().invoke(main, [*prefix, *command])
        assert result.exit_code == 1
        assert f"eventstore archive restore {pruned.archive_id} f" in result.output
