"""A projection whose columns use a named type (an enum: a type of its own on PostgreSQL)."""

from __future__ import annotations

from typing import ClassVar

import sqlalchemy as sa

from eventstore import EventStore, RecordedEvent, Transaction
from projections import CatchUpRunner, Projection, rebuild

from .conftest import Target
from .test_projections import decide


class LastDecision(Projection):
    """Each actor's last decision, in an enum column."""

    name: ClassVar[str] = "last_decision"

    def define_tables(self, metadata: sa.MetaData) -> None:
        decision = sa.Enum("go", "stop", name="last_decision_kind")
        sa.Table(
            "last_decision",
            metadata,
            sa.Column("actor", sa.String(200), primary_key=True),
            sa.Column("decision", decision, nullable=False),
        )

    def on_DecisionRecorded(self, tx: Transaction, event: RecordedEvent) -> None:
        table = self.table("last_decision")
        tx.connection.execute(table.delete().where(table.c.actor == event.data["actor"]))
        tx.connection.execute(
            table.insert().values(actor=event.data["actor"], decision=event.data["decision"])
        )


class LastDecisionV2(LastDecision):
    version: ClassVar[int] = 2


def decisions(store: EventStore) -> dict[str, str]:
    table = LastDecision().table("last_decision")
    with store.engine.connect() as conn:
        return {row.actor: row.decision for row in conn.execute(sa.select(table))}


def test_an_enum_column_is_built_from_a_log_with_events_and_rebuilt(target: Target) -> None:
    """On PostgreSQL the first build from the log, and every rebuild, failed: 'type
    "last_decision_kind" does not exist' (the fresh tables' CREATE TABLE does not make it)."""
    with target.open() as store:
        decide(store, "a", 2)
        runner = CatchUpRunner(store, LastDecision())  # built by a rebuild: the log has events
        assert decisions(store) == {"a": "go"}
        assert rebuild(store, LastDecision()).done == 2
        decide(store, "b")
        assert runner.run_until_caught_up() == 1
        assert CatchUpRunner(store, LastDecisionV2()).position() == 3
        assert decisions(store) == {"a": "go", "b": "go"}
