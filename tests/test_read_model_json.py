"""A JSON value in a read model reads back as the value that was written, bare numbers included.

SQLite gives a column declared ``JSON`` numeric affinity: the text of a bare
number stored there became a number, so an integer past 2**63 came back as a
float and ``1.0`` as ``1``. A JSON column of a read model is TEXT on SQLite.
"""

from __future__ import annotations

import sqlite3
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa

from eventstore import EventStore, NewEvent, Transaction
from eventstore.flow_fold import view_to_dict
from eventstore.flows import FlowForked
from eventstore.timetravel import state_at
from projections import FlowProjection, FlowQueries, FlowService, Projection
from projections.types import JSON

from .conftest import Target
from .readmodels import assert_matches_rebuild

VALUES = [2**64 - 1, 2**63, -(2**63), 1.0, 0.0, 1e15 + 0.5, 0.30000000000000004, "0012", "1e400", True, None]


def fork_with(store: EventStore, flow_id: str, value: Any) -> None:
    """Start ``flow_id`` as a fork whose flow result and step result and output are ``value``."""
    if store.revision("origin") == 0:
        service = FlowService(store)
        service.start_flow("origin", controller_id="c", goal="g", owner_session_key="s")
        service.schedule_step("origin", step_id="s0", name="tool", run_id="r0", position=0)
    snapshot = view_to_dict(state_at(store, "origin"))
    snapshot["flow"]["result"] = value
    snapshot["steps"]["s0"].update(result=value, output=value)
    *_, origin = store.read_flow("origin")
    forked = FlowForked(
        origin_flow_id="origin", origin_revision=2, origin_hash=origin.hash, snapshot=snapshot
    )
    store.append(flow_id, [forked])


def stored(store: EventStore, flow_id: str) -> list[Any]:
    queries = FlowQueries(store)
    (step,) = queries.steps(flow_id)
    return [queries.flow(flow_id).result, step.result, step.output]


def same(value: Any) -> list[tuple[type, Any]]:
    return [(type(value), value)] * 3


def test_a_bare_json_value_in_a_read_model_reads_back_unchanged(flow_store: EventStore) -> None:
    for i, value in enumerate(VALUES):
        fork_with(flow_store, f"g{i}", value)
    for i, value in enumerate(VALUES):
        assert [(type(v), v) for v in stored(flow_store, f"g{i}")] == same(value), value
    assert_matches_rebuild(flow_store)


class _FlowsOfVersion5(FlowProjection):
    """``FlowProjection`` as version 5 built it: its JSON columns declared ``JSON`` on SQLite."""

    version: ClassVar[int] = 5

    def define_tables(self, metadata: sa.MetaData) -> None:
        super().define_tables(metadata)
        for table in metadata.tables.values():
            for column in table.columns:
                if isinstance(column.type, sa.JSON):
                    column.type = sa.JSON(none_as_null=True)


def test_a_store_whose_flow_tables_version_5_built_is_rebuilt_to_keep_bare_numbers(tmp_path: Any) -> None:
    target = Target(f"sqlite:///{tmp_path / 'events.db'}")
    with target.open(projections=[_FlowsOfVersion5()]) as old:
        fork_with(old, "g", 2**63)
        assert stored(old, "g") == [float(2**63)] * 3  # what version 5's tables did to it
    with target.open(projections=[FlowProjection()]) as store:
        assert [(type(v), v) for v in stored(store, "g")] == same(2**63)
    with sqlite3.connect(tmp_path / "events.db") as conn:
        assert conn.execute("SELECT typeof(result) FROM flows").fetchone() == ("text",)


class _Latest(Projection):
    name: ClassVar[str] = "latest"

    def define_tables(self, metadata: sa.MetaData) -> None:
        sa.Table("latest", metadata, sa.Column("k", sa.String(10), primary_key=True), sa.Column("v", JSON))

    def on_Set(self, tx: Transaction, event: Any) -> None:
        tx.connection.execute(self.table("latest").insert().values(k="k", v=event.data["v"]))


@pytest.mark.parametrize("value", [2**63, 1.0])
def test_a_bare_number_reads_back_from_a_read_model_of_your_own(target: Target, value: Any) -> None:
    projection = _Latest()
    with target.open(projections=[projection]) as store:
        store.append("f", [NewEvent("Set", {"v": value})])
        with store.reading() as conn:
            got = conn.execute(sa.select(projection.table("latest").c.v)).scalar_one()
        assert (type(got), got) == (type(value), value)


def test_query_gives_read_model_values_as_reading_does(flow_store: EventStore) -> None:
    """On SQLite ``store.query`` gave the driver's values: JSON as text, times as naive text, 0 for False."""
    FlowService(flow_store).start_flow(
        "f", controller_id="c", goal="g", owner_session_key="s", state={"n": 1}
    )
    flows = FlowProjection().table("flows")
    query = sa.select(flows.c.state, flows.c.created_at, flows.c.cancel_requested, flows.c.result)
    with flow_store.reading() as conn:
        expected = [tuple(row) for row in conn.execute(query)]
    assert [tuple(row) for row in flow_store.query(query)] == expected
    assert isinstance(expected[0][0], dict) and expected[0][2] is False
