"""A read model rebuilt under a runner's feet: same version, other tables, or a newer version."""

from __future__ import annotations

from typing import ClassVar

import pytest
import sqlalchemy as sa

from eventstore import EventStore, RecordedEvent, Transaction
from eventstore.errors import ProjectionError
from projections import CatchUpRunner, Projection, rebuild

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


def _checkpoint(store: EventStore) -> int:
    with store.engine.connect() as conn:
        query = "SELECT position FROM projection_checkpoints WHERE name = 'decisions_by_actor'"
        return int(conn.exec_driver_sql(query).scalar_one())


class TestSameVersionOtherTables:
    @pytest.mark.parametrize("relaid", [Relaid, Renamed], ids=["columns", "names"])
    def test_a_runner_is_told_to_bump_the_version(self, target: Target, relaid: type[Projection]) -> None:
        with target.open() as store, target.open() as other:
            decide(store, "a", 2)
            runner = CatchUpRunner(store, DecisionsByActor())
            rebuild(other, relaid())  # another process, its tables changed without a version bump
            decide(store, "a")
            with pytest.raises(ProjectionError, match=r"(?s)rebuilt .*version 1.*bump its version"):
                runner.run_once()
            assert _checkpoint(store) == 2  # nothing folded

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
