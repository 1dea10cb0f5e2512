"""Retiring a projection the code no longer has: its tables, checkpoint, ownership and claims go in one
transaction, recorded in ``$system-projections``; what still folds it is refused, not rebuilt."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from eventstore import (
    EventStore,
    InvalidInput,
    NewEvent,
    ProjectionInUse,
    ProjectionNotFound,
    RebuildInProgress,
    RecordedEvent,
    RetiredProjection,
    StoreBusy,
    Transaction,
)
from eventstore.cli import main
from eventstore.schema import projection_checkpoints, projection_tables
from projections import CatchUpRunner, FlowProjection, Projection, Retirement, make_catch_up, rebuild, retire
from projections.checkpoints import REBUILD_LEASE, claim
from projections.retiring import SYSTEM_PROJECTIONS_FLOW
from projections.status import projection_statuses

from . import kill_workers, retire_workers
from .conftest import Target
from .kill_workers import kill_during
from .test_projections import DecisionsByActor, counts, decide
from .workers import SPAWN

T0 = datetime(2026, 12, 7, 12, tzinfo=UTC)


def bookkeeping(store: EventStore) -> tuple[list[str], list[str], list[str]]:
    """The rows of ``projection_checkpoints`` and ``projection_tables``, and the read-model tables."""
    with store.reading() as conn:
        names = sorted(conn.execute(sa.select(projection_checkpoints.c.name)).scalars())
        owned = sorted(conn.execute(sa.select(projection_tables.c.table_name)).scalars())
    tables = [t for t in sa.inspect(store.engine).get_table_names() if t.startswith(("decisions", "applied"))]
    return names, owned, sorted(tables)


def test_retiring_drops_the_tables_and_the_rows_and_records_who_did_it(target: Target) -> None:
    with target.open() as store:
        decide(store, "agent:a", 3)
        CatchUpRunner(store, DecisionsByActor())
        done = retire(store, "decisions_by_actor", by="ops:ann", reason="renamed to decisions")
        assert (done.kind, done.version, done.position, done.tables) == (
            "catchup",
            1,
            3,
            ("decisions_by_actor",),
        )
        assert bookkeeping(store) == (["decisions_by_actor#retired"], [], [])
        assert projection_statuses(store) == []
        (event,) = store.read_flow(SYSTEM_PROJECTIONS_FLOW)
        assert event.type == "ProjectionRetired" and event.metadata["actor"] == "ops:ann"
        assert (
            event.data["tables"] == ["decisions_by_actor"] and event.data["reason"] == "renamed to decisions"
        )


def test_a_dry_run_says_what_would_go_and_writes_nothing(target: Target) -> None:
    with target.open() as store:
        decide(store, "agent:a")
        CatchUpRunner(store, DecisionsByActor())
        before, head = bookkeeping(store), store.last_position()
        done = retire(store, "decisions_by_actor", by="ops:ann", dry_run=True)
        assert done.dry_run and done.tables == ("decisions_by_actor",)
        assert (bookkeeping(store), store.last_position()) == (before, head)


@pytest.mark.parametrize("name", ["flows", "langgraph", "flow_steps", "Sessions"])
def test_the_built_in_read_models_are_refused(target: Target, name: str) -> None:
    with target.open(projections=[FlowProjection()]) as store, target.open() as bare:
        decide(store, "agent:a")
        with pytest.raises(ProjectionInUse, match="built-in"):
            retire(bare, name, by="ops:ann")
        assert [status.name for status in projection_statuses(bare)] == ["flows"]
        assert bare.last_position() == 1


class Sessions(Projection):
    """A projection of the user's, named as a table of the built-in FlowProjection is."""

    name = "sessions"

    def define_tables(self, metadata: sa.MetaData) -> None:
        sa.Table("decisions_per_session", metadata, sa.Column("position", sa.Integer, primary_key=True))

    def on_DecisionRecorded(self, tx: Transaction, event: RecordedEvent) -> None:
        tx.connection.execute(self.table("decisions_per_session").insert().values(position=event.position))


def test_a_projection_named_like_a_built_in_table_is_the_users_to_retire(target: Target) -> None:
    with target.open(projections=[FlowProjection()]) as store, target.open() as bare:
        decide(store, "agent:a")
        CatchUpRunner(bare, Sessions()).run_until_caught_up()
        assert make_catch_up(bare, "sessions", by="ops:ann").kind == "catchup"  # catch-up already: as it is
        done = retire(bare, "sessions", by="ops:ann")
        assert done.tables == ("decisions_per_session",)
        assert bookkeeping(bare)[2] == [] and "sessions" in sa.inspect(bare.engine).get_table_names()
        assert [status.name for status in projection_statuses(bare)] == ["flows"]


def test_a_projection_this_store_folds_inline_is_refused(target: Target) -> None:
    with target.open(projections=[retire_workers.InlineCount()]) as store:
        store.append("counted", [NewEvent("Counted", {})])
        with pytest.raises(ProjectionInUse, match="opened with it"):
            retire(store, "inline_count", by="ops:ann")
        assert [status.name for status in projection_statuses(store)] == ["inline_count"]


def test_a_live_rebuild_claim_refuses_and_an_expired_one_goes_with_it(target: Target) -> None:
    now = [T0]
    with target.open(clock=lambda: now[0]) as store:
        decide(store, "agent:a")
        projection = DecisionsByActor()
        CatchUpRunner(store, projection)
        assert claim(store, projection, "build-1")  # a rebuild under way, as far as its lease tells
        with pytest.raises(RebuildInProgress, match="retiring projection 'decisions_by_actor'"):
            retire(store, "decisions_by_actor", by="ops:ann")
        assert "decisions_by_actor#rebuild" in bookkeeping(store)[0]
        now[0] = T0 + REBUILD_LEASE + timedelta(seconds=1)  # its lease ran out: it holds nothing
        assert retire(store, "decisions_by_actor", by="ops:ann").claim
        assert bookkeeping(store) == (["decisions_by_actor#retired"], [], [])


def test_a_first_build_killed_mid_way_goes_with_its_fresh_tables(target: Target) -> None:
    with target.open() as store:
        store.append("f", [NewEvent("Counted", {"n": n}) for n in range(50)])
    assert not kill_during(kill_workers.build_for_catch_up, (target.url, target.options), 0.0)
    with target.open() as store:
        (status,) = projection_statuses(store)
        assert status.rebuild is not None and status.rebuild.state == "died"
        done = retire(store, "applied_once", by="ops:ann")
        assert (done.version, done.claim, done.tables) == (None, True, ("applied_once__rebuild",))
        assert bookkeeping(store) == (["applied_once#retired"], [], [])


def test_what_another_process_still_folds_is_refused_not_built_again(target: Target) -> None:
    """A runner's next batch, an append through a store opened with it inline, and a new runner, in a
    real second process: each raises RetiredProjection, writes nothing, and creates no table."""
    with target.open() as store:
        store.append("f", [NewEvent("Counted", {"n": n}) for n in range(5)])
    parent, child = SPAWN.Pipe()
    process = SPAWN.Process(
        target=retire_workers.child, args=(target.url, target.options, child), daemon=True
    )
    process.start()
    try:
        assert parent.poll(kill_workers.CHILD_TIMEOUT) and parent.recv() == "ready"
        with target.open() as store:
            store.append("f", [NewEvent("Counted", {"n": 5})])  # the runner's next batch
            retire(store, "applied_once", by="ops:ann")
            retire(store, "inline_count", by="ops:ann")
            head = store.last_position()
            parent.send("go")
            assert parent.poll(kill_workers.CHILD_TIMEOUT)
            raised = parent.recv()
            assert isinstance(raised, dict), raised
            for call in ("run_once", "append", "new_runner"):
                kind, message = raised[call]
                assert kind == "RetiredProjection" and "by 'ops:ann'" in message, (call, raised)
            assert store.last_position() == head  # the refused append wrote no event
            tables = sa.inspect(store.engine).get_table_names()
            assert not [t for t in tables if t.startswith(("applied_once", "inline_count"))]
    finally:
        process.join(kill_workers.CHILD_TIMEOUT)
        if process.is_alive():
            process.kill()


class Pausing(DecisionsByActor):
    """Its handler waits, inside the runner's batch transaction, until let go."""

    inside = threading.Event()
    go = threading.Event()

    def on_DecisionRecorded(self, tx: object, event: object) -> None:
        Pausing.inside.set()
        assert Pausing.go.wait(kill_workers.CHILD_TIMEOUT)
        super().on_DecisionRecorded(tx, event)  # type: ignore[arg-type]


def test_a_batch_under_way_commits_before_its_tables_are_dropped(target: Target) -> None:
    with target.open() as store, target.open() as other:
        runner = CatchUpRunner(store, Pausing())
        decide(store, "agent:a", 2)
        Pausing.inside.clear(), Pausing.go.clear()
        failures: list[BaseException] = []

        def run() -> None:
            try:
                runner.run_once()
            except BaseException as exc:
                failures.append(exc)

        batch = threading.Thread(target=run)
        batch.start()
        assert Pausing.inside.wait(kill_workers.CHILD_TIMEOUT)  # the batch holds its checkpoint row
        retired: list[Retirement] = []
        retiring = threading.Thread(
            target=lambda: retired.append(retire(other, "decisions_by_actor", by="a"))
        )
        retiring.start()  # it waits for that row (SQLite: for the write lock) until the batch commits
        Pausing.go.set()
        batch.join(kill_workers.CHILD_TIMEOUT)
        retiring.join(kill_workers.CHILD_TIMEOUT)
        assert not failures, failures
        assert retired[0].position == 2  # the batch's checkpoint, committed before the retirement
        with pytest.raises(RetiredProjection):
            runner.run_once()


def test_a_rebuild_builds_a_retired_projection_again_on_purpose(target: Target) -> None:
    with target.open() as store:
        decide(store, "agent:a", 2)
        CatchUpRunner(store, DecisionsByActor())
        retire(store, "decisions_by_actor", by="ops:ann")
        with pytest.raises(RetiredProjection):
            rebuild(store, DecisionsByActor(), only_if_outdated=True)  # what ensure asks: not unasked
        rebuild(store, DecisionsByActor())
        runner = CatchUpRunner(store, DecisionsByActor())
        assert counts(store, runner.projection) == {"agent:a": 2} and runner.run_once() == 0
        assert bookkeeping(store)[0] == ["decisions_by_actor"]  # no longer marked retired
        retire(store, "decisions_by_actor", by="ops:ann")
        with pytest.raises(RetiredProjection, match="retired from this store"):
            retire(store, "decisions_by_actor", by="ops:ann")


def test_unknown_names_and_bad_arguments_write_nothing(target: Target) -> None:
    with target.open() as store:
        decide(store, "agent:a")
        CatchUpRunner(store, DecisionsByActor())
        with pytest.raises(ProjectionNotFound, match="its projections: 'decisions_by_actor'"):
            retire(store, "decisions", by="ops:ann")
        for name, by, flag in [
            ("", "a", False),
            ("x#rebuild", "a", False),
            ("x", " ", False),
            ("x", "a" * 201, False),
        ]:
            with pytest.raises(InvalidInput):
                retire(store, name, by=by, dry_run=flag)
        with pytest.raises(InvalidInput):
            retire(store, "decisions_by_actor", by="a", dry_run="yes")  # type: ignore[arg-type]
        assert bookkeeping(store)[0] == ["decisions_by_actor"] and store.last_position() == 1


def test_a_long_read_of_its_table_makes_it_wait_then_give_up_cleanly(pg_target: Target) -> None:
    """PostgreSQL's short waits for a table lock; on SQLite the one write lock covers it."""
    with pg_target.open() as store, pg_target.open() as reader:
        decide(store, "agent:a")
        CatchUpRunner(store, DecisionsByActor())
        with reader.engine.connect() as conn, conn.begin():
            conn.exec_driver_sql("SELECT count(*) FROM decisions_by_actor").scalar_one()  # held till the end
            with pytest.raises(StoreBusy, match="held its table 'decisions_by_actor'"):
                retire(store, "decisions_by_actor", by="ops:ann", patience=0)
            decide(store, "agent:b")  # appends were not held
        assert bookkeeping(store)[0] == ["decisions_by_actor"]
        assert retire(store, "decisions_by_actor", by="ops:ann").tables == ("decisions_by_actor",)


def test_the_cli_retires_after_a_dry_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    with EventStore.open(url) as store:
        decide(store, "agent:a")
        CatchUpRunner(store, DecisionsByActor())
    command = ["--url", url, "projections", "retire", "decisions_by_actor", "--by", "ops:ann"]
    dry = CliRunner().invoke(main, [*command, "--dry-run"])
    assert dry.exit_code == 0 and dry.output == (
        "would retire decisions_by_actor (version 1, catchup): would drop its tables decisions_by_actor\n"
    )
    assert "decisions_by_actor" in CliRunner().invoke(main, ["--url", url, "projections"]).output
    done = CliRunner().invoke(main, [*command, "--reason", "renamed", "--json"])
    assert done.exit_code == 0 and json.loads(done.output)["tables"] == ["decisions_by_actor"]
    again = CliRunner().invoke(main, command)
    assert again.exit_code == 1 and "was retired from this store" in again.output
    built_in = CliRunner().invoke(main, ["--url", url, "projections", "retire", "flows", "--by", "x"])
    assert built_in.exit_code == 1 and "built-in FlowProjection" in built_in.output
    listed = CliRunner().invoke(main, ["--url", url, "projections"])
    assert listed.output == "no projections: none has been built in this store\n"


def test_the_cli_shows_an_expired_first_build_as_such_and_how_to_drop_it(tmp_path: Path) -> None:
    """A first build claimed long ago, whose lease ran out: listed as expired (as docs/projections.md
    says), with the retirement that drops it if its projection is gone from the code."""
    url = f"sqlite:///{tmp_path / 'expired.db'}"
    with EventStore.open(url, clock=lambda: T0) as store:  # the CLI's clock is later: its lease ran out
        decide(store, "agent:a")
        assert claim(store, DecisionsByActor(), "build-1")
    listed = CliRunner().invoke(main, ["--url", url, "projections"]).output
    assert "first build expired: its lease ran out at 2026-12-07 12:02:00" in listed
    assert "or `eventstore projections retire --by WHO decisions_by_actor` drops it" in listed
    done = CliRunner().invoke(
        main, ["--url", url, "projections", "retire", "decisions_by_actor", "--by", "a"]
    )
    assert (
        done.output
        == "retired decisions_by_actor: dropped no tables; and a rebuild's claim that had died or expired\n"
    )
    assert CliRunner().invoke(main, ["--url", url, "projections"]).output.startswith("no projections")
