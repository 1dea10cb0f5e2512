"""Who an audited event is by: one rule (the first actor field that is a string) in SQL and Python."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.schema import CreateIndex

from eventstore import EventStore, InvalidEvent, NewEvent
from eventstore.audit import audit_trail
from eventstore.migrate import _config, upgrade
from eventstore.schema import flow_events

from .conftest import Target

# (type, data, metadata, who): data actor/by that are not strings are skipped for the next field.
EVENTS: list[tuple[str, dict[str, Any], dict[str, Any], str | None]] = [
    ("DecisionRecorded", {"actor": 5, "decision": "refund"}, {"actor": "human:ann"}, "human:ann"),
    ("DecisionRecorded", {"actor": True, "by": "human:bob"}, {}, "human:bob"),
    ("GateApproved", {"by": {"name": "eve"}, "step_id": "s"}, {"actor": "agent:bot"}, "agent:bot"),
    ("GateRejected", {"by": ["eve"], "step_id": "s"}, {}, None),
    ("StepFailed", {"actor": None, "by": 1.5, "error": "x"}, {}, None),
    ("FlowFailed", {"actor": "", "error": "x"}, {"actor": "agent:bot"}, ""),
    ("DecisionRecorded", {"actor": "5", "decision": "retry"}, {}, "5"),
]
# What each backend or str() made of the values above before.
PROBES = ["human:ann", "human:bob", "agent:bot", "5", "1", "1.5", "True", "true", "['eve']", "eve"]

ACTOR_INDEX = "ix_flow_events_audit_actor"


@pytest.fixture
def written(store: EventStore) -> EventStore:
    for type_, data, metadata, _ in EVENTS:
        store.append("f", [NewEvent(type_, data)], metadata=metadata)
    return store


class TestActorRule:
    def test_entries_name_the_first_actor_field_that_is_a_string(self, written: EventStore) -> None:
        assert [entry.actor for entry in audit_trail(written)] == [who for *_, who in EVENTS]

    @pytest.mark.parametrize("probe", PROBES)
    def test_the_filter_finds_exactly_the_entries_with_that_actor(
        self, written: EventStore, probe: str
    ) -> None:
        found = [entry.position for entry in audit_trail(written, actor=probe)]
        assert found == [entry.position for entry in audit_trail(written) if entry.actor == probe]

    def test_a_string_beside_a_non_string_actor_is_found(self, written: EventStore) -> None:
        assert [e.type for e in audit_trail(written, actor="human:ann")] == ["DecisionRecorded"]
        assert [e.type for e in audit_trail(written, actor="agent:bot")] == ["GateApproved"]  # "" is a string


class TestReservedMetadata:
    @pytest.mark.parametrize("key", ["actor", "causation_id", "correlation_id"])
    @pytest.mark.parametrize("value", [5, True, 1.5, ["a"], {"id": "a"}])
    def test_a_non_string_is_refused_and_nothing_written(
        self, store: EventStore, key: str, value: Any
    ) -> None:
        store.append("f", [NewEvent("A", {})])
        with pytest.raises(InvalidEvent, match=f"metadata '{key}' must be a string"):
            store.append("f", [NewEvent("A", {})], metadata={key: value})
        with pytest.raises(InvalidEvent, match=f"metadata '{key}' must be a string"):
            store.append("f", [NewEvent("A", {}), NewEvent("A", {}, metadata={key: value})])
        assert store.revision("f") == 1

    def test_strings_and_none_are_accepted(self, store: EventStore) -> None:
        meta = {"actor": "a", "causation_id": "c", "correlation_id": None}
        store.append("f", [NewEvent("A", {}, metadata={"actor": None})], metadata=meta)
        assert store.revision("f") == 1


class TestActorIndex:
    """Migration 0010 rebuilds the index as eventstore/schema.py defines it, and back."""

    def test_migrated_index_is_the_schemas(self, target: Target) -> None:
        (index,) = [i for i in flow_events.indexes if i.name == ACTOR_INDEX]
        with target.open() as store, store.engine.connect() as conn:
            migrated = _definition(conn)
            conn.exec_driver_sql(
                str(CreateIndex(index).compile(dialect=conn.dialect)).replace(ACTOR_INDEX, "ix_x")
            )
            assert _definition(conn, "ix_x").replace("ix_x", ACTOR_INDEX) == migrated
            conn.exec_driver_sql("DROP INDEX ix_x")
            command.downgrade(_config(conn), "0009")
            assert "json_type" not in _definition(conn) and "jsonb_typeof" not in _definition(conn)
            upgrade(conn)
            assert _definition(conn) == migrated


def _definition(conn: sa.Connection, name: str = ACTOR_INDEX) -> str:
    """The index's DDL as the database keeps it."""
    if conn.dialect.name == "sqlite":
        query = "SELECT sql FROM sqlite_master WHERE name = ?"
    else:
        query = "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND indexname = %s"
    text: str = conn.exec_driver_sql(query, (name,)).scalar_one()
    return text
