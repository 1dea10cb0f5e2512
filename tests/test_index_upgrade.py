"""An index a projection declares after a store was built is added as the store opens: no rebuild."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from eventstore.integrations.langgraph import EventStoreSaver
from projections import FlowQueries, FlowService
from projections.checkpoints import read_checkpoint
from projections.flows import FlowProjection
from tests.conftest import Target
from tests.test_langgraph_saver import put

ADDED = [
    ("flows", "flows", "ix_flows_interrupted"),
    ("langgraph", "langgraph_checkpoints", "ix_langgraph_checkpoints_thread"),
]


def indexes(target: Target, table: str) -> set[str]:
    with target.open() as store, store.reading() as conn:
        return {str(index["name"]) for index in sa.inspect(conn).get_indexes(table)}


def build_of(target: Target, projection: str) -> str:
    with target.open() as store, store.reading() as conn:
        found = read_checkpoint(conn, projection)
        assert found is not None
        return found.build


def drop(target: Target, name: str) -> None:
    """The store as code from before the index was declared built it."""
    with target.open() as store, store.transaction() as tx:
        tx.connection.exec_driver_sql(f"DROP INDEX {name}")


def record(target: Target) -> None:
    with target.open(projections=[FlowProjection()]) as store:
        FlowService(store).start_flow("f", controller_id="c", goal="g", owner_session_key="s")
    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        put(saver, "t", {"a": 1}, {"a": "1.0"})


def reopen(target: Target) -> None:
    with target.open(projections=[FlowProjection()]) as store:
        assert FlowQueries(store).flow("f").flow_id == "f"
    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        assert saver.get_tuple({"configurable": {"thread_id": "t", "checkpoint_ns": ""}}) is not None


@pytest.mark.parametrize(("projection", "table", "index"), ADDED)
def test_an_index_declared_later_is_added_as_the_store_opens(
    target: Target, projection: str, table: str, index: str
) -> None:
    record(target)
    build = build_of(target, projection)
    tagged = f"{index}_{build}"
    assert tagged in indexes(target, table)  # a fresh store has it
    drop(target, tagged)
    reopen(target)
    assert tagged in indexes(target, table)
    assert build_of(target, projection) == build  # added in place: the read model was not rebuilt


def test_processes_opening_at_once_add_it_once(target: Target) -> None:
    """One builds it (PostgreSQL: concurrently, the others open without waiting); none fails."""
    record(target)
    build = build_of(target, "flows")
    drop(target, f"ix_flows_interrupted_{build}")
    barrier, failures = threading.Barrier(4), []

    def opener() -> None:
        try:
            barrier.wait()
            with target.open(projections=[FlowProjection()]) as store:
                assert FlowQueries(store).flow("f").flow_id == "f"
        except BaseException as failure:  # reported below, with the thread's
            failures.append(failure)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    assert f"ix_flows_interrupted_{build}" in indexes(target, "flows")
    assert build_of(target, "flows") == build
