"""The layout check compares an enum's values, where the database holds them (``enum_labels``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa

from eventstore import EventStore, RecordedEvent, Transaction
from eventstore.errors import ProjectionError
from projections import CatchUpRunner, Projection, rebuild
from projections.ownership import layout_difference

from .conftest import Target
from .test_projections import decide


class Kinds(Projection):
    """An enum column: ``values`` allowed, ``options`` as given to ``sa.Enum``."""

    name: ClassVar[str] = "kinds"
    values: ClassVar[tuple[str, ...]] = ("go", "stop")
    options: ClassVar[dict[str, Any]] = {"create_constraint": True}  # a CHECK on SQLite

    def define_tables(self, metadata: sa.MetaData) -> None:
        kind = sa.Enum(*self.values, name="kinds_kind", **self.options)
        sa.Table("kinds", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("kind", kind))

    def on_DecisionRecorded(self, tx: Transaction, event: RecordedEvent) -> None:
        pass


class Relabeled(Kinds):
    """The same name and version, a value renamed (no version bump): 'stop' and 'halt' are as
    long, so even the VARCHAR's length is the same."""

    values: ClassVar[tuple[str, ...]] = ("go", "halt")


class Plain(Kinds):
    """SQLAlchemy's default: a native enum on PostgreSQL, a plain VARCHAR on SQLite."""

    options: ClassVar[dict[str, Any]] = {}


class PlainRelabeled(Plain):
    values: ClassVar[tuple[str, ...]] = ("go", "halt")


class Checked(Kinds):
    """A VARCHAR and a CHECK on both backends."""

    options: ClassVar[dict[str, Any]] = {"native_enum": False, "create_constraint": True}


class CheckedRelabeled(Checked):
    values: ClassVar[tuple[str, ...]] = ("go", "halt")


class CheckedReordered(Checked):
    values: ClassVar[tuple[str, ...]] = ("stop", "go")  # a CHECK's values have no order


def _difference(store: EventStore, projection: Projection) -> str | None:
    with store.engine.connect() as conn:
        return layout_difference(conn, projection)


@pytest.mark.parametrize(
    ("built", "relabeled"), [(Kinds, Relabeled), (Checked, CheckedRelabeled)], ids=["enum", "check"]
)
def test_changed_values_are_a_difference(target: Target, built: type[Kinds], relabeled: type[Kinds]) -> None:
    with target.open() as store:
        decide(store, "a")
        CatchUpRunner(store, built())
        assert _difference(store, built()) is None
        rebuild(store, built())
        assert _difference(store, built()) is None
        assert "'stop'" in str(_difference(store, relabeled()))
        runner = CatchUpRunner(store, relabeled())
        with pytest.raises(ProjectionError, match=r"(?s)kinds\.kind .*'go', 'stop'.*'go', 'halt'"):
            runner.run_once()


def test_a_checks_values_compare_in_any_order(target: Target) -> None:
    with target.open() as store:
        CatchUpRunner(store, Checked())
        assert _difference(store, CheckedReordered()) is None


def test_a_native_enums_type_outlives_its_tables(pg_target: Target) -> None:
    """PostgreSQL: the code with the renamed value rebuilds on the type the old code made, which
    it leaves as it is: its tables still hold the old values, and it is told to rename the type."""
    with pg_target.open() as store:
        CatchUpRunner(store, Plain())
        rebuild(store, PlainRelabeled())
        assert _difference(store, Plain()) is None
        assert "give changed values a new type name" in str(_difference(store, PlainRelabeled()))


def test_a_plain_varchar_holds_no_values_to_compare(tmp_path: Path) -> None:
    """SQLite, SQLAlchemy's default ``sa.Enum``: a VARCHAR as long as the longest value, and nothing
    else; only that length is compared."""
    with EventStore.open(f"sqlite:///{tmp_path}/events.db") as store:
        CatchUpRunner(store, Plain())
        assert _difference(store, PlainRelabeled()) is None
