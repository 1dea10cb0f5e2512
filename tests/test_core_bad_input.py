"""Bad input on the core API: a clear error from the EventStoreError tree, and nothing written."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from eventstore import (
    Event,
    EventStore,
    InvalidEvent,
    InvalidInput,
    NewEvent,
    StorageError,
    TransactionAborted,
)
from eventstore.housekeeping import backup
from eventstore.retention import hold, list_archives, list_holds, release, restore, run_retention
from eventstore.schema import READ_COLUMNS, flow_events
from eventstore.stats import log_stats
from projections.status import projection_statuses

from .conftest import Target


class TestARefusedAppendAbortsTheUnitOfWork:
    @pytest.mark.parametrize(
        "refused",
        [
            lambda tx: tx.append("b", [NewEvent("T", {"x": float("nan")})]),
            lambda tx: tx.append("", [NewEvent("T", {})]),
            lambda tx: tx.append("b", [NewEvent("T", {})], expected_revision="1"),
        ],
    )
    def test_even_when_the_caller_catches_the_error(
        self, store: EventStore, refused: Callable[[Any], None]
    ) -> None:
        with pytest.raises(TransactionAborted, match="nothing was committed"), store.transaction() as tx:
            tx.append("a", [NewEvent("Debit", {"amount": 100})])
            with pytest.raises((InvalidEvent, InvalidInput)):
                refused(tx)
            with pytest.raises(TransactionAborted, match="earlier append"):
                tx.append("a", [NewEvent("Done", {})])
        assert store.revision("a") == 0 and store.last_position() == 0


class Note(Event):
    body: Any


def _circular() -> dict[str, Any]:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    return loop


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


class TestTypedEventsPydanticCannotSerialise:
    @pytest.mark.parametrize("body", [_circular(), _nested(300)], ids=["circular", "deep"])
    def test_are_invalid_event(self, store: EventStore, body: Any) -> None:
        with pytest.raises(InvalidEvent, match="Note cannot be serialised"):
            store.append("f", [Note(body=body)])
        assert store.last_position() == 0


class TestQueryValuesPastTheirColumn:
    def test_are_invalid_input_on_every_backend(self, store: EventStore) -> None:
        c = flow_events.c
        store.append("f", [NewEvent("T", {})])
        calls = [
            lambda: list(store.read_where(c.position == 2**70)),
            lambda: list(store.read_where(c.revision > 2**64)),
            lambda: store.query(sa.select(c.flow_id).where(c.position == 2**63)),
            lambda: store.query_events(sa.select(*READ_COLUMNS).where(c.position == 2**70)),
        ]
        for call in calls:
            with pytest.raises(InvalidInput, match="out of range for its column"):
                call()
        assert [e.position for e in store.read_where(c.position == 1)] == [1]

    def test_are_invalid_input_in_reads_of_your_own(self, store: EventStore) -> None:
        """On SQLite a bare OverflowError, on PostgreSQL a StorageError, leaked out of ``reading()``."""
        c = flow_events.c
        store.append("f", [NewEvent("T", {})])
        statements = [
            sa.select(c.flow_id).where(c.position == 2**70),
            sa.select(c.flow_id).where(c.revision == 2**63),
            sa.select(sa.cast(sa.literal(2**64, sa.BigInteger), sa.BigInteger)),
        ]
        for statement in statements:
            with pytest.raises(InvalidInput, match="out of range for its column"), store.reading() as conn:
                conn.execute(statement).all()
        with pytest.raises(InvalidInput, match="out of range"), store.transaction() as tx:
            tx.connection.execute(statements[0]).all()
        with store.reading() as conn:
            assert conn.execute(sa.select(c.position).where(c.flow_id == "f")).scalars().all() == [1]

    def test_are_invalid_input_after_another_error_on_the_same_connection(self, store: EventStore) -> None:
        """On SQLite an earlier statement's error was raised again instead ("no such table")."""
        c = flow_events.c
        store.append("f", [NewEvent("T", {})])
        too_big = sa.select(c.flow_id).where(c.position == 2**70)

        def reads() -> None:
            with store.reading() as conn:
                conn.execute(too_big).all()

        def writes() -> None:
            with store.transaction() as tx:
                tx.connection.execute(too_big).all()

        for call in (lambda: store.query(too_big), reads, writes):
            with pytest.raises(StorageError, match="nope"), store.reading() as conn:
                conn.exec_driver_sql("SELECT * FROM nope")
            with pytest.raises(StorageError, match="nope"), store.transaction() as tx:
                tx.connection.exec_driver_sql("SELECT * FROM nope")
            with pytest.raises(InvalidInput, match="out of range for its column"):
                call()


class TestQueryValuesTheDriverCannotBind:
    """On SQLite a lone surrogate leaked as a bare UnicodeEncodeError, or, after another error on the
    connection, was reported as that error ("no such table"); so was a value of a type it cannot bind."""

    def fail_on_both_connections(self, store: EventStore) -> None:
        with pytest.raises(StorageError, match="nope"), store.reading() as conn:
            conn.exec_driver_sql("SELECT * FROM nope")
        with pytest.raises(StorageError, match="nope"), store.transaction() as tx:
            tx.connection.exec_driver_sql("SELECT * FROM nope")

    def test_text_that_is_not_utf8_is_invalid_input(self, store: EventStore) -> None:
        c = flow_events.c
        store.append("f", [NewEvent("T", {})])
        query = sa.select(c.position).where(c.flow_id == sa.bindparam("flow_id"))

        def reads(flow_id: str) -> list[Any]:
            with store.reading() as conn:
                return conn.execute(query, {"flow_id": flow_id}).all()

        def writes(flow_id: str) -> list[Any]:
            with store.transaction() as tx:
                return tx.connection.execute(query, {"flow_id": flow_id}).all()

        for call in (lambda flow_id: store.query(query.params(flow_id=flow_id)), reads, writes):
            assert [tuple(row) for row in call("f")] == [(1,)]  # the statement is prepared
            for earlier_error in (False, True):
                if earlier_error:
                    self.fail_on_both_connections(store)
                with pytest.raises(InvalidInput, match="text must be valid UTF-8"):
                    call("\udc80")

    def test_a_value_of_a_type_the_driver_cannot_bind_is_reported_as_itself(self, store: EventStore) -> None:
        c = flow_events.c
        store.append("f", [NewEvent("T", {})])
        query = sa.select(c.position).where(c.flow_id == sa.bindparam("flow_id", type_=sa.types.NullType()))
        assert [tuple(row) for row in store.query(query.params(flow_id="f"))] == [(1,)]
        self.fail_on_both_connections(store)
        with pytest.raises(StorageError, match="dict") as caught:
            store.query(query.params(flow_id={"a": 1}))
        assert "nope" not in str(caught.value)


def _deep_dict(depth: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    node = root
    for _ in range(depth):
        node["a"] = {}
        node = node["a"]
    return root


class TestErrorMessagesShowABoundedValue:
    def test_a_very_deep_argument_is_invalid_input_not_recursion_error(self, store: EventStore) -> None:
        deep = _deep_dict(10_000)
        calls = [
            lambda: store.append(deep, [NewEvent("T", {})]),
            lambda: store.read_flow(deep),
            lambda: store.revision(deep),
            lambda: store.read_all(limit=deep),
            lambda: store.append("f", [NewEvent("T", {})], expected_revision=deep),
        ]
        for call in calls:
            with pytest.raises(InvalidInput) as raised:
                call()
            assert len(str(raised.value)) < 300
        assert store.last_position() == 0


class TestOpenRefusesClearly:
    @pytest.mark.parametrize(
        "path",
        ["a\x00b.db", "file::memory:?uri=true", "file:memdb?mode=memory&uri=true", "file:m?mode=memory"],
    )
    def test_a_sqlite_url_no_store_can_use(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
    ) -> None:
        monkeypatch.chdir(tmp_path)  # a relative path: a file it made would be seen
        with pytest.raises(InvalidInput, match=r"NUL|in-memory"):
            EventStore.open(f"sqlite:///{path}")
        assert list(tmp_path.iterdir()) == []

    def test_asynchronous_outside_eventstore_aio(self, tmp_path: Path) -> None:
        with pytest.raises(InvalidInput, match=r"AsyncEventStore\.open"):
            EventStore.open(f"sqlite:///{tmp_path / 'a.db'}", asynchronous=True)

    @pytest.mark.parametrize("now", ["2020-01-01T00:00:00Z", date(2020, 1, 1), None, 0])
    def test_a_clock_that_returns_no_datetime(self, target: Target, now: Any) -> None:
        with (
            target.open(clock=lambda: now) as store,
            pytest.raises(InvalidInput, match="check the store's clock"),
        ):
            store.append("f", [NewEvent("T", {})])
        with target.open() as store:
            assert store.last_position() == 0


class TestReadFlowBackwards:
    @pytest.mark.parametrize("backwards", ["no", 1, None])
    def test_must_be_a_bool(self, store: EventStore, backwards: Any) -> None:
        store.append("f", [NewEvent("A", {}), NewEvent("B", {})])
        with pytest.raises(InvalidInput, match="backwards must be True or False"):
            store.read_flow("f", backwards=backwards)


class TestTheOperationsEntryPointsTakeAStore:
    """What the operations guide calls with a store: anything else failed with an AttributeError inside."""

    @pytest.mark.parametrize(
        "call",
        [
            lambda x: run_retention(x, {"finished": 1}, "archives"),
            lambda x: restore(x, "archive"),
            lambda x: list_archives(x),
            lambda x: hold(x, "f", reason="r", by="b"),
            lambda x: release(x, "f", by="b"),
            lambda x: list_holds(x),
            lambda x: backup(x, "copy.db"),
            lambda x: log_stats(x),
            lambda x: projection_statuses(x),
        ],
        ids=["prune", "restore", "archives", "hold", "release", "holds", "backup", "stats", "projections"],
    )
    def test_something_else_is_invalid_input(self, call: Callable[[Any], object]) -> None:
        with pytest.raises(InvalidInput, match=r"store must be an EventStore, not 'sqlite:///x\.db'"):
            call("sqlite:///x.db")
