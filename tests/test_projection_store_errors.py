"""The database's and the store's errors out of a projection's fold keep their type, and say where."""

from __future__ import annotations

from typing import ClassVar

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from eventstore import (
    EventStore,
    InvalidInput,
    NewEvent,
    RecordedEvent,
    StorageError,
    Transaction,
    UpcastError,
)
from eventstore.cli import main
from projections import CatchUpRunner, Projection, rebuild

from .conftest import Target


class Keys(Projection):
    """One row per event's key: a key seen twice breaks the table's primary key."""

    name: ClassVar[str] = "keys"

    def define_tables(self, metadata: sa.MetaData) -> None:
        sa.Table("keys_t", metadata, sa.Column("k", sa.String(20), primary_key=True))

    def on_E(self, tx: Transaction, event: RecordedEvent) -> None:
        tx.connection.execute(self.table("keys_t").insert().values(k=event.data["k"]))


class Valued(Keys):
    """A row per event with its value, which may not be null (and the database names the table)."""

    def define_tables(self, metadata: sa.MetaData) -> None:
        sa.Table(
            "keys_t",
            metadata,
            sa.Column("k", sa.String(20), primary_key=True),
            sa.Column("v", sa.Text, nullable=False),
        )

    def on_E(self, tx: Transaction, event: RecordedEvent) -> None:
        tx.connection.execute(self.table("keys_t").insert().values(k=event.data["k"], v=event.data.get("v")))


class AsksBadly(Keys):
    def on_E(self, tx: Transaction, event: RecordedEvent) -> None:
        tx.store.read_all(after_position=-1)


class Decodes(Keys):
    def apply(self, tx: Transaction, events: list[RecordedEvent]) -> None:  # type: ignore[override]  # same shape
        for event in events:
            tx.store.decode(event)


def append(store: EventStore, *keys: str) -> None:
    for key in keys:
        store.append(f"f-{key}", [NewEvent("E", {"k": key})])


def rows(store: EventStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM keys_t").scalar_one())


class TestAFoldTheDatabaseRefuses:
    def test_a_catch_up_names_projection_and_event_and_writes_nothing(self, store: EventStore) -> None:
        runner = CatchUpRunner(store, Keys(), batch_size=10)
        append(store, "a", "b", "a", "c")
        with pytest.raises(
            StorageError, match=r"keys_t.*; in projection 'keys' applying event at position 3 \(E\)$"
        ) as caught:
            runner.run_once()
        error = caught.value
        assert (error.projection, error.fold, error.positions) == ("keys", "on_E", (3, 3))
        assert isinstance(error.__cause__, sa.exc.IntegrityError)
        assert (rows(store), runner.position()) == (0, 0)

    def test_the_first_build_says_whose_fresh_copy_the_table_is(self, store: EventStore) -> None:
        append(store, "a")
        with pytest.raises(
            StorageError,
            match=r"applying event at position 1 \(E\); keys_t__rebuild is the fresh copy of table "
            r"keys_t that a build fills",
        ) as caught:
            CatchUpRunner(store, Valued())
        assert caught.value.projection == "keys"
        assert not sa.inspect(store.engine).has_table("keys_t__rebuild")

    def test_an_inline_append_names_the_event_and_writes_nothing(self, target: Target) -> None:
        with target.open(projections=[Keys()]) as store:
            append(store, "a")
            with pytest.raises(StorageError, match=r"in projection 'keys' applying event at position 2"):
                append(store, "a")
            assert (store.last_position(), rows(store)) == (1, 1)

    def test_the_cli_rebuild_says_where(self, target: Target) -> None:
        with target.open() as store:
            append(store, "a")
        schema = target.options.get("schema")
        args = [
            "--url",
            target.url,
            *(["--schema", schema] if schema else []),
            "rebuild",
            f"{__name__}:Valued",
        ]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
        assert "; in projection 'keys' applying event at position 1 (E); keys_t__rebuild is" in result.output


class TestAFoldTheStoreRefuses:
    def test_a_bad_store_call_says_it_was_the_handlers(self, store: EventStore) -> None:
        runner = CatchUpRunner(store, AsksBadly())
        append(store, "a")
        with pytest.raises(
            InvalidInput, match=r"not -1; in projection 'keys' applying event at position 1 \(E\)$"
        ) as caught:
            runner.run_once()
        assert (caught.value.fold, caught.value.positions, runner.position()) == ("on_E", (1, 1), 0)

    def test_a_custom_apply_names_the_batch(self, store: EventStore) -> None:
        runner = CatchUpRunner(store, Decodes())
        store.append("f", [NewEvent("Unregistered", {}), NewEvent("Unregistered", {})])
        with pytest.raises(
            UpcastError,
            match=r"'Unregistered' \(the event at position 1\); "
            r"in projection 'keys' applying events at positions 1 to 2$",
        ) as caught:
            runner.run_once()
        assert (caught.value.fold, caught.value.positions, runner.position()) == ("apply", (1, 2), 0)

    def test_a_rebuild_names_the_live_projection(self, store: EventStore) -> None:
        CatchUpRunner(store, Keys())
        append(store, "a", "a")
        with pytest.raises(StorageError, match=r"in projection 'keys' applying event at position 2 \(E\)"):
            rebuild(store, Keys())
        assert rows(store) == 0 and CatchUpRunner(store, Keys()).position() == 0
