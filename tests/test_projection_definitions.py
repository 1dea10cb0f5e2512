"""Projection definitions the machinery refuses: tables not its own, names too long, bad handlers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.mysql import TINYINT

from eventstore import EventStore, NewEvent, RecordedEvent, Transaction
from eventstore.errors import ProjectionError
from projections import CatchUpRunner, FlowProjection, FlowQueries, FlowService, Projection, rebuild

from .conftest import Target


def projection(name: str, *tables: str, version: int = 1, **attrs: Any) -> Projection:
    """A projection that inserts each E event's position into each of ``tables``."""

    def define_tables(self: Projection, metadata: sa.MetaData) -> None:
        for table in tables:
            sa.Table(table, metadata, sa.Column("k", sa.BigInteger, primary_key=True))

    def on_E(self: Projection, tx: Transaction, event: RecordedEvent) -> None:
        for table in tables:
            tx.connection.execute(self.table(table).insert().values(k=event.position))

    body = {"name": name, "version": version, "define_tables": define_tables, "on_E": on_E, **attrs}
    return type(f"P_{len(tables)}", (Projection,), body)()


def append(store: EventStore, count: int) -> None:
    store.append("f", [NewEvent("E", {}) for _ in range(count)])


def rows(store: EventStore, table: str) -> int:
    with store.engine.connect() as conn:
        return int(conn.exec_driver_sql(f'SELECT count(*) FROM "{table}"').scalar_one())


def version_of(store: EventStore, name: str) -> int | None:
    with store.engine.connect() as conn:
        query = sa.text("SELECT version FROM projection_checkpoints WHERE name = :n")
        return conn.execute(query, {"n": name}).scalar()


class TestTablesOfItsOwn:
    def test_a_new_version_may_not_take_another_projections_table(self, store: EventStore) -> None:
        append(store, 3)
        CatchUpRunner(store, projection("a", "a_counts"))
        b = CatchUpRunner(store, projection("b", "b_report"))
        with pytest.raises(ProjectionError, match="'b_report' belongs to projection 'b'"):
            CatchUpRunner(store, projection("a", "a_counts", "b_report", version=2))
        assert (rows(store, "b_report"), version_of(store, "a")) == (3, 1)
        append(store, 1)
        assert b.run_until_caught_up() == 1 and rows(store, "b_report") == 4

    def test_a_new_version_may_not_take_an_application_table(self, store: EventStore) -> None:
        append(store, 2)
        CatchUpRunner(store, projection("a", "a_counts"))
        with store.engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE app_data (k INTEGER)")
            conn.exec_driver_sql("INSERT INTO app_data VALUES (7)")
        with pytest.raises(ProjectionError, match="'app_data' exists and is not its own"):
            rebuild(store, projection("a", "a_counts", "app_data", version=2))
        assert (rows(store, "app_data"), version_of(store, "a")) == (1, 1)

    def test_a_rebuild_keeps_a_table_named_like_its_fresh_table(self, store: EventStore) -> None:
        append(store, 2)
        CatchUpRunner(store, projection("a", "a_counts"))
        with store.engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE a_counts__rebuild (note TEXT)")
            conn.exec_driver_sql("INSERT INTO a_counts__rebuild VALUES ('mine')")
        with pytest.raises(ProjectionError, match="'a_counts__rebuild' exists and is not its own"):
            rebuild(store, projection("a", "a_counts"))
        assert (rows(store, "a_counts__rebuild"), rows(store, "a_counts")) == (1, 2)

    def test_an_interrupted_rebuilds_tables_are_replaced(self, store: EventStore) -> None:
        append(store, 3)
        CatchUpRunner(store, projection("a", "a_counts"))

        def interrupt(progress: object) -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            rebuild(store, projection("a", "a_counts"), batch_size=1, progress=interrupt)
        assert rebuild(store, projection("a", "a_counts")).done == 3
        assert not sa.inspect(store.engine).has_table("a_counts__rebuild")

    def test_tables_built_before_ownership_was_recorded_are_adopted(self, store: EventStore) -> None:
        append(store, 2)
        CatchUpRunner(store, projection("a", "a_counts"))
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM projection_tables")  # as a database from before 0009
        assert rebuild(store, projection("a", "a_counts", version=2)).done == 2
        with pytest.raises(ProjectionError, match="'a_counts' belongs to projection 'a'"):
            CatchUpRunner(store, projection("b", "a_counts"))

    def test_a_first_build_keeps_a_table_created_under_its_name_meanwhile(self, store: EventStore) -> None:
        append(store, 3)

        def create_app_table(progress: object) -> None:
            with store.engine.begin() as conn:
                if not sa.inspect(conn).has_table("a_counts"):
                    conn.exec_driver_sql("CREATE TABLE a_counts (note TEXT)")
                    conn.exec_driver_sql("INSERT INTO a_counts VALUES ('mine')")

        with pytest.raises(ProjectionError, match="'a_counts' appeared while projection 'a' was first built"):
            rebuild(store, projection("a", "a_counts"), batch_size=1, progress=create_app_table)
        assert (rows(store, "a_counts"), version_of(store, "a")) == (1, None)

    def test_names_differing_only_in_case_are_one_table_to_sqlite(self, store: EventStore) -> None:
        append(store, 2)
        taken: list[str] = []

        def take_during_first_build(progress: object) -> None:
            if taken:
                return
            try:
                CatchUpRunner(store, projection("b", "counts"))
                taken.append("b built 'counts'")
            except ProjectionError as exc:
                taken.append(str(exc))

        rebuild(store, projection("a", "Counts"), batch_size=1, progress=take_during_first_build)
        if store.dialect == "sqlite":
            assert "'counts' belongs to projection 'a'" in taken[0]
        else:  # quoted names: two tables to PostgreSQL
            assert taken == ["b built 'counts'"] and rows(store, "counts") == 2
        assert rows(store, "Counts") == 2

    def test_a_table_a_new_version_no_longer_names_is_dropped_and_freed(self, store: EventStore) -> None:
        append(store, 2)
        CatchUpRunner(store, projection("stats", "stats_main", "stats_extra"))
        assert rebuild(store, projection("stats", "stats_main", version=2)).done == 2
        assert not sa.inspect(store.engine).has_table("stats_extra") and rows(store, "stats_main") == 2
        assert CatchUpRunner(store, projection("other", "stats_extra")).run_until_caught_up() == 0
        assert rows(store, "stats_extra") == 2

    def test_a_table_name_ending_in_the_rebuild_suffix_is_refused(self) -> None:
        with pytest.raises(ProjectionError, match="ends in '__rebuild'"):
            projection("b", "a_counts__rebuild")


class TestPostgreSQLNameLimit:
    @pytest.mark.parametrize(
        ("table", "index"),
        [("t" * 63, None), ("t" * 52, None), ("t" * 40, "ix_" + "i" * 52)],
        ids=["fresh table name", "primary key name", "index name"],
    )
    def test_names_too_long_for_postgresql_are_refused(self, table: str, index: str | None) -> None:
        def define_tables(self: Projection, metadata: sa.MetaData) -> None:
            t = sa.Table(table, metadata, sa.Column("k", sa.BigInteger, primary_key=index is None))
            if index:
                sa.Index(index, t.c.k)

        with pytest.raises(ProjectionError, match="longer than PostgreSQL's 63 bytes"):
            type("Long", (Projection,), {"name": "long", "define_tables": define_tables})()

    def test_the_longest_names_build_and_rebuild(self, store: EventStore) -> None:
        append(store, 2)
        longest = projection("n" * 92, "t" * 51, version=2**31 - 1)
        runner = CatchUpRunner(store, longest)
        append(store, 1)
        assert runner.run_until_caught_up() == 1
        assert rebuild(store, longest).done == 3 and rows(store, "t" * 51) == 3


class TestNameVersionKind:
    @pytest.mark.parametrize("name", ["n" * 93, 5, "a#b", "a\x00b"], ids=["93 chars", "int", "#", "NUL"])
    def test_a_bad_name_is_refused(self, name: Any) -> None:
        with pytest.raises(ProjectionError, match="name"):
            projection(name, "t")

    @pytest.mark.parametrize("version", [True, "2", 1.5, 2**31, -1])
    def test_a_bad_version_is_refused(self, version: Any) -> None:
        with pytest.raises(ProjectionError, match="version"):
            projection("p", "t", version=version)

    @pytest.mark.parametrize("kind", ["Inline", "", 3])
    def test_a_bad_kind_is_refused(self, kind: Any) -> None:
        with pytest.raises(ProjectionError, match="kind"):
            projection("p", "t", kind=kind)


class TestTableDefinitions:
    @pytest.mark.parametrize(
        "table",
        ['x" RENAME TO y;DROP TABLE flow_events CASCADE;--', "a\nb", "tab\x1b[2J"],
        ids=["quote", "newline", "escape"],
    )
    def test_a_name_sql_or_a_terminal_would_misread_is_refused(self, store: EventStore, table: str) -> None:
        append(store, 2)
        with pytest.raises(ProjectionError, match="may not hold a double quote or a control character"):
            CatchUpRunner(store, projection("p", table))
        assert sa.inspect(store.engine).has_table("flow_events") and len(list(store.read_flow("f"))) == 2

    def test_an_odd_but_harmless_name_rebuilds(self, store: EventStore) -> None:
        append(store, 2)
        CatchUpRunner(store, projection("p", "l'été des tâches"))
        assert rebuild(store, projection("p", "l'été des tâches", version=2)).done == 2
        assert rows(store, "l'été des tâches") == 2

    def test_a_table_in_another_schema_is_refused(self) -> None:
        def define_tables(self: Projection, metadata: sa.MetaData) -> None:
            sa.Table("elsewhere", metadata, sa.Column("id", sa.Integer, primary_key=True), schema="rm")

        cls = type("S", (Projection,), {"name": "s", "define_tables": define_tables, "on_E": lambda *a: None})
        with pytest.raises(ProjectionError, match="names the schema 'rm'"):
            cls()

    def test_a_handler_that_is_not_a_function_is_refused(self) -> None:
        with pytest.raises(ProjectionError, match="on_F must be a function \\(a handler\\), not 'nope'"):
            projection("p", "t", on_F="nope")

    def test_a_projection_without_define_tables_is_refused_saying_so(self) -> None:
        """It failed with a bare NotImplementedError, which the CLI showed with no message."""
        cls = type("NoTables", (Projection,), {"name": "no_tables", "on_E": lambda *a: None})
        with pytest.raises(ProjectionError, match=r"'no_tables' \(NoTables\) must define define_tables"):
            cls()


class TestATypeTheDatabaseLacks:
    """A column type the backend has no form of failed as a 'SQLite error' quoting SQLAlchemy's
    compiler ('Compiler <...SQLiteTypeCompiler object at 0x...> can't render ...')."""

    @staticmethod
    def tinyint() -> Projection:
        def define_tables(self: Projection, metadata: sa.MetaData) -> None:
            sa.Table(
                "tiny", metadata, sa.Column("k", sa.BigInteger, primary_key=True), sa.Column("n", TINYINT())
            )

        return projection("tiny", "tiny", define_tables=define_tables)

    def test_it_is_refused_naming_the_column_before_anything_is_built(self, target: Target) -> None:
        message = r"the column 'n' of its table 'tiny' has the type TINYINT\(\), which \w+ has no form of"
        with target.open() as store:
            for first_build in (True, False):
                if not first_build:
                    append(store, 1)
                for make in (
                    lambda: CatchUpRunner(store, self.tinyint()),
                    lambda: rebuild(store, self.tinyint()),
                ):
                    with pytest.raises(ProjectionError, match=message):
                        make()
            assert version_of(store, "tiny") is None
            assert "tiny" not in sa.inspect(store.engine).get_table_names()
        with pytest.raises(ProjectionError, match=message):
            target.open(projections=[self.tinyint()])


class TestAnInitOfItsOwn:
    """An ``__init__`` that forgot super().__init__() failed with AttributeError: '_tables'."""

    @staticmethod
    def forgetful() -> Projection:
        def __init__(self: Projection, currency: str = "EUR") -> None:
            self.currency = currency  # type: ignore[attr-defined]  # the user's own attribute

        return projection("forgetful", "forgetful_t", __init__=__init__)

    def test_a_runner_or_a_rebuild_says_to_call_it(self, store: EventStore) -> None:
        append(store, 1)
        for make in (
            lambda: CatchUpRunner(store, self.forgetful()),
            lambda: rebuild(store, self.forgetful()),
        ):
            with pytest.raises(ProjectionError, match=r"__init__ does not call super\(\).__init__\(\)"):
                make()
        assert version_of(store, "forgetful") is None

    def test_opening_with_it_says_to_call_it(self, target: Target) -> None:
        with pytest.raises(ProjectionError, match=r"__init__ does not call super\(\).__init__\(\)"):
            target.open(projections=[self.forgetful()])


async def async_handler(self: Projection, tx: Transaction, event: RecordedEvent) -> None:
    pass


def generator_apply(self: Projection, tx: Transaction, events: list[RecordedEvent]) -> Iterator[None]:
    yield None


class TestHandlers:
    @pytest.mark.parametrize(
        "attrs",
        [{"on_E": async_handler}, {"apply": generator_apply}, {"apply_many": generator_apply}],
        ids=["async handler", "generator apply", "generator apply_many"],
    )
    def test_async_and_generator_folds_are_refused(self, attrs: dict[str, Any]) -> None:
        with pytest.raises(ProjectionError, match="must be a plain function"):
            projection("p", "t", **attrs)

    def test_a_handler_returning_a_value_fails_the_batch(self, store: EventStore) -> None:
        def on_E(self: Projection, tx: Transaction, event: RecordedEvent) -> object:
            return async_handler(self, tx, event)

        runner = CatchUpRunner(store, projection("p", "t", on_E=on_E))
        append(store, 2)
        with pytest.raises(ProjectionError, match="returned a coroutine"):
            runner.run_once()
        assert runner.position() == 0

    def test_an_inline_apply_returning_a_value_fails_the_append(self, target: Target) -> None:
        def apply(self: Projection, tx: Transaction, events: list[RecordedEvent]) -> object:
            return [tx.connection.execute(self.table("t").insert().values(k=e.position)) for e in events]

        with target.open(projections=[projection("p", "t", apply=apply, kind="inline")]) as store:
            with pytest.raises(ProjectionError, match="returned a list"):
                append(store, 1)
            assert (store.last_position(), rows(store, "t")) == (0, 0)

    def test_an_inline_handler_returning_a_value_fails_the_append(self, target: Target) -> None:
        def on_E(self: Projection, tx: Transaction, event: RecordedEvent) -> object:
            return tx.connection.execute(self.table("t").insert().values(k=event.position))

        with target.open(projections=[projection("p", "t", on_E=on_E, kind="inline")]) as store:
            with pytest.raises(ProjectionError, match="returned a CursorResult"):
                append(store, 1)
            assert (store.last_position(), rows(store, "t")) == (0, 0)


class TestBuiltInNames:
    @pytest.mark.parametrize("name", ["flows", "langgraph"])
    def test_a_built_in_read_models_name_is_refused(self, name: str) -> None:
        with pytest.raises(ProjectionError, match=rf"has the name '{name}', the built-in \w+Projection's"):
            projection(name, "mine", version=99)

    @pytest.mark.parametrize(
        ("table", "message"),
        [
            ("flows", "names the table 'flows', one of the built-in FlowProjection's"),
            ("Sessions", "'sessions' to SQLite, which compares names without case"),
            ("langgraph_writes", "one of the built-in LangGraphProjection's"),
        ],
    )
    def test_a_built_in_read_models_table_is_refused(self, table: str, message: str) -> None:
        """Built first, the projection held the table: the flow read models could never be built."""
        with pytest.raises(ProjectionError, match=re.escape(message)):
            projection("mine", "mine", table)

    def test_a_higher_version_under_the_flow_models_name_never_drops_them(self, target: Target) -> None:
        with target.open(projections=[FlowProjection()]) as store:
            FlowService(store).start_flow("f", controller_id="c", goal="g", owner_session_key="s")
            with pytest.raises(ProjectionError, match="the built-in FlowProjection's"):
                CatchUpRunner(store, projection("flows", "mine", version=99))
            assert FlowQueries(store).flow("f").goal == "g"
        with target.open(projections=[FlowProjection()]) as store:
            assert FlowQueries(store).flow("f").goal == "g"


def test_two_tables_named_alike_but_for_case_are_refused_by_sqlite(target: Target) -> None:
    """SQLite takes them for one table: the build failed with 'table orders already exists'."""
    with target.open() as store:
        for n in (0, 1):  # first built on an empty log, then by a rebuild
            if n:
                append(store, 1)
            built = projection(f"p{n}", f"Orders{n}", f"orders{n}")
            if target.dialect == "postgresql":
                assert CatchUpRunner(store, built).run_once() == 0
            else:
                with pytest.raises(
                    ProjectionError, match=rf"'Orders{n}' and 'orders{n}': one table to SQLite"
                ):
                    CatchUpRunner(store, built)
