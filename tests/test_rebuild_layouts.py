"""A read model rebuilt under a runner's feet: same version, other tables, or a newer version."""

from __future__ import annotations

from typing import ClassVar

import pytest
import sqlalchemy as sa

from eventstore import EventStore, RecordedEvent, Transaction
from eventstore.errors import ProjectionError
from projections import CatchUpRunner, FlowProjection, FlowService, Projection, rebuild
from projections.langgraph import LangGraphProjection
from projections.ownership import layout_difference
from projections.types import JSON, UTCDateTime

from .conftest import Target
from .test_projections import DecisionsByActor, counts, decide
from .version_workers import Tally, count


class Relaid(DecisionsByActor):
    """The same name and version as ``DecisionsByActor``, its table laid out anew (no version bump)."""

    def define_tables(self, metadata: sa.MetaData) -> None:
        sa.Table(
            "decisions_by_actor",
            metadata,
            sa.Column("actor", sa.String(200), primary_key=True),
            sa.Column("made", sa.Integer, nullable=False),
        )

    def on_DecisionRecorded(self, tx: Transaction, event: RecordedEvent) -> None:
        pass  # what it folds does not matter here: only that its tables differ


class Renamed(DecisionsByActor):
    """The same name and version as ``DecisionsByActor``, its table renamed (no version bump)."""

    def define_tables(self, metadata: sa.MetaData) -> None:
        sa.Table(
            "decisions_by_actor_v1",
            metadata,
            sa.Column("actor", sa.String(200), primary_key=True),
            sa.Column("decisions", sa.Integer, nullable=False),
        )

    def on_DecisionRecorded(self, tx: Transaction, event: RecordedEvent) -> None:
        pass


class Retyped(DecisionsByActor):
    """Its count column a string now (no version bump)."""

    def define_tables(self, metadata: sa.MetaData) -> None:
        sa.Table(
            "decisions_by_actor",
            metadata,
            sa.Column("actor", sa.String(200), primary_key=True),
            sa.Column("decisions", sa.String(20), nullable=False),
        )

    def on_DecisionRecorded(self, tx: Transaction, event: RecordedEvent) -> None:
        pass


class Nullable(Retyped):
    """Its count column may be NULL now (no version bump)."""

    def define_tables(self, metadata: sa.MetaData) -> None:
        sa.Table(
            "decisions_by_actor",
            metadata,
            sa.Column("actor", sa.String(200), primary_key=True),
            sa.Column("decisions", sa.Integer),
        )


class Rekeyed(Retyped):
    """Keyed by both columns now (no version bump)."""

    def define_tables(self, metadata: sa.MetaData) -> None:
        sa.Table(
            "decisions_by_actor",
            metadata,
            sa.Column("actor", sa.String(200), primary_key=True),
            sa.Column("decisions", sa.Integer, primary_key=True),
        )


def _checkpoint(store: EventStore) -> int:
    with store.engine.connect() as conn:
        query = "SELECT position FROM projection_checkpoints WHERE name = 'decisions_by_actor'"
        return int(conn.exec_driver_sql(query).scalar_one())


class TestSameVersionOtherTables:
    @pytest.mark.parametrize(
        "relaid",
        [Relaid, Renamed, Retyped, Nullable, Rekeyed],
        ids=["columns", "names", "types", "nullable", "key"],
    )
    def test_a_runner_is_told_to_bump_the_version(self, target: Target, relaid: type[Projection]) -> None:
        with target.open() as store, target.open() as other:
            decide(store, "a", 2)
            runner = CatchUpRunner(store, DecisionsByActor())
            rebuild(other, relaid())  # another process, its tables changed without a version bump
            decide(store, "a")
            with pytest.raises(ProjectionError, match=r"(?s)rebuilt .*version 1.*bump its version") as raised:
                runner.run_once()
            assert "rebuilt at version 1 since this runner started, with other tables" in str(raised.value)
            assert _checkpoint(store) == 2  # nothing folded

    @pytest.mark.parametrize("relaid", [Relaid, Retyped], ids=["columns", "types"])
    def test_a_runner_started_on_tables_laid_out_otherwise_is_told_too(
        self, target: Target, relaid: type[Projection]
    ) -> None:
        """Code whose tables changed without a version bump, started on the tables the old
        code built: its first batch folded into them (a StorageError, or on SQLite a string
        count) as the build was the one it found at its start."""
        with target.open() as store:
            decide(store, "a", 2)
            CatchUpRunner(store, DecisionsByActor())
            runner = CatchUpRunner(store, relaid())
            decide(store, "a")
            # nothing rebuilt it: it was so when this runner started
            started_on = r"(?s)built here at version 1 before this runner started, by code with other tables"
            with pytest.raises(ProjectionError, match=started_on + r".*bump its version") as raised:
                runner.run_once()
            assert "rebuilt" not in str(raised.value)
            assert _checkpoint(store) == 2

    def test_a_rebuild_with_the_same_tables_lets_the_runner_go_on(self, target: Target) -> None:
        with target.open() as store, target.open() as other:
            decide(store, "a", 2)
            runner = CatchUpRunner(store, DecisionsByActor())
            rebuild(other, DecisionsByActor())
            decide(store, "a")
            assert runner.run_until_caught_up() == 1
            assert counts(store, runner.projection) == {"a": 3}


class Newer(Relaid):
    """Version 2, its table laid out anew: what a rolling deploy's new processes run."""

    version: ClassVar[int] = 2


class TestANewerVersionUnderARunner:
    def test_an_old_runner_is_told_to_run_the_newer_code(self, target: Target) -> None:
        """Another process opened version 2 (its rebuild swapped the tables) while this one runs
        version 1: the old runner is refused, naming both versions, and writes nothing."""
        with target.open() as store, target.open() as other:
            decide(store, "a", 2)
            runner = CatchUpRunner(store, DecisionsByActor())
            CatchUpRunner(other, Newer())
            decide(store, "a")
            with pytest.raises(ProjectionError, match="built by version 2, newer than this code's 1"):
                runner.run_once()
            assert _checkpoint(store) == 2
            assert CatchUpRunner(other, Newer()).run_until_caught_up() == 1

    def test_an_old_runner_does_not_report_the_newer_versions_position(self, target: Target) -> None:
        """The checkpoint is version 2's: the old runner's position() is refused as run_once() is,
        rather than passed off as how far version 1 has got."""
        with target.open() as store, target.open() as other:
            decide(store, "a", 2)
            runner = CatchUpRunner(store, DecisionsByActor())
            decide(store, "a")
            CatchUpRunner(other, Newer())  # version 2 rebuilt from the log: its checkpoint is at 3
            with pytest.raises(ProjectionError, match="built by version 2, newer than this code's 1"):
                runner.position()
            assert CatchUpRunner(other, Newer()).position() == 3

    def test_a_runner_does_not_report_an_older_versions_position(self, target: Target) -> None:
        """An operator went back to version 1 on purpose: a version 2 runner's position() says it
        needs a rebuild, as its run_once() does, rather than report version 1's checkpoint."""
        with target.open() as store, target.open() as other:
            decide(store, "a", 2)
            runner = CatchUpRunner(store, Newer())
            rebuild(other, DecisionsByActor())
            with pytest.raises(ProjectionError, match="needs a rebuild before it can catch up"):
                runner.position()
            with pytest.raises(ProjectionError, match="needs a rebuild before it can catch up"):
                runner.run_once()


class TallyRelaid(Tally):
    """``Tally``'s name and version, its column renamed (no version bump)."""

    def define_tables(self, metadata: sa.MetaData) -> None:
        sa.Table(
            "tally",
            metadata,
            sa.Column("flow_id", sa.String(200), primary_key=True),
            sa.Column("counted", sa.Integer, nullable=False),
        )

    def on_Counted(self, tx: Transaction, event: RecordedEvent) -> None:
        pass


def test_an_inline_process_is_told_to_bump_the_version(target: Target) -> None:
    """Another process rebuilt an inline read model at the same version with other columns: the
    old process's next append is refused (it would fold into a column that is gone), nothing written."""
    with target.open(projections=[Tally()]) as old, target.open() as other:
        count(old, "a")
        rebuild(other, TallyRelaid())
        with pytest.raises(
            ProjectionError, match=r"rebuilt at version 1 with other tables.*bump its version"
        ):
            count(old, "a")
        assert old.revision("a") == 1


class EveryType(Projection):
    """A column of each common type, as ``layout_difference`` must find them again on each backend."""

    name: ClassVar[str] = "every_type"

    def define_tables(self, metadata: sa.MetaData) -> None:
        types: list[sa.types.TypeEngine[object]] = [
            sa.BigInteger(), sa.SmallInteger(), sa.Float(), sa.Float(24), sa.Float(53), sa.Double(),
            sa.REAL(), sa.Numeric(), sa.Numeric(10, 2), sa.DECIMAL(8, 3), sa.Text(), sa.String(),
            sa.String(30), sa.CHAR(), sa.CHAR(3), sa.Unicode(40), sa.Boolean(), sa.Date(), sa.Time(),
            sa.DateTime(), sa.DateTime(timezone=True), sa.Interval(), sa.Uuid(), sa.JSON(),
            sa.LargeBinary(), UTCDateTime(), JSON,
        ]  # fmt: skip
        columns = [sa.Column(f"c{number}", type_) for number, type_ in enumerate(types)]
        sa.Table("every_type", metadata, sa.Column("id", sa.Integer, primary_key=True), *columns)
        sa.Table("every_type_unkeyed", metadata, sa.Column("note", sa.Text, nullable=False))


class TestTheSameDeclarationComparesEqual:
    def test_every_type_after_a_rebuild_by_another_process(self, target: Target) -> None:
        with target.open() as store, target.open() as other:
            decide(store, "a")
            runner = CatchUpRunner(store, EveryType())
            with store.engine.connect() as conn:
                assert layout_difference(conn, EveryType()) is None
            rebuild(other, EveryType())
            decide(store, "a")
            assert runner.run_until_caught_up() == 1

    def test_the_built_in_projections(self, target: Target) -> None:
        with target.open(projections=[FlowProjection(), LangGraphProjection()]) as store:
            runner = CatchUpRunner(store, DecisionsByActor())
            with target.open() as other:
                for projection in (FlowProjection(), LangGraphProjection(), DecisionsByActor()):
                    rebuild(other, projection)  # then the fence compares the tables again
            FlowService(store).start_flow("f1", controller_id="c", goal="g", owner_session_key="s")
            decide(store, "a")
            runner.run_until_caught_up()
            assert counts(store, runner.projection) == {"a": 1}
            with store.engine.connect() as conn:
                for projection in (FlowProjection(), LangGraphProjection(), DecisionsByActor()):
                    assert layout_difference(conn, projection) is None, projection.name
