"""Time travel and following at the edges: the last day of year 9999, async stores, odd options."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from click.testing import CliRunner

from eventstore import EventStore, FlowExists, InvalidInput, NewEvent
from eventstore.aio import AsyncEventStore
from eventstore.cli import main
from eventstore.flow_fold import FlowView
from eventstore.follow import follow
from eventstore.timetravel import fork, state_at, what_if
from projections import FlowProjection, FlowService

from .conftest import Target


def drive(store: EventStore, steps: int = 4) -> None:
    service = FlowService(store)
    service.start_flow("f", controller_id="c", goal="g", owner_session_key="s", state={"n": 0})
    for i in range(steps):
        service.schedule_step("f", step_id=f"s{i}", name="tool", run_id=f"r{i}", position=i)
        service.start_step("f", f"s{i}")
    service.complete_step("f", "s0", result={"ok": True})


class TestForkOnTheLastDay:
    def test_a_flow_recorded_on_9999_12_31_forks_with_its_times_as_the_fold_reads_them(
        self, target: Target
    ) -> None:
        last_day = datetime(9999, 12, 31, 12, tzinfo=UTC)
        with target.open(projections=[FlowProjection()], clock=lambda: last_day) as store:
            drive(store)
            fork(store, "f", at_revision=7, new_flow_id="g")
            origin = state_at(store, "f", revision=7)
            forked = state_at(store, "g")
            assert [(s.step_id, s.status) for s in forked.steps.values()] == [
                (s.step_id, s.status) for s in origin.steps.values()
            ]
            assert forked.steps["s0"].started_at is None  # outside the times the fold reads
            assert forked.flow is not None and origin.flow is not None
            (event,) = store.read_flow("g")
            assert event.data["snapshot"]["steps"]["s0"]["started_at"] is None
            assert (forked.flow.state, forked.flow.parent_flow_id) == (origin.flow.state, "f")

    @pytest.mark.parametrize("revision", [None, 1.0, "1", True])
    def test_a_revision_that_is_not_an_int_is_refused_by_name(
        self, flow_store: EventStore, revision: Any
    ) -> None:
        drive(flow_store, steps=1)
        with pytest.raises(InvalidInput, match="at_revision must be a revision"):
            fork(flow_store, "f", at_revision=revision, new_flow_id="g")
        assert flow_store.revision("g") == 0

    def test_a_fork_onto_a_flow_that_exists_is_flow_exists_and_writes_nothing(
        self, flow_store: EventStore
    ) -> None:
        drive(flow_store, steps=1)
        FlowService(flow_store).start_flow("g", controller_id="c", goal="other", owner_session_key="s")
        before = flow_store.last_position()
        for new_flow_id in ("g", "f"):
            with pytest.raises(
                FlowExists, match=f"flow '{new_flow_id}': already exists; fork into a new flow id"
            ):
                fork(flow_store, "f", at_revision=2, new_flow_id=new_flow_id)
        assert flow_store.last_position() == before


def test_a_state_read_from_a_snapshot_on_an_async_store_needs_no_read_after_run(target: Target) -> None:
    """Its steps are read inside ``run``: reading one afterwards cannot await the driver."""
    with target.open(projections=[FlowProjection()]) as store:
        drive(store, steps=3)
        expected = state_at(store, "f", revision=6, snapshot_every=0).copy()
        state_at(store, "f", snapshot_every=2)

    async def main() -> FlowView:
        async with await AsyncEventStore.open(
            target.url, **target.options, projections=[FlowProjection()]
        ) as astore:
            return await astore.run(state_at, astore.store, "f", revision=6)

    view = asyncio.run(main())
    assert view.steps["s1"] == expected.steps["s1"] and view == expected


class TestFollowOptions:
    @pytest.mark.parametrize("value", ["no", 0, None])
    def test_stop_when_idle_must_be_a_bool(self, store: EventStore, value: Any) -> None:
        with pytest.raises(InvalidInput, match="stop_when_idle must be True or False"):
            follow(store, stop_when_idle=value)

    def test_a_bool_is_not_a_poll_interval(self, store: EventStore) -> None:
        store.append("f", [NewEvent("A", {})])
        with pytest.raises(InvalidInput, match="poll_interval must be a number of seconds"):
            follow(store, poll_interval=True)


def test_a_flow_followed_before_it_starts_is_waited_for(store: EventStore) -> None:
    followed = follow(store, flow_id="later", stop_when_idle=True)
    store.append("later", [NewEvent("A", {})])
    assert [e.revision for e in followed] == [1]


def test_state_of_a_flow_never_started_says_so_without_a_none(target: Target) -> None:
    with target.open() as store:
        store.append("raw", [NewEvent("Note", {})])
    schema = target.options.get("schema")
    prefix = ["--url", target.url, *(["--schema", schema] if schema else [])]
    result = CliRunner().invoke(main, [*prefix, "state", "raw"])
    assert result.exit_code == 0
    assert (
        result.output
        == "raw: no state yet at its latest revision (no FlowStarted or FlowForked to start it)\n"
    )


def test_tail_and_history_show_a_time_in_year_1_with_its_date_whole(target: Target) -> None:
    """strftime("%Y") writes year 1 as "1": the tail's date, cut to 10 characters, took the hour with it."""
    with target.open(
        projections=[FlowProjection()], clock=lambda: datetime(1, 1, 1, 11, tzinfo=UTC)
    ) as store:
        drive(store, steps=1)
    schema = target.options.get("schema")
    prefix = ["--url", target.url, *(["--schema", schema] if schema else [])]
    tail = CliRunner().invoke(main, [*prefix, "tail", "--from", "0", "--until-idle", "--limit", "1"])
    assert tail.exit_code == 0 and tail.output.startswith("#1       0001-01-01 11:00:00.000  f@1 ")
    history = CliRunner().invoke(main, [*prefix, "history", "f"])
    assert history.exit_code == 0 and history.output.splitlines()[0].endswith(", 0001-01-01 UTC")


class TestWhatIfNamesTheFlowsRevisions:
    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"without_revisions": [130]}, r"has revisions 1 to 10, not 130 \(in without_revisions\)"),
            ({"until": 11}, "has revisions 0 to 10, so until cannot be 11"),
            ({"until": True}, "until must be an int >= 0"),
        ],
    )
    def test_a_revision_past_the_end_is_refused_not_ignored(
        self, flow_store: EventStore, options: dict[str, Any], message: str
    ) -> None:
        drive(flow_store, steps=4)
        assert flow_store.revision("f") == 10
        with pytest.raises(InvalidInput, match=message):
            what_if(flow_store, "f", **options)

    @pytest.mark.parametrize("revisions", ["12", b"12", {12: True}])
    def test_revisions_in_a_string_or_a_mapping_are_refused_as_not_ints(
        self, flow_store: EventStore, revisions: Any
    ) -> None:
        """A string is iterable: "12" was read as the revisions '1' and '2', and refused for '1'."""
        drive(flow_store, steps=4)
        with pytest.raises(
            InvalidInput, match=r"without_revisions must be a list of revisions \(ints\), not "
        ):
            what_if(flow_store, "f", without_revisions=revisions)

    def test_the_last_revision_and_until_the_end_still_work(self, flow_store: EventStore) -> None:
        drive(flow_store, steps=4)
        view = what_if(flow_store, "f", without_revisions=[10], until=10)
        assert view.steps["s0"].status == "running" and view.flow is not None and view.flow.revision == 9
