"""Projection machinery: user projections, catch-up, and rebuilds that swap atomically."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import pytest
import sqlalchemy as sa
from freezegun import freeze_time

from eventstore import EventStore, NewEvent, RecordedEvent, Transaction
from eventstore.errors import ProjectionError, ProjectionFailed
from eventstore.exchange import export_events, import_events
from eventstore.retention import RetentionPolicy, run_retention
from projections import CatchUpRunner, FlowProjection, FlowQueries, FlowService, Progress, Projection, rebuild

from .conftest import Target
from .readmodels import assert_matches_rebuild, flow_projection, snapshot
from .version_workers import Tally, TallyV2, count, count_until_refused, totals
from .workers import BARRIER_TIMEOUT, SPAWN, Children

T0 = datetime(2030, 1, 1, tzinfo=UTC)


class DecisionsByActor(Projection):
    """A user projection: how many decisions each actor made."""

    name: ClassVar[str] = "decisions_by_actor"
    version: ClassVar[int] = 1

    def define_tables(self, metadata: sa.MetaData) -> None:
        sa.Table(
            "decisions_by_actor",
            metadata,
            sa.Column("actor", sa.String(200), primary_key=True),
            sa.Column("decisions", sa.Integer, nullable=False),
        )

    def on_DecisionRecorded(self, tx: Transaction, event: RecordedEvent) -> None:
        table = self.table("decisions_by_actor")
        actor = event.data["actor"]
        bumped = tx.connection.execute(
            table.update().where(table.c.actor == actor).values(decisions=table.c.decisions + 1)
        )
        if bumped.rowcount == 0:
            tx.connection.execute(table.insert().values(actor=actor, decisions=1))


class FailingOnce(DecisionsByActor):
    fail_at: ClassVar[int | None] = None

    def on_DecisionRecorded(self, tx: Transaction, event: RecordedEvent) -> None:
        if event.position == self.fail_at:
            raise RuntimeError("handler bug")
        super().on_DecisionRecorded(tx, event)


def decide(store: EventStore, actor: str, count: int = 1) -> None:
    store.append(
        "f", [NewEvent("DecisionRecorded", {"actor": actor, "decision": "go"}) for _ in range(count)]
    )


def counts(store: EventStore, projection: Projection) -> dict[str, int]:
    table = projection.table("decisions_by_actor")
    with store.engine.connect() as conn:
        return {row.actor: row.decisions for row in conn.execute(sa.select(table))}


class TestCatchUp:
    def test_catches_up_and_stores_its_position(self, store: EventStore) -> None:
        decide(store, "a", 3)
        store.append("g", [NewEvent("Other", {})])
        decide(store, "b", 2)
        runner = CatchUpRunner(store, DecisionsByActor(), batch_size=2)
        assert counts(store, runner.projection) == {"a": 3, "b": 2}
        assert runner.position() == 6
        decide(store, "b")
        assert runner.run_until_caught_up() == 1
        assert runner.run_once() == 0
        assert counts(store, runner.projection) == {"a": 3, "b": 3}

    def test_a_failed_batch_changes_nothing_and_resumes(self, store: EventStore) -> None:
        runner = CatchUpRunner(store, FailingOnce(), batch_size=10)
        decide(store, "a", 5)
        FailingOnce.fail_at = 4
        with pytest.raises(ProjectionFailed, match=r"at event 4 .*RuntimeError: handler bug"):
            runner.run_once()
        assert (counts(store, runner.projection), runner.position()) == ({}, 0)
        FailingOnce.fail_at = None
        assert runner.run_until_caught_up() == 5
        assert counts(store, runner.projection) == {"a": 5}

    def test_two_runners_racing_apply_each_event_once(self, target: Target) -> None:
        """Two runners (two processes' worth: a store each) catch up at once, in two threads."""
        with target.open() as first, target.open() as second:
            decide(first, "a", 50)
            runners = [
                CatchUpRunner(store, DecisionsByActor(), batch_size=7) for store in (first, second)
            ]  # each caught up with the first 50
            decide(first, "a", 50)
            start = threading.Barrier(2)
            applied: list[int] = []
            failures: list[Exception] = []

            def catch_up(runner: CatchUpRunner) -> None:
                try:
                    start.wait(timeout=10)
                    applied.append(runner.run_until_caught_up())
                except Exception as exc:
                    failures.append(exc)

            threads = [threading.Thread(target=catch_up, args=(runner,)) for runner in runners]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert failures == []
            assert sum(applied) == 50
            assert counts(first, DecisionsByActor()) == {"a": 100}

    def test_a_projection_needs_a_name(self) -> None:
        class Nameless(DecisionsByActor):
            name: ClassVar[str] = ""

        with pytest.raises(ProjectionError, match="must set a name"):
            Nameless()


class TestRebuild:
    def test_progress_counts_the_events_a_prune_left(self, target: Target, tmp_path: Path) -> None:
        """Once retention pruned a flow, the log holds fewer events than its last position: a
        rebuild used to end at 3/7 events, as if it had stopped part way."""
        with freeze_time(T0), target.open(projections=[FlowProjection()]) as store:
            flows = FlowService(store)
            flows.start_flow("old", controller_id="c", goal="g", owner_session_key="s")
            flows.finish("old")
            flows.start_flow("new", controller_id="c", goal="g", owner_session_key="s")
        with freeze_time(T0 + timedelta(days=31)), target.open(projections=[FlowProjection()]) as store:
            policy = RetentionPolicy(finished=timedelta(days=30))
            assert run_retention(store, policy, tmp_path / "archives").pruned == ("old",)
            decide(store, "a", 2)
            for projection in (FlowProjection(), DecisionsByActor()):
                seen: list[Progress] = []
                done = rebuild(store, projection, batch_size=1, progress=seen.append)
                assert (done.done, done.total) == (3, 3)
                assert all(p.done <= p.total == 3 for p in seen), [(p.done, p.total) for p in seen]

    def test_a_version_change_rebuilds_from_the_log(self, target: Target) -> None:
        class Doubled(DecisionsByActor):
            version: ClassVar[int] = 2

            def on_DecisionRecorded(self, tx: Transaction, event: RecordedEvent) -> None:
                super().on_DecisionRecorded(tx, event)
                super().on_DecisionRecorded(tx, event)

        with target.open() as store:
            decide(store, "a", 3)
            CatchUpRunner(store, DecisionsByActor())
            assert counts(store, DecisionsByActor()) == {"a": 3}
            runner = CatchUpRunner(store, Doubled())
            assert counts(store, runner.projection) == {"a": 6}
            assert runner.position() == 3

    def test_older_code_refuses_a_read_model_a_newer_version_built(self, target: Target) -> None:
        """A rolling deploy's old process (or a rollback) opening the store must not rebuild the
        read model back to its version on its own: the new processes would rebuild it again."""

        class Newer(DecisionsByActor):
            version: ClassVar[int] = 2

        class NewerFlows(FlowProjection):
            version: ClassVar[int] = FlowProjection.version + 1

        with target.open() as store:
            decide(store, "a", 3)
            CatchUpRunner(store, Newer())
            with pytest.raises(ProjectionError, match="built by version 2, newer than this code's 1"):
                CatchUpRunner(store, DecisionsByActor())
            assert CatchUpRunner(store, Newer()).position() == 3  # still version 2's, untouched
            rebuild(store, DecisionsByActor())  # going back is an explicit rebuild
            assert CatchUpRunner(store, DecisionsByActor()).run_once() == 0
        with target.open(projections=[NewerFlows()]) as store:
            FlowService(store).start_flow("f1", controller_id="c", goal="g", owner_session_key="s")
        with pytest.raises(ProjectionError, match="newer than this code's"):
            target.open(projections=[FlowProjection()])
        with target.open(projections=[NewerFlows()]) as store:
            assert FlowQueries(store).flow("f1").goal == "g"

    def test_a_process_opened_before_a_newer_versions_swap_stops_folding(self, target: Target) -> None:
        """An old process of a rolling deploy is refused at its next append after the new version's
        swap, and writes nothing: before, it folded into the new tables with its old handlers."""
        with target.open(projections=[Tally()]) as old:
            count(old, "a")
            with target.open(projections=[TallyV2()]) as new:  # rebuilds and swaps
                assert totals(new) == {"a": 10}
                with pytest.raises(
                    ProjectionError, match="rebuilt by version 2 while this process folds version 1"
                ):
                    count(old, "a")
                with pytest.raises(ProjectionError, match="restart it with the newer code"):
                    count(old, "b")
                assert (old.revision("a"), old.revision("b")) == (1, 0)
                count(new, "a")
                assert totals(new) == {"a": 20}

    def test_a_rebuild_of_the_same_version_lets_open_processes_fold_on(self, target: Target) -> None:
        with target.open(projections=[Tally()]) as first, target.open(projections=[Tally()]) as second:
            count(first, "a")
            rebuild(second, Tally())
            count(first, "a")
            count(second, "a")
            assert totals(first) == {"a": 3}

    def test_code_newer_than_a_rebuild_that_went_back_stops_folding(self, target: Target) -> None:
        with target.open(projections=[TallyV2()]) as new:
            count(new, "a")
            with target.open() as plain:
                rebuild(plain, Tally())  # going back on purpose
            with pytest.raises(ProjectionError, match="open the store again to rebuild it"):
                count(new, "a")
        with target.open(projections=[TallyV2()]) as reopened:
            count(reopened, "a")
            assert totals(reopened) == {"a": 20}

    def test_an_import_is_fenced_as_an_append_is(self, target: Target, tmp_path: Path) -> None:
        with EventStore.open(f"sqlite:///{tmp_path / 'source.db'}") as source:
            count(source, "x")
            export_events(source, tmp_path / "x.jsonl")
        with target.open(projections=[Tally()]) as old:
            count(old, "a")
            with target.open(projections=[TallyV2()]):
                pass
            with pytest.raises(ProjectionError, match="rebuilt by version 2"):
                import_events(old, tmp_path / "x.jsonl")
            assert old.revision("x") == 0

    def test_an_older_process_writing_through_the_swap_never_folds_into_the_new_tables(
        self, target: Target
    ) -> None:
        """A child process folds version 1 in a loop while this one opens version 2: every event
        in the new tables is folded the new way, and the child is refused, not lost."""
        counting = SPAWN.Event()
        with Children() as children:
            with target.open(projections=[Tally()]) as store:
                count(store, "seed")
            children.start(count_until_refused, target.url, target.options, "a", counting)
            assert counting.wait(BARRIER_TIMEOUT)
            with target.open(projections=[TallyV2()]) as new:
                ((accepted, refusal),) = children.results()
                assert "rebuilt by version 2" in refusal
                assert new.revision("a") == accepted
                assert totals(new) == {"seed": 10, "a": 10 * accepted}

    def test_readers_see_the_old_tables_until_the_swap(self, flow_store: EventStore) -> None:
        service = FlowService(flow_store)
        for i in range(30):
            service.start_flow(f"f{i}", controller_id="c", goal="g", owner_session_key="s")
        queries = FlowQueries(flow_store)
        seen: list[int] = []

        def during(progress: Progress) -> None:
            seen.append(queries.flows(limit=100).total)
            if len(seen) == 1:
                service.start_flow(
                    "late", controller_id="c", goal="appended mid-rebuild", owner_session_key="s"
                )

        done = rebuild(flow_store, flow_projection(flow_store), batch_size=10, progress=during)
        assert seen[:3] == [30, 31, 31], "readers keep a complete read model throughout"
        assert queries.flow("late").goal == "appended mid-rebuild"
        assert done.done == 31 and done.rate > 0

    def test_rebuild_leaves_no_stray_tables(self, flow_store: EventStore) -> None:
        FlowService(flow_store).start_flow("f", controller_id="c", goal="g", owner_session_key="s")
        rebuild(flow_store, flow_projection(flow_store))
        rebuild(flow_store, flow_projection(flow_store))
        names = set(sa.inspect(flow_store.engine).get_table_names())
        assert {"flows", "flow_steps", "sessions"} <= names
        assert not [n for n in names if n.endswith("__rebuild")]

    def test_opening_an_existing_log_builds_the_read_models(self, target: Target) -> None:
        with target.open() as store:
            store.append(
                "f", [NewEvent("FlowStarted", {"controller_id": "c", "goal": "g", "owner_session_key": "s"})]
            )
        with target.open(projections=[FlowProjection()]) as store:
            assert FlowQueries(store).flow("f").goal == "g"

    @pytest.mark.parametrize("kind", ["fold", "fill"], ids=["event-by-event", "flow-by-flow"])
    def test_a_rebuild_finishes_while_a_writer_stays_ahead_of_it(self, target: Target, kind: str) -> None:
        """The writer appends without a pause, and the rebuild lets it get ahead after every batch
        it folds: a rebuild that read until it found nothing new would never end. It folds up to
        the head it found at the start, catches up a few times, and its swap folds the rest."""
        projection: Projection = DecisionsByActor() if kind == "fold" else FlowProjection()
        with target.open(projections=[FlowProjection()] if kind == "fill" else []) as store:
            decide(store, "a", 200)
            ahead = threading.Condition()
            appended = [0]
            stop = threading.Event()
            failures: list[BaseException] = []

            def write() -> None:
                try:
                    with target.open(projections=store.projections) as writer:
                        service = FlowService(writer) if kind == "fill" else None
                        while not stop.is_set():
                            if service is None:
                                decide(writer, "w")
                            else:
                                service.start_flow(
                                    f"w-{appended[0]}", controller_id="c", goal="g", owner_session_key="s"
                                )
                            with ahead:
                                appended[0] += 1
                                ahead.notify_all()
                except BaseException as exc:
                    failures.append(exc)
                    with ahead:
                        ahead.notify_all()

            def stay_behind(progress: Progress) -> None:  # after every batch, the writer gains one
                with ahead:
                    goal = appended[0] + 60
                    assert ahead.wait_for(lambda: appended[0] >= goal or bool(failures), timeout=60)

            results: list[Progress] = []
            writing = threading.Thread(target=write)
            rebuilding = threading.Thread(
                target=lambda: results.append(rebuild(store, projection, batch_size=50, progress=stay_behind))
            )
            writing.start()
            rebuilding.start()
            rebuilding.join(timeout=60)
            finished = not rebuilding.is_alive()
            stop.set()
            writing.join()
            rebuilding.join()
            assert failures == [] and finished, "the rebuild chased the writer"
            assert results and results[0].done >= 200
            if kind == "fold":
                CatchUpRunner(store, projection).run_until_caught_up()  # what the swap left behind
                assert counts(store, projection) == {"a": 200, "w": appended[0]}
            else:
                assert len(snapshot(store)["flows"]) == appended[0]
                assert_matches_rebuild(store)


class SlowDecisionsByActor(DecisionsByActor):
    """Folds an event in a few milliseconds of the server's time: slower than a writer appends."""

    def on_DecisionRecorded(self, tx: Transaction, event: RecordedEvent) -> None:
        tx.connection.exec_driver_sql("SELECT count(*) FROM generate_series(1, 20000)")
        super().on_DecisionRecorded(tx, event)


def test_a_swap_behind_fast_writers_holds_them_a_while_at_a_time(pg_target: Target) -> None:
    """Writers outrun the fold, so the swap starts far behind the head. Folding that whole tail
    with appends held outlasted their lock_timeout (StoreBusy); the swap now holds them for a
    fraction of a second at a time, committing what it folded, until it catches up."""
    with pg_target.open(lock_timeout=2.0) as store:
        decide(store, "a", 400)
        stop = threading.Event()
        appended = [0, 0]
        failures: list[BaseException] = []

        def write(writer_number: int) -> None:
            try:
                with pg_target.open(lock_timeout=2.0) as writer:
                    while not stop.is_set():
                        event = NewEvent("DecisionRecorded", {"actor": f"w{writer_number}", "decision": "go"})
                        writer.append(f"w{writer_number}", [event])
                        appended[writer_number] += 1
            except BaseException as exc:
                failures.append(exc)

        writers = [threading.Thread(target=write, args=(number,)) for number in range(2)]
        for thread in writers:
            thread.start()
        try:
            projection = SlowDecisionsByActor()
            rebuild(store, projection, batch_size=100)
        finally:
            stop.set()
            for thread in writers:
                thread.join()
        assert failures == []
        CatchUpRunner(store, projection).run_until_caught_up()
        assert counts(store, projection) == {"a": 400, "w0": appended[0], "w1": appended[1]}


def test_progress_reports_rate() -> None:
    progress = Progress(done=500, total=1000, seconds=0.5)
    assert progress.rate == 1000.0
    assert Progress(0, 0, 0.0).rate == 0.0


class TestMalformedVocabulary:
    def test_stores_with_the_flow_projection_validate_vocabulary_events(self, flow_store: EventStore) -> None:
        from eventstore import InvalidEvent

        with pytest.raises(InvalidEvent, match="FlowStarted data fails validation"):
            flow_store.append("f", [NewEvent("FlowStarted", {"goal": "no controller"})])
        assert flow_store.last_position() == 0

    def test_a_malformed_event_already_in_the_log_does_not_stop_a_rebuild(self, target: Target) -> None:
        with target.open() as store:
            store.append("f", [NewEvent("FlowStarted", {"goal": "written without validation"})])
            store.append("f", [NewEvent("StepScheduled", {"name": "no step id"}), NewEvent("FlowFailed", {})])
        with target.open(projections=[FlowProjection()]) as store:
            flow = FlowQueries(store).flow("f")
            assert (flow.goal, flow.controller_id, flow.status, flow.revision) == (
                "written without validation",
                "",
                "failed",
                3,
            )


class TestOneRebuildAtATime:
    def test_a_second_rebuild_is_refused_while_one_runs(self, flow_store: EventStore) -> None:
        service = FlowService(flow_store)
        for i in range(5):
            service.start_flow(f"f{i}", controller_id="c", goal="g", owner_session_key="s")
        refused: list[str] = []

        def during(progress: Progress) -> None:
            if not refused:
                with pytest.raises(
                    ProjectionError, match="a rebuild of 'flows' is already running"
                ) as caught:
                    rebuild(flow_store, FlowProjection())
                refused.append(str(caught.value))

        rebuild(flow_store, flow_projection(flow_store), batch_size=2, progress=during)
        assert refused
        assert FlowQueries(flow_store).sessions().items[0].running == 5
        rebuild(flow_store, flow_projection(flow_store))  # the claim was released

    def test_a_dead_rebuilds_claim_expires(self, target: Target) -> None:
        from datetime import UTC, datetime, timedelta

        now = [datetime(2030, 1, 1, tzinfo=UTC)]
        with target.open(projections=[FlowProjection()], clock=lambda: now[0]) as store:
            for i in range(4):
                FlowService(store).start_flow(f"f{i}", controller_id="c", goal="g", owner_session_key="s")

            def stall(progress: Progress) -> None:
                if progress.done == 2:
                    now[0] += timedelta(minutes=3)  # this rebuild "hangs" past its lease
                    rebuild(store, FlowProjection())  # so another may take over

            with pytest.raises(ProjectionError, match="lost its claim"):
                rebuild(store, flow_projection(store), batch_size=2, progress=stall)
            assert FlowQueries(store).sessions().items[0].running == 4

    def test_a_stalled_rebuild_loses_its_expired_claim_even_if_nobody_took_it(self, target: Target) -> None:
        from datetime import UTC, datetime, timedelta

        now = [datetime(2030, 1, 1, tzinfo=UTC)]
        with target.open(projections=[FlowProjection()], clock=lambda: now[0]) as store:
            for i in range(4):
                FlowService(store).start_flow(f"f{i}", controller_id="c", goal="g", owner_session_key="s")

            def stall(progress: Progress) -> None:
                if progress.done == 2:
                    now[0] += timedelta(minutes=3)  # past its lease: a prune may have run meanwhile

            with pytest.raises(ProjectionError, match="lost its claim"):
                rebuild(store, flow_projection(store), batch_size=2, progress=stall)


def test_the_fold_survives_wrongly_typed_fields(target: Target) -> None:
    with target.open() as store:
        store.append(
            "f", [NewEvent("FlowStarted", {"controller_id": "c", "goal": "g", "owner_session_key": "s"})]
        )
        store.append(
            "f",
            [
                NewEvent("StepScheduled", {"step_id": "s1", "name": "n", "run_id": "r", "position": "first"}),
                NewEvent("StepRetried", {"step_id": "s1", "retry_count": "two"}),
                NewEvent("LeaseAcquired", {"owner_token": "w", "expires_at": "soon", "generation": "x"}),
                NewEvent("GateOpened", {"step_id": "s1", "prompt": 5, "options": ["not an object"]}),
                NewEvent("FlowAdvanced", {"state_patch": ["not", "a", "patch"]}),
            ],
        )
    with target.open(projections=[FlowProjection()]) as store:
        flow = FlowQueries(store).flow("f")
        step = FlowQueries(store).step("f", "s1")
        assert (flow.revision, flow.lease_generation, flow.lease_expires_at) == (6, 0, None)
        assert (step.position, step.retry_count, step.gate_prompt, step.gate_options) == (0, 1, "5", [])


def test_cleared_read_model_fields_are_stored_as_null(target: Target) -> None:
    with target.open(projections=[FlowProjection()]) as store:
        flows = FlowService(store)
        flows.start_flow("f", controller_id="c", goal="g", owner_session_key="s")
        flows.schedule_step("f", step_id="s1", name="n", run_id="r")
        flows.wait("f", waiting_for="human")
        flows.resume("f")  # wait goes from an object back to None: an update to NULL
        rebuild(store, FlowProjection())  # every None of both rows inserted at once
        flows.wait("f", waiting_for="human")
        flows.resume("f")
        with store.engine.connect() as conn:
            nulls = conn.execute(
                sa.text(
                    "SELECT (SELECT count(*) FROM flows WHERE wait IS NULL AND result IS NULL),"
                    " (SELECT count(*) FROM flow_steps WHERE result IS NULL AND gate_status IS NULL)"
                )
            ).one()
        assert tuple(nulls) == (1, 1)
        assert FlowQueries(store).flow("f").wait is None


class TestTablesOfTheirOwn:
    """A projection's rebuild drops and replaces its tables: they must be its own."""

    @staticmethod
    def naming(table: str) -> type[Projection]:
        class Clashing(DecisionsByActor):
            name: ClassVar[str] = "clashing"

            def define_tables(self, metadata: sa.MetaData) -> None:
                sa.Table(table, metadata, sa.Column("actor", sa.String(200), primary_key=True))

        return Clashing

    @pytest.mark.parametrize("table", ["flow_events", "event_positions", "alembic_version"])
    def test_the_stores_own_tables_are_refused(self, table: str) -> None:
        with pytest.raises(ProjectionError, match=f"names the table '{table}', one of the event store's own"):
            self.naming(table)()

    @pytest.mark.parametrize("events", [0, 2], ids=["empty log", "log with events"])
    def test_another_projections_table_is_refused_and_kept(self, target: Target, events: int) -> None:
        """A built-in read model's table is refused sooner, when the projection is made
        (tests/test_projection_definitions.py): here another user projection's."""
        with target.open(projections=[FlowProjection()]) as store:
            owner = CatchUpRunner(store, DecisionsByActor())
            for n in range(events):
                FlowService(store).start_flow(f"f{n}", controller_id="c", goal="g", owner_session_key="s")
                decide(store, f"agent-{n}")
            owner.run_until_caught_up()
            before, decided = snapshot(store), counts(store, owner.projection)
            with pytest.raises(ProjectionError, match=r"its table 'decisions_by_actor' exists"):
                CatchUpRunner(store, self.naming("decisions_by_actor")())
            with pytest.raises(ProjectionError, match="has never been built here"):
                rebuild(store, self.naming("decisions_by_actor")())
            assert (snapshot(store), counts(store, owner.projection)) == (before, decided)
            assert store.verify().ok and store.last_position() == 2 * events
