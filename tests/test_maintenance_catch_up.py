"""The catch-up job: each catch-up projection advances on its own, whatever another's handler does."""

from __future__ import annotations

from typing import ClassVar

import orjson
import sqlalchemy as sa
from click.testing import CliRunner

from eventstore import EventStore, NewEvent, RecordedEvent, Transaction
from eventstore.cli import main
from eventstore.maintenance import Maintenance
from projections import CatchUpRunner, Projection

from .conftest import Target


class Seen(Projection):
    name: ClassVar[str] = "seen"

    def define_tables(self, metadata: sa.MetaData) -> None:
        sa.Table(f"{self.name}_t", metadata, sa.Column("position", sa.BigInteger, primary_key=True))

    def on_E(self, tx: Transaction, event: RecordedEvent) -> None:
        tx.connection.execute(self.table(f"{self.name}_t").insert().values(position=event.position))


class Failing(Seen):
    """Fails at the log's third event: a handler bug."""

    name: ClassVar[str] = "failing"

    def on_E(self, tx: Transaction, event: RecordedEvent) -> None:
        if event.position == 3:
            raise KeyError("rationale")
        super().on_E(tx, event)


def built_then_appended(store: EventStore, count: int) -> None:
    """Both read models built on the empty log, then ``count`` events for them to catch up."""
    CatchUpRunner(store, Failing())
    CatchUpRunner(store, Seen())
    for _ in range(count):
        store.append("f", [NewEvent("E", {})])


class TestOneFailingProjection:
    def test_does_not_hold_back_those_after_it(self, store: EventStore) -> None:
        built_then_appended(store, 5)
        result = Maintenance(store, catch_up=[Failing(), Seen()]).run_once("catch-up")
        assert result.status == "failed"
        assert result.error is not None
        assert result.error.startswith("1 of 2 catch-up projections failed: 'failing': ProjectionFailed: ")
        assert result.details["applied"] == {"failing": 0, "seen": 5}
        assert list(result.details["failed"]) == ["failing"]
        assert CatchUpRunner(store, Seen()).position() == 5

    def test_keeps_its_own_batches_applied_before_the_failing_one(self, store: EventStore) -> None:
        built_then_appended(store, 5)
        CatchUpRunner(store, Failing(), batch_size=1).run_once()
        service = Maintenance(store, catch_up=[Failing()])
        assert service.run_once("catch-up").status == "failed"
        assert CatchUpRunner(store, Failing()).position() == 1

    def test_the_cli_exits_non_zero_and_its_status_says_which(self, target: Target) -> None:
        with target.open() as store:
            built_then_appended(store, 5)
        schema = target.options.get("schema")
        store_args = ["--url", target.url, *(["--schema", schema] if schema else [])]
        specs = ["--catch-up", f"{__name__}:Failing", "--catch-up", f"{__name__}:Seen"]
        once = CliRunner().invoke(main, [*store_args, "maintain", "--once", "catch-up", *specs, "--json"])
        assert once.exit_code == 1, once.output
        line = orjson.loads(once.stdout)
        assert (line["status"], line["applied"]) == ("failed", {"failing": 0, "seen": 5})
        status = CliRunner().invoke(main, [*store_args, "maintain", "--status", *specs])
        assert status.exit_code == 0, status.output
        assert "error: 1 of 2 catch-up projections failed: 'failing': ProjectionFailed: " in status.stdout
        with target.open() as store:
            assert CatchUpRunner(store, Seen()).position() == 5
