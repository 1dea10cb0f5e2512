"""The store's reads compile each shape of statement once, and every call binds its own values."""

from __future__ import annotations

import sqlalchemy as sa

from eventstore import EventStore, NewEvent, statements
from eventstore.schema import READ_COLUMNS, flow_events

from .conftest import Target

_c = flow_events.c


def _fill(store: EventStore) -> None:
    for name in ("a", "b", "c", "d"):
        store.append(
            name, [NewEvent("Seen", {"n": name}), NewEvent("Seen", {"n": name * 2})], expected_revision=0
        )


def _shapes(store: EventStore) -> int:
    return len(statements._caches.get(store.engine.dialect, {}))


class TestCompiledOnce:
    def test_one_shape_read_with_other_values_is_compiled_once_and_answers_each(
        self, store: EventStore
    ) -> None:
        _fill(store)
        store.read_flow("a")  # the store's own first reads are compiled now
        before = _shapes(store)
        for name in ("a", "b", "c"):
            query = sa.select(*READ_COLUMNS).where(_c.flow_id == name, _c.revision == 2)
            assert [event.data["n"] for event in store.query_events(query)] == [name * 2]
        assert _shapes(store) == before + 1

    def test_in_lists_of_any_length_bind_their_own_values(self, store: EventStore) -> None:
        _fill(store)
        for names in (["a"], ["b", "d"], ["a", "b", "c", "d"], ["c"]):
            query = sa.select(*READ_COLUMNS).where(_c.flow_id.in_(names), _c.revision == 1)
            assert [event.flow_id for event in store.query_events(query)] == names

    def test_paged_reads_bind_each_page_cursor(self, store: EventStore) -> None:
        _fill(store)
        read = list(store.read_where(_c.type == "Seen", limit=None))
        assert [event.position for event in read] == list(range(1, 9))

    def test_the_cache_keeps_no_more_than_its_bound_of_shapes(self, store: EventStore) -> None:
        _fill(store)
        for extra in range(statements._SHAPES + 20):  # each a shape of its own: the literal is in the SQL
            found = store.read_where(_c.flow_id == "a", sa.literal_column(str(extra)) >= 0)
            assert [event.revision for event in found] == [1, 2]
        assert _shapes(store) <= statements._SHAPES


def test_a_bind_whose_name_the_driver_cannot_take_binds_each_calls_value(pg_target: Target) -> None:
    """psycopg's names are escaped ("flow.id"): each call bound the first call's value."""
    with pg_target.open() as store:
        _fill(store)
        for name in ("a", "b", "c"):
            flow = _c.flow_id == sa.bindparam("flow.id", name)
            query = sa.select(*READ_COLUMNS).where(flow, _c.revision == 1)
            assert [event.flow_id for event in store.query_events(query)] == [name]
            assert [event.flow_id for event in store.read_where(flow)] == [name, name]
