"""An inline projection handed (back) to a runner: ``make_catch_up`` marks it catch-up from the log's
head, so a runner folds each event once, and a store still folding it inline is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from eventstore import (
    EventStore,
    InvalidInput,
    ProjectionError,
    ProjectionInUse,
    ProjectionNotFound,
    RetiredProjection,
)
from eventstore.cli import main
from projections import CatchUpRunner, FlowProjection, make_catch_up, rebuild, retire
from projections.status import projection_statuses

from .conftest import Target
from .test_projections import DecisionsByActor, counts, decide


def test_an_accidental_inline_open_is_undone_and_a_runner_folds_each_event_once(target: Target) -> None:
    with target.open(projections=[DecisionsByActor()]) as inline:
        decide(inline, "agent:a", 2)  # folded by the appends
    with target.open() as store:
        with pytest.raises(ProjectionError, match="is folded inline"):
            CatchUpRunner(store, DecisionsByActor()).run_once()
        checkpoint = make_catch_up(store, "decisions_by_actor", by="ops:ann")
        assert (checkpoint.kind, checkpoint.position) == ("catchup", 2)
        decide(store, "agent:a", 3)  # after the handover: the runner's to fold
        runner = CatchUpRunner(store, DecisionsByActor())
        assert runner.run_until_caught_up() == 4  # the handover's own event, then the three
        assert counts(store, runner.projection) == {"agent:a": 5}  # none folded twice, none missed
        (status,) = projection_statuses(store)
        assert (status.kind, status.behind) == ("catchup", 0)
        again = make_catch_up(store, "decisions_by_actor", by="ops:ann")
        assert again.position == 6  # catch-up already: as it is
        assert len(list(store.read_flow("$system-projections"))) == 1  # and nothing recorded for that


def test_a_store_still_folding_it_inline_is_refused_and_writes_nothing(target: Target) -> None:
    with target.open(projections=[DecisionsByActor()]) as inline, target.open() as store:
        decide(inline, "agent:a")
        make_catch_up(store, "decisions_by_actor", by="ops:ann")
        with pytest.raises(ProjectionError, match="handed to a runner"):
            decide(inline, "agent:a")
        assert store.last_position() == 2  # the decision and the handover's record


def test_the_handover_is_recorded_with_who_and_why_after_the_position_handed_over(target: Target) -> None:
    with target.open(projections=[DecisionsByActor()]) as inline:
        decide(inline, "agent:a", 2)
    with target.open() as store:
        make_catch_up(store, "decisions_by_actor", by="ops:ann", reason="opened inline by mistake")
        (handed,) = store.read_flow("$system-projections")
    assert (handed.type, handed.position, handed.metadata["actor"]) == ("ProjectionMadeCatchUp", 3, "ops:ann")
    assert handed.data == {
        "projection": "decisions_by_actor",
        "version": 1,
        "position": 2,
        "by": "ops:ann",
        "reason": "opened inline by mistake",
    }


@pytest.mark.parametrize("by", ["", "  ", "x" * 201, 7, None])
def test_a_handover_without_a_proper_by_is_refused_and_writes_nothing(target: Target, by: object) -> None:
    with target.open(projections=[DecisionsByActor()]) as inline:
        decide(inline, "agent:a")
    with target.open() as store:
        with pytest.raises(InvalidInput, match=r"projection to a runner needs a 'by'|'by' of handing"):
            make_catch_up(store, "decisions_by_actor", by=by)  # type: ignore[arg-type]  # what is refused
        (status,) = projection_statuses(store)
        assert (status.kind, store.last_position()) == ("inline", 1)


def test_built_ins_this_handle_unknown_and_retired_names_are_refused(target: Target) -> None:
    with target.open(projections=[FlowProjection(), DecisionsByActor()]) as store:
        decide(store, "agent:a")
        for name in ("flows", "decisions_by_actor"):
            with pytest.raises(ProjectionInUse):
                make_catch_up(store, name, by="ops:ann")
    with target.open() as store:
        with pytest.raises(ProjectionNotFound):
            make_catch_up(store, "nope", by="ops:ann")
        retire(store, "decisions_by_actor", by="ops:ann")
        with pytest.raises(RetiredProjection):
            make_catch_up(store, "decisions_by_actor", by="ops:ann")
        with store.reading() as conn:
            kinds = conn.exec_driver_sql("SELECT kind FROM projection_checkpoints ORDER BY name").scalars()
            assert list(kinds) == ["retired", "inline"]  # decisions_by_actor#retired, flows


def test_the_cli_hands_it_to_a_runner(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    with EventStore.open(url, projections=[DecisionsByActor()]) as store:
        decide(store, "agent:a")
    arguments = ["projections", "make-catch-up", "decisions_by_actor", "--by", "ops:ann"]
    result = CliRunner().invoke(main, ["--url", url, *arguments])
    assert result.exit_code == 0
    assert result.output == (
        "decisions_by_actor is catch-up from position 1: run it with a runner; "
        "rebuild it first unless every writer had it open while it was inline\n"
    )
    listed = json.loads(CliRunner().invoke(main, ["--url", url, "projections", "--json"]).output)
    assert [(p["name"], p["kind"], p["position"]) for p in listed] == [("decisions_by_actor", "catchup", 1)]
    with EventStore.open(url) as store, store.reading() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM decisions_by_actor")).scalar_one() == 1


def test_the_cli_says_one_catch_up_already_is_left_as_it_was(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    with EventStore.open(url) as store:
        decide(store, "agent:a")
        CatchUpRunner(store, DecisionsByActor())
        decide(store, "agent:a")
    arguments = ["projections", "make-catch-up", "decisions_by_actor", "--by", "ops:ann"]
    result = CliRunner().invoke(main, ["--url", url, *arguments])
    assert (result.exit_code, result.output) == (
        0,
        "decisions_by_actor is catch-up already, at position 1: nothing changed\n",
    )  # no "rebuild it unless every writer had it open while it was inline": it never was


def test_events_writers_without_it_appended_while_inline_come_back_with_a_rebuild(target: Target) -> None:
    """The handover trusts the appends to have folded the log up to its head; writers opened without
    the projection folded nothing meanwhile, so the documented remedy is a rebuild, which the
    runner then continues from."""
    with target.open() as store:
        decide(store, "agent:a", 2)
        CatchUpRunner(store, DecisionsByActor()).run_until_caught_up()
        with target.open(projections=[DecisionsByActor()]) as accidental:
            decide(accidental, "agent:a", 1)
            decide(store, "agent:a", 4)  # opened without it: folded by no one
        make_catch_up(store, "decisions_by_actor", by="ops:ann")
        runner = CatchUpRunner(store, DecisionsByActor())
        runner.run_until_caught_up()
        assert counts(store, runner.projection) == {"agent:a": 3}  # what the handover alone gives
        rebuild(store, DecisionsByActor())
        decide(store, "agent:a", 1)
        runner = CatchUpRunner(store, DecisionsByActor())
        runner.run_until_caught_up()
        assert counts(store, runner.projection) == {"agent:a": 8}
