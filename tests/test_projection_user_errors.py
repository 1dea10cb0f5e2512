"""What a user's own projection gets when it goes wrong: a handler that raises, a name another holds."""

from __future__ import annotations

import re
from typing import ClassVar

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from eventstore import (
    EventStore,
    FlowNotFound,
    NewEvent,
    ProjectionError,
    ProjectionFailed,
    RecordedEvent,
    Transaction,
)
from eventstore.cli import main
from projections import CatchUpRunner, Projection, rebuild

from .conftest import Target


class Seen(Projection):
    """Records the position of every E event; fails on one whose data says so."""

    name: ClassVar[str] = "seen"
    table_name: ClassVar[str] = "seen"

    def define_tables(self, metadata: sa.MetaData) -> None:
        sa.Table(self.table_name, metadata, sa.Column("position", sa.BigInteger, primary_key=True))

    def on_E(self, tx: Transaction, event: RecordedEvent) -> None:
        tx.connection.execute(self.table(self.table_name).insert().values(position=event.position))
        if event.data.get("bad"):
            raise KeyError(event.data["bad"])  # after its write: which must not stay


class SeenByApply(Seen):
    """The same fold, through an ``apply`` of its own."""

    def apply(self, tx: Transaction, events: list[RecordedEvent]) -> None:  # type: ignore[override]  # same shape
        for event in events:
            self.on_E(tx, event)


class SeenV2(Seen):
    version: ClassVar[int] = 2


class Other(Seen):
    """Another projection that took the same name."""

    table_name: ClassVar[str] = "other_seen"


def append(store: EventStore, *data: dict[str, str]) -> None:
    store.append("f", [NewEvent("E", dict(d)) for d in data])


def positions(store: EventStore, table: str = "seen") -> list[int]:
    with store.engine.connect() as conn:
        return list(conn.exec_driver_sql(f"SELECT position FROM {table} ORDER BY position").scalars())


class TestAFailingHandler:
    def test_a_catch_up_batch_names_the_event_and_writes_nothing(self, store: EventStore) -> None:
        runner = CatchUpRunner(store, Seen(), batch_size=10)
        append(store, {}, {}, {"bad": "missing"}, {})
        with pytest.raises(
            ProjectionFailed,
            match=r"^on_E of projection 'seen' failed at event 3 \(E of flow 'f'\): KeyError: 'missing'",
        ) as caught:
            runner.run_once()
        assert (caught.value.projection, caught.value.fold, caught.value.positions) == (
            "seen",
            "on_E",
            (3, 3),
        )
        assert isinstance(caught.value.__cause__, KeyError)
        assert (positions(store), runner.position()) == ([], 0)

    def test_a_custom_apply_names_the_batch(self, store: EventStore) -> None:
        runner = CatchUpRunner(store, SeenByApply(), batch_size=10)
        append(store, {}, {"bad": "x"}, {})
        with pytest.raises(
            ProjectionFailed, match=r"^apply of projection 'seen' failed at events 1 to 3: KeyError"
        ):
            runner.run_once()
        assert (positions(store), runner.position()) == ([], 0)

    def test_an_inline_append_names_the_event_and_writes_nothing(self, target: Target) -> None:
        with target.open(projections=[Seen()]) as store:
            append(store, {})
            with pytest.raises(ProjectionFailed, match=r"at event 2 \(E of flow 'f'\): KeyError: 'k'"):
                append(store, {"bad": "k"})
            assert (store.revision("f"), positions(store)) == (1, [1])

    def test_a_rebuild_names_the_event_and_leaves_the_live_tables(self, store: EventStore) -> None:
        append(store, {})
        CatchUpRunner(store, Seen())
        append(store, {"bad": "k"})
        with pytest.raises(ProjectionFailed, match=r"at event 2 \(E of flow 'f'\)"):
            rebuild(store, SeenV2(), batch_size=1)
        assert positions(store) == [1]

    def test_the_cli_rebuild_says_it_in_one_line(self, target: Target) -> None:
        with target.open() as store:
            append(store, {"bad": "k"})
        schema = target.options.get("schema")
        args = ["--url", target.url, *(["--schema", schema] if schema else []), "rebuild", f"{__name__}:Seen"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert result.output == (
            "error: on_E of projection 'seen' failed at event 1 (E of flow 'f'): KeyError: 'k'; "
            "nothing of its transaction was written\n"
        )


class Misnamed(Seen):
    """Its handler asks for a table by a name it never declared."""

    name: ClassVar[str] = "misnamed"

    def on_E(self, tx: Transaction, event: RecordedEvent) -> None:
        tx.connection.execute(self.table("seem").insert().values(position=event.position))


class TestATableItNeverDeclared:
    def test_asking_for_it_names_the_tables_it_has(self) -> None:
        """It was a bare KeyError: 'seem'."""
        with pytest.raises(
            ProjectionError, match=r"^projection 'seen' has no table 'seem': .* declares 'seen',"
        ):
            Seen().table("seem")

    def test_a_handler_asking_for_it_fails_its_batch_saying_where(self, store: EventStore) -> None:
        runner = CatchUpRunner(store, Misnamed())
        append(store, {})
        with pytest.raises(
            ProjectionError, match=r"has no table 'seem'.*applying event at position 1 \(E\)$"
        ):
            runner.run_once()
        assert (positions(store), runner.position()) == ([], 0)


class TestTwoProjectionsOfOneName:
    def test_the_second_is_refused_instead_of_sharing_the_checkpoint(self, store: EventStore) -> None:
        append(store, {})
        first = CatchUpRunner(store, Seen())
        with pytest.raises(
            ProjectionError,
            match=r"built here at version 1 with the table 'seen', and this Other .* names 'other_seen'",
        ):
            CatchUpRunner(store, Other())
        assert not sa.inspect(store.engine).has_table("other_seen")
        append(store, {})
        assert first.run_until_caught_up() == 1 and positions(store) == [1, 2]

    def test_a_rebuild_on_purpose_may_still_change_the_tables(self, store: EventStore) -> None:
        append(store, {})
        CatchUpRunner(store, Seen())
        assert rebuild(store, Other()).done == 1
        assert positions(store, "other_seen") == [1] and not sa.inspect(store.engine).has_table("seen")
        assert CatchUpRunner(store, Other()).run_once() == 0


class InlineSeen(Seen):
    kind: ClassVar[str] = "inline"


class TestARunnerOfAnInlineProjection:
    def test_is_refused_instead_of_folding_its_events_twice(self, target: Target) -> None:
        with target.open(projections=[Seen()]) as store:
            append(store, {})
            for projection in (Seen(), InlineSeen()):
                with pytest.raises(ProjectionError, match="'seen' is inline here: appends fold it already"):
                    CatchUpRunner(store, projection)
            append(store, {})
            assert positions(store) == [1, 2]

    def test_a_runner_in_another_process_is_refused_too(self, target: Target) -> None:
        with target.open(projections=[Seen()]) as inline, target.open() as other:
            append(inline, {}, {})
            with pytest.raises(ProjectionError, match="'seen' is folded inline by the stores opened with it"):
                CatchUpRunner(other, Seen()).run_once()
            append(inline, {})
            assert positions(other) == [1, 2, 3]

    def test_a_runner_does_not_report_the_inline_checkpoint_as_its_position(self, target: Target) -> None:
        """Appends fold the read model, and its checkpoint stays where it was built: as the runner's
        position it would say the runner is behind for ever."""
        with target.open(projections=[Seen()]) as inline, target.open() as other:
            runner = CatchUpRunner(other, Seen())
            append(inline, {}, {})
            with pytest.raises(ProjectionError, match="'seen' is folded inline by the stores opened with it"):
                runner.position()

    def test_a_projection_a_runner_left_behind_misses_no_event_when_opened_inline(
        self, target: Target
    ) -> None:
        with target.open() as store:
            runner = CatchUpRunner(store, Seen())
            append(store, {}, {})
            runner.run_once()
            append(store, {}, {})  # the runner never folds these two
        with target.open(projections=[Seen()]) as inline:
            append(inline, {})
            assert positions(inline) == [1, 2, 3, 4, 5]

    def test_a_runner_at_the_head_is_taken_over_without_a_rebuild(self, target: Target) -> None:
        with target.open() as store:
            runner = CatchUpRunner(store, Seen())
            append(store, {}, {})
            runner.run_once()
            with store.engine.connect() as conn:
                built = conn.exec_driver_sql(
                    "SELECT build FROM projection_checkpoints WHERE name = 'seen'"
                ).scalar()
        with target.open(projections=[Seen()]) as inline:
            append(inline, {})
            assert positions(inline) == [1, 2, 3]
            with inline.engine.connect() as conn:
                row = conn.exec_driver_sql(
                    "SELECT kind, build FROM projection_checkpoints WHERE name = 'seen'"
                ).one()
            assert tuple(row) == ("inline", built)

    def test_a_runner_of_older_code_says_to_run_the_newer(self, store: EventStore) -> None:
        runner = CatchUpRunner(store, Seen())
        CatchUpRunner(store, SeenV2())
        with pytest.raises(ProjectionError, match="built by version 2, newer than this code's 1") as caught:
            runner.run_once()
        # A rolling deploy's stale process: its fix is a restart on the newer code. Rebuilding with
        # this code would undo version 2 for every process: only an operator's deliberate downgrade.
        advice = str(caught.value).split("newer than this code's 1", 1)[1]
        assert advice.startswith(": stop this process and restart it on the newer code"), advice
        assert "run the newer code, or" not in advice
        assert re.search(r"only an operator\b.*on purpose.*rebuilds? it with the older code", advice), advice


class Escaping(Seen):
    name: ClassVar[str] = "seen\x1b[2J"
    table_name: ClassVar[str] = "escaping"


def test_the_cli_rebuild_shows_a_name_with_an_escape_sequence_escaped(target: Target) -> None:
    with target.open() as store:
        append(store, {})
    schema = target.options.get("schema")
    args = ["--url", target.url, *(["--schema", schema] if schema else []), "rebuild", f"{__name__}:Escaping"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0 and "\x1b" not in result.output, result.output
    assert result.output.startswith("rebuilt seen\\x1b[2J from 1 event in ")


class FillsBadly(SeenV2):
    def fill(self, store: EventStore, up_to: int, batch: object, report: object, *, batch_size: int) -> int:
        raise ValueError("bulk fold bug")


def test_a_failing_bulk_fill_names_the_projection_and_keeps_the_live_tables(store: EventStore) -> None:
    append(store, {}, {})
    CatchUpRunner(store, Seen())
    with pytest.raises(
        ProjectionFailed, match=r"^fill of projection 'seen' failed at events 1 to 2: ValueError"
    ):
        rebuild(store, FillsBadly())
    assert positions(store) == [1, 2] and CatchUpRunner(store, Seen()).run_once() == 0


class RaisesTheStores(Seen):
    def on_E(self, tx: Transaction, event: RecordedEvent) -> None:
        raise FlowNotFound(event.data["flow"])


def test_the_stores_own_errors_from_a_handler_pass_as_they_are(store: EventStore) -> None:
    runner = CatchUpRunner(store, RaisesTheStores())
    store.append("f", [NewEvent("E", {"flow": "gone"})])
    with pytest.raises(FlowNotFound, match="gone"):
        runner.run_once()
    assert runner.position() == 0


class SeenV2WithMore(SeenV2):
    def define_tables(self, metadata: sa.MetaData) -> None:
        super().define_tables(metadata)
        sa.Table("more_seen", metadata, sa.Column("position", sa.BigInteger, primary_key=True))

    def on_E(self, tx: Transaction, event: RecordedEvent) -> None:
        raise RuntimeError("version 2 has a bug")


def test_code_rolled_back_after_a_failed_upgrade_rebuild_runs_on(store: EventStore) -> None:
    """The failed version 2 claimed 'more_seen' but never built it: version 1 is not another projection."""
    append(store, {})
    CatchUpRunner(store, Seen())
    with pytest.raises(ProjectionFailed, match="version 2 has a bug"):
        CatchUpRunner(store, SeenV2WithMore())
    append(store, {})
    assert CatchUpRunner(store, Seen()).run_until_caught_up() == 1 and positions(store) == [1, 2]
