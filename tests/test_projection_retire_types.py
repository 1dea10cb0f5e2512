"""PostgreSQL: retiring a projection drops the enum types its tables made, unless something else still
uses them, so a projection that takes the name again starts from a clean slate."""

from __future__ import annotations

from typing import ClassVar

import sqlalchemy as sa

from eventstore import EventStore, Transaction
from eventstore.events import RecordedEvent
from projections import CatchUpRunner, Projection, rebuild, retire
from projections.ownership import layout_difference
from projections.retiring import SYSTEM_PROJECTIONS_FLOW

from .conftest import Target
from .test_projections import decide
from .test_rebuild_enums import Plain, PlainRelabeled


class Sharing(Projection):
    """Another projection whose table uses ``Plain``'s enum type (same name, same values)."""

    name: ClassVar[str] = "sharing"

    def define_tables(self, metadata: sa.MetaData) -> None:
        kind = sa.Enum("go", "stop", name="kinds_kind")
        sa.Table("sharing", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("kind", kind))

    def on_DecisionRecorded(self, tx: Transaction, event: RecordedEvent) -> None:
        pass


def enum_types(store: EventStore) -> list[str]:
    with store.reading() as conn:
        here = "to_regnamespace(current_schema())"
        query = f"SELECT typname FROM pg_type WHERE typtype = 'e' AND typnamespace = {here}"
        return sorted(conn.execute(sa.text(query)).scalars())


def test_its_enum_types_go_with_its_tables_and_the_name_can_be_built_anew(pg_target: Target) -> None:
    with pg_target.open() as store:
        decide(store, "agent:a")
        CatchUpRunner(store, Plain())
        assert retire(store, "kinds", by="ops:ann", dry_run=True).types == ("kinds_kind",)
        assert enum_types(store) == ["kinds_kind"]
        done = retire(store, "kinds", by="ops:ann")
        assert (done.tables, done.types) == (("kinds",), ("kinds_kind",))
        assert enum_types(store) == []
        (event,) = store.read_flow(SYSTEM_PROJECTIONS_FLOW)
        assert event.data["types"] == ["kinds_kind"]
        rebuild(store, PlainRelabeled())  # the name taken again, with other values
        with store.engine.connect() as conn:
            assert layout_difference(conn, PlainRelabeled()) is None


def test_a_type_another_projections_table_uses_is_kept(pg_target: Target) -> None:
    with pg_target.open() as store:
        CatchUpRunner(store, Plain())
        CatchUpRunner(store, Sharing())
        assert retire(store, "kinds", by="ops:ann").types == ()
        assert enum_types(store) == ["kinds_kind"]
        assert retire(store, "sharing", by="ops:ann").types == ("kinds_kind",)
        assert enum_types(store) == []


def test_sqlite_has_no_types_to_drop(tmp_path: object) -> None:
    with EventStore.open(f"sqlite:///{tmp_path}/kinds.db") as store:
        CatchUpRunner(store, Plain())
        assert retire(store, "kinds", by="ops:ann").types == ()
