"""An inline projection at two versions, and a child process that folds with the older one.

Module-level, so that spawned children import them (``tests.workers``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import sqlalchemy as sa

from eventstore import EventStore, NewEvent, RecordedEvent, Transaction
from eventstore.errors import ProjectionError
from projections import Projection


class Tally(Projection):
    """Version 1 counts each ``Counted`` event once per flow."""

    name: ClassVar[str] = "tally"
    version: ClassVar[int] = 1
    kind: ClassVar[str] = "inline"
    weight: ClassVar[int] = 1

    def define_tables(self, metadata: sa.MetaData) -> None:
        sa.Table(
            "tally",
            metadata,
            sa.Column("flow_id", sa.String(200), primary_key=True),
            sa.Column("total", sa.Integer, nullable=False),
        )

    def on_Counted(self, tx: Transaction, event: RecordedEvent) -> None:
        table = self.table("tally")
        bumped = tx.connection.execute(
            table.update().where(table.c.flow_id == event.flow_id).values(total=table.c.total + self.weight)
        )
        if bumped.rowcount == 0:
            tx.connection.execute(table.insert().values(flow_id=event.flow_id, total=self.weight))


class TallyV2(Tally):
    """Version 2 counts each ``Counted`` event ten times: a fold of version 1 shows in the totals."""

    version: ClassVar[int] = 2
    weight: ClassVar[int] = 10


def totals(store: EventStore) -> dict[str, int]:
    table = Tally().table("tally")
    with store.engine.connect() as conn:
        return {row.flow_id: row.total for row in conn.execute(sa.select(table))}


def count(store: EventStore, flow_id: str) -> None:
    store.append(flow_id, [NewEvent("Counted", {})])


def count_until_refused(url: str, options: dict[str, Any], flow_id: str, counting: Any) -> tuple[int, str]:
    """Append ``Counted`` events folded by version 1 until the store refuses to fold them.

    Sets ``counting`` after the first append; returns the appends accepted and the refusal.
    """
    accepted = 0
    with EventStore.open(url, projections=[Tally()], **options) as store:
        while accepted < 100_000:
            try:
                count(store, flow_id)
            except ProjectionError as exc:
                return accepted, str(exc)
            accepted += 1
            counting.set()
    raise AssertionError("version 2's swap never stopped the older process")
