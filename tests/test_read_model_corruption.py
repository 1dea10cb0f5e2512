"""A read-model row edited into garbage (by hand, a bad migration, a backup half restored) is refused on
every read with one ``ReadModelCorrupt`` naming the table, the row, the column and the rebuild to run.

PostgreSQL's typed columns (``jsonb``, ``timestamptz``, ``integer``) refuse most such edits outright:
those cases check that they do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from eventstore import EventStore, ReadModelCorrupt
from eventstore.cli import main
from eventstore.integrations.langgraph import EventStoreSaver
from projections import FlowProjection, FlowQueries, FlowService
from projections.demo import record_refund_flow
from projections.status import projection_statuses

from .conftest import Target
from .test_langgraph_saver import put

REFUSED = (sa.exc.DataError, sa.exc.ProgrammingError)
"""What PostgreSQL raises for a value its column's type cannot hold."""


def edit(store: EventStore, sql: str) -> bool:
    """Run ``sql`` behind the library's back; False if the database refused it (a typed column)."""
    try:
        with store.engine.begin() as conn:
            conn.exec_driver_sql(sql)
    except REFUSED:
        assert store.dialect == "postgresql", "only PostgreSQL's types refuse an edit"
        return False
    return True


@pytest.fixture
def flows(target: Target) -> Iterator[EventStore]:
    with target.open(projections=[FlowProjection()]) as store:
        record_refund_flow(store, "d1")
        yield store


def flow_reads(queries: FlowQueries, table: str) -> list[Callable[[], object]]:
    if table == "flows":
        return [lambda: queries.flow("d1"), lambda: queries.flows(owner="sess-7")]
    if table == "flow_steps":
        return [
            lambda: queries.steps("d1"),
            lambda: queries.step("d1", "lookup"),
            lambda: queries.step_by_run("d1", "d1/lookup"),
            lambda: queries.step_history("d1"),
        ]
    return [lambda: queries.sessions(), lambda: queries.session("sess-7")]


@pytest.mark.parametrize(
    ("table", "key", "column", "value", "what"),
    [
        ("flows", "flow_id='d1'", "state", "'not json'", "JSON"),
        ("flows", "flow_id='d1'", "created_at", "'garbage'", "a time"),
        ("flows", "flow_id='d1'", "created_at", "20240101", "a time"),  # SQLite keeps a number as one
        ("flow_steps", "flow_id='d1', step_id='lookup'", "task", "'{\"oops'", "JSON"),
        ("flow_steps", "flow_id='d1', step_id='lookup'", "finished_at", "'some day'", "a time"),
        ("flow_steps", "flow_id='d1', step_id='lookup'", "finished_at", "1.5", "a time"),
        ("sessions", "session_key='sess-7'", "last_activity_at", "'soon'", "a time"),
    ],
)
def test_a_flow_read_of_a_corrupt_row_says_which_and_to_rebuild(
    flows: EventStore, table: str, key: str, column: str, value: str, what: str
) -> None:
    where = " WHERE step_id = 'lookup'" if table == "flow_steps" else ""
    if not edit(flows, f"UPDATE {table} SET {column} = {value}{where}"):
        return
    message = (
        rf"read model 'flows' is corrupt: table '{table}', row \({key}\), column '{column}' "
        rf"holds {value}, which is not {what}; .* `eventstore rebuild flows`"
    )
    for read in flow_reads(FlowQueries(flows), table):
        with pytest.raises(ReadModelCorrupt, match=message):
            read()


@pytest.mark.parametrize("value", ["'noon'", "5", "X'00'"], ids=["text", "number", "bytes"])
def test_a_command_on_a_flow_whose_row_is_corrupt_is_refused_and_writes_nothing(
    flows: EventStore, target: Target, value: str
) -> None:
    if not edit(flows, f"UPDATE flows SET updated_at = {value}"):
        return
    where = r"table 'flows', row \(flow_id='d1'\), column 'updated_at' holds .*, which is not a time"
    with target.open(projections=[FlowProjection()]) as store:  # another process: it must read the row
        with pytest.raises(ReadModelCorrupt, match=where):
            FlowService(store).record_decision("d1", actor="a", decision="d")
        assert store.revision("d1") == 16


@pytest.fixture
def saver(target: Target) -> Iterator[EventStoreSaver]:
    with EventStoreSaver.from_url(target.url, **target.options) as made:
        first = put(made, "t1", {"a": 1}, {"a": "1"})
        made.put_writes(first, [("a", 5)], "task1")
        put(made, "t1", {"a": 2}, {"a": "2"}, parent=first)
        yield made


CHECKPOINT = r"table 'langgraph_checkpoints', row \(thread_id='t1', checkpoint_ns='', checkpoint_id='[^']+'\)"
BLOB = r"table 'langgraph_blobs', row \(thread_id='t1', checkpoint_ns='', channel='a', version='\d'\)"
WRITE = (
    r"table 'langgraph_writes', row \(thread_id='t1', checkpoint_ns='', checkpoint_id='[^']+', "
    r"task_id='task1', idx=0\)"
)


@pytest.mark.parametrize(
    ("table", "column", "value", "where"),
    [
        (
            "langgraph_checkpoints",
            "checkpoint",
            "'not json'",
            CHECKPOINT + r", column 'checkpoint' .* not JSON",
        ),
        ("langgraph_checkpoints", "checkpoint", "'[1]'", CHECKPOINT + r", column 'checkpoint' holds '\[1\]'"),
        ("langgraph_checkpoints", "checkpoint", """'{"channel_versions": [1]}'""", CHECKPOINT),
        ("langgraph_checkpoints", "metadata", "'not json'", CHECKPOINT + r", column 'metadata' .* not JSON"),
        ("langgraph_blobs", "type", "'bogus'", BLOB + r", column 'blob' .* decode as 'bogus'"),
        ("langgraph_blobs", "blob", "BYTES", BLOB + r", column 'blob' holds b'\\xc1'"),
        ("langgraph_writes", "type", "'bogus'", WRITE + r", column 'blob' .* decode as 'bogus'"),
    ],
)
def test_a_checkpoint_read_of_a_corrupt_row_says_which_and_to_rebuild(
    saver: EventStoreSaver, table: str, column: str, value: str, where: str
) -> None:
    store = saver.store
    value = value.replace("BYTES", "'\\xc1'::bytea" if store.dialect == "postgresql" else "X'c1'")
    if not edit(store, f"UPDATE {table} SET {column} = {value}"):
        return
    message = rf"read model 'langgraph' is corrupt: {where}.* `eventstore rebuild projections.langgraph:Lang"
    reads: list[Callable[[], Any]] = [
        lambda: list(saver.list({"configurable": {"thread_id": "t1"}})),
        lambda: list(saver.list(None, filter={"source": "loop"})),
    ]
    if table != "langgraph_writes":  # the pending writes are the first checkpoint's
        reads.append(lambda: saver.get_tuple({"configurable": {"thread_id": "t1", "checkpoint_ns": ""}}))
    for read in reads:
        with pytest.raises(ReadModelCorrupt, match=message):
            read()


@pytest.mark.parametrize(
    ("column", "value", "what"), [("updated_at", "'garbage'", "a time"), ("version", "'abc'", "an integer")]
)
def test_a_projection_status_read_of_a_corrupt_row_says_which(
    flows: EventStore, column: str, value: str, what: str
) -> None:
    if not edit(flows, f"UPDATE projection_checkpoints SET {column} = {value} WHERE name = 'flows'"):
        return
    message = (
        rf"table 'projection_checkpoints', row \(name='flows'\), column '{column}' holds {value}, "
        rf"which is not {what}; .* `eventstore rebuild flows`"
    )
    with pytest.raises(ReadModelCorrupt, match=message):
        projection_statuses(flows)


def test_the_cli_says_so_in_one_line_and_the_rebuild_it_names_mends_it(
    flows: EventStore, target: Target
) -> None:
    edit(flows, "UPDATE projection_checkpoints SET updated_at = 'garbage'")
    schema = target.options.get("schema")
    prefix = ["--url", target.url, *(["--schema", schema] if schema else [])]
    failed = CliRunner().invoke(main, [*prefix, "projections"])
    assert failed.exit_code == 1
    assert failed.output.startswith("error: read model 'flows' is corrupt: table 'projection_checkpoints'")
    assert failed.output.endswith("rebuild it from the log with `eventstore rebuild flows`\n")
    assert len(failed.output.splitlines()) == 1
    assert CliRunner().invoke(main, [*prefix, "rebuild", "flows"]).exit_code == 0
    assert CliRunner().invoke(main, [*prefix, "projections"]).exit_code == 0
