"""Reading flows and the global log."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from freezegun import freeze_time

from eventstore import EventStore, NewEvent, StorageError, StoreClosed
from eventstore.schema import READ_COLUMNS, flow_events

from .conftest import Target


def fill(store: EventStore, flow_id: str, count: int) -> None:
    store.append(flow_id, [NewEvent("T", {"i": i}) for i in range(count)])


class TestReadFlow:
    def test_reads_in_revision_order_with_every_field(self, store: EventStore) -> None:
        store.append("f", [NewEvent("A", {"k": "v"})], metadata={"actor": "agent:kate"})
        (event,) = store.read_flow("f")
        assert (event.flow_id, event.revision, event.position, event.type) == ("f", 1, 1, "A")
        assert event.data == {"k": "v"}
        assert event.metadata == {"actor": "agent:kate"}
        assert event.schema_version == 1
        assert event.recorded_at.tzinfo is not None
        assert len(event.hash) == 64 and event.prev_hash == "0" * 64

    def test_range_and_limit(self, store: EventStore) -> None:
        fill(store, "f", 10)
        assert [e.revision for e in store.read_flow("f", from_revision=3, to_revision=6)] == [3, 4, 5, 6]
        assert [e.revision for e in store.read_flow("f", from_revision=8, limit=5)] == [8, 9, 10]

    def test_backwards(self, store: EventStore) -> None:
        fill(store, "f", 5)
        assert [e.revision for e in store.read_flow("f", backwards=True)] == [5, 4, 3, 2, 1]
        assert [e.revision for e in store.read_flow("f", backwards=True, from_revision=2, to_revision=4)] == [
            4,
            3,
            2,
        ]
        assert [e.revision for e in store.read_flow("f", backwards=True, limit=2)] == [5, 4]

    def test_pages_through_long_flows(self, store: EventStore) -> None:
        store.page_size = 7
        fill(store, "f", 50)
        assert [e.revision for e in store.read_flow("f")] == list(range(1, 51))
        assert [e.revision for e in store.read_flow("f", backwards=True)] == list(range(50, 0, -1))
        assert len(list(store.read_flow("f", limit=15))) == 15

    def test_missing_flow_reads_empty(self, store: EventStore) -> None:
        assert list(store.read_flow("nope")) == []
        assert store.revision("nope") == 0


class TestReadAll:
    def test_global_order_across_flows(self, store: EventStore) -> None:
        store.append("a", [NewEvent("A", {})])
        store.append("b", [NewEvent("B", {}), NewEvent("C", {})])
        store.append("a", [NewEvent("D", {})])
        assert [(e.position, e.flow_id, e.type) for e in store.read_all()] == [
            (1, "a", "A"),
            (2, "b", "B"),
            (3, "b", "C"),
            (4, "a", "D"),
        ]

    def test_after_position_limit_and_types(self, store: EventStore) -> None:
        store.page_size = 3
        for i in range(10):
            store.append(f"f{i % 3}", [NewEvent("Even" if i % 2 == 0 else "Odd", {"i": i})])
        assert [e.position for e in store.read_all(after_position=7)] == [8, 9, 10]
        assert [e.position for e in store.read_all(after_position=2, limit=4)] == [3, 4, 5, 6]
        assert [e.data["i"] for e in store.read_all(types=["Odd"])] == [1, 3, 5, 7, 9]
        assert [e.data["i"] for e in store.read_all(types="Even", after_position=5)] == [6, 8]

    def test_types_past_a_statements_parameters(self, store: EventStore) -> None:
        store.page_size = 2
        store.append("f", [NewEvent("A", {}), NewEvent("B", {}), NewEvent("A", {}), NewEvent("A", {})])
        many = [f"T{n}" for n in range(2**16)]  # PostgreSQL binds at most 65535 parameters
        assert [e.position for e in store.read_all(types=[*many, "A"])] == [1, 3, 4]
        assert [e.position for e in store.read_all(types=[*many, "A"], after_position=1, limit=1)] == [3]
        assert list(store.read_all(types=many)) == []

    def test_streams_page_by_page(self, store: EventStore) -> None:
        store.page_size = 2
        fill(store, "f", 5)
        iterator = store.read_all()
        assert next(iterator).position == 1
        store.append("g", [NewEvent("Late", {})])
        assert [e.position for e in iterator][-1] == 6


class TestQueriesOfYourOwn:
    def test_read_where_pages_by_position(self, store: EventStore) -> None:
        for n in range(5):
            store.append(f"f{n}", [NewEvent("T", {"n": n}), NewEvent("U", {"n": n})])
        store.page_size = 2  # several keyset pages
        c = flow_events.c
        found = store.read_where(c.type == "U", c.flow_id != "f2", after_position=2, limit=3)
        assert [(e.flow_id, e.type) for e in found] == [("f1", "U"), ("f3", "U"), ("f4", "U")]

    def test_query_and_query_events(self, store: EventStore) -> None:
        fill(store, "f", 3)
        c = flow_events.c
        (count,) = store.query(sa.select(sa.func.count()).where(c.flow_id == "f"))
        assert tuple(count) == (3,)
        (event,) = store.query_events(sa.select(*READ_COLUMNS).where(c.revision == 2))
        assert (event.flow_id, event.revision, event.data) == ("f", 2, {"i": 1})

    def test_errors_are_the_stores(self, store: EventStore) -> None:
        with pytest.raises(StorageError), store.reading() as conn:
            conn.exec_driver_sql("SELECT no_such_column FROM flow_events")
        with pytest.raises(StorageError):
            store.query(sa.select(sa.text("no_such_column")).select_from(flow_events))
        store.close()
        with pytest.raises(StoreClosed), store.reading():
            pass


class TestFlows:
    def test_lists_flow_ids_in_order_with_pagination(self, store: EventStore) -> None:
        store.page_size = 2
        for name in ["c", "a", "b", "d", "e"]:
            fill(store, name, 2)
        assert list(store.flows()) == ["a", "b", "c", "d", "e"]
        assert list(store.flows(after="b", limit=2)) == ["c", "d"]


class TestClock:
    def test_recorded_at_comes_from_the_injected_clock(self, target: Target) -> None:
        moment = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
        with target.open(clock=lambda: moment) as store:
            store.append("f", [NewEvent("A", {})])
            assert next(store.read_flow("f")).recorded_at == moment
            assert store.verify().ok

    def test_freezegun_controls_the_default_clock(self, store: EventStore) -> None:
        with freeze_time("2031-05-06 07:08:09.123456"):
            store.append("f", [NewEvent("A", {})])
        assert next(store.read_flow("f")).recorded_at == datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


class TestReadForFold:
    def test_flows_come_whole_and_in_revision_order(self, store: EventStore) -> None:
        store.page_size = 3  # flows span pages
        for round_ in range(3):
            for flow_id in ("b", "a", "c"):
                store.append(flow_id, [NewEvent("T", {"round": round_, "flow": flow_id})])
        rows = list(store.read_for_fold())
        assert [(r.flow_id, r.revision) for r in rows] == [(f, r) for f in "abc" for r in (1, 2, 3)]
        assert rows[0].data == {"round": 0, "flow": "a"} and rows[0].type == "T"
        assert rows[0].recorded_at == next(iter(store.read_flow("a"))).recorded_at

    def test_up_to_position_leaves_later_events_out(self, store: EventStore) -> None:
        fill(store, "a", 2)
        fill(store, "b", 2)
        fill(store, "a", 1)
        assert [(r.flow_id, r.revision) for r in store.read_for_fold(up_to_position=4)] == [
            ("a", 1),
            ("a", 2),
            ("b", 1),
            ("b", 2),
        ]

    def test_one_flows_range(self, store: EventStore) -> None:
        fill(store, "a", 5)
        fill(store, "b", 2)
        rows = list(store.read_for_fold(flow_id="a", from_revision=2, to_revision=4))
        assert [(r.flow_id, r.revision, r.data["i"]) for r in rows] == [("a", 2, 1), ("a", 3, 2), ("a", 4, 3)]
