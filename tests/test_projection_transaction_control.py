"""A handler may not end the transaction it folds in: the log and its read models change together."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import ClassVar

import pytest
import sqlalchemy as sa

from eventstore import EventStore, NewEvent, ProjectionError, ProjectionFailed, RecordedEvent, Transaction
from projections import CatchUpRunner, rebuild

from .conftest import Target
from .test_projection_user_errors import Seen, SeenV2, append, positions


def _swallowed(conn: sa.Connection) -> None:
    with suppress(Exception):  # a handler that hides the refusal is refused all the same
        conn.commit()


ENDINGS: dict[str, Callable[[sa.Connection], object]] = {
    "commit": lambda conn: conn.commit(),
    "rollback": lambda conn: conn.rollback(),
    "COMMIT": lambda conn: conn.exec_driver_sql("COMMIT"),
    " end;": lambda conn: conn.exec_driver_sql(" end;"),
    "ROLLBACK": lambda conn: conn.execute(sa.text("ROLLBACK")),
    "second": lambda conn: conn.exec_driver_sql("SELECT 1; /* then */ commit"),
    "swallowed": _swallowed,
}


class Ending(Seen):
    """Writes its row, then ends the transaction the way the event says."""

    def on_E(self, tx: Transaction, event: RecordedEvent) -> None:
        super().on_E(tx, event)
        if "end" in event.data:
            ENDINGS[event.data["end"]](tx.connection)


class StaysWithin(Seen):
    """Savepoints, and words that only look like the end of a transaction, are its own business."""

    def on_E(self, tx: Transaction, event: RecordedEvent) -> None:
        with tx.connection.begin_nested() as savepoint:
            tx.connection.execute(self.table("seen").insert().values(position=-event.position))
            savepoint.rollback()
        tx.connection.exec_driver_sql("SELECT 'x; COMMIT', 1 AS \"end\" -- ; rollback")
        super().on_E(tx, event)


class EndingV2(Ending):
    version: ClassVar[int] = 2


REFUSED = r"of projection 'seen' failed at .*TransactionEnded: a projection may not end the transaction"


@pytest.mark.parametrize("how", list(ENDINGS))
def test_an_inline_handler_that_ends_the_transaction_is_refused(target: Target, how: str) -> None:
    with target.open(projections=[Ending()]) as store:
        append(store, {})
        with pytest.raises(ProjectionFailed, match=REFUSED):
            append(store, {}, {"end": how})
        assert (store.revision("f"), positions(store)) == (1, [1])
        append(store, {})
        assert (store.revision("f"), positions(store)) == (2, [1, 2])


@pytest.mark.parametrize("how", list(ENDINGS))
def test_a_catch_up_handler_that_ends_the_transaction_writes_nothing(store: EventStore, how: str) -> None:
    runner = CatchUpRunner(store, Ending(), batch_size=10)
    append(store, {}, {"end": how}, {})
    with pytest.raises(ProjectionFailed, match=REFUSED):
        runner.run_once()
    assert (positions(store), runner.position()) == ([], 0)
    fixed = CatchUpRunner(store, Seen(), batch_size=10)
    assert fixed.run_until_caught_up() == 3 and positions(store) == [1, 2, 3]


def test_savepoints_and_lookalikes_in_an_inline_handler_are_allowed(target: Target) -> None:
    with target.open(projections=[StaysWithin()]) as store:
        append(store, {}, {})
        assert positions(store) == [1, 2]


def test_savepoints_and_lookalikes_in_a_catch_up_handler_are_allowed(store: EventStore) -> None:
    runner = CatchUpRunner(store, StaysWithin())
    append(store, {}, {})
    assert runner.run_until_caught_up() == 2 and positions(store) == [1, 2]


def test_a_rebuild_whose_handler_ends_the_transaction_keeps_the_live_tables(store: EventStore) -> None:
    append(store, {})
    CatchUpRunner(store, Seen())
    append(store, {"end": "commit"})
    with pytest.raises(ProjectionFailed, match=REFUSED):
        rebuild(store, EndingV2(), batch_size=1)
    assert positions(store) == [1]
    rebuild(store, SeenV2())
    assert positions(store) == [1, 2]


class EndingOnTheDriver(Seen):
    def on_E(self, tx: Transaction, event: RecordedEvent) -> None:
        super().on_E(tx, event)
        tx.connection.connection.dbapi_connection.commit()  # type: ignore[union-attr]  # round SQLAlchemy on purpose


def test_a_commit_on_the_driver_connection_is_reported_not_passed_over(target: Target) -> None:
    with (
        target.open(projections=[EndingOnTheDriver()]) as store,
        pytest.raises(ProjectionError, match="ended its transaction on the driver's own connection"),
    ):
        append(store, {})


class AppendsThenEnds(Seen):
    """Appends from its handler (a fold within its fold), then commits."""

    def on_E(self, tx: Transaction, event: RecordedEvent) -> None:
        super().on_E(tx, event)
        tx.append("g", [NewEvent("F", {})])
        tx.connection.commit()


def test_a_commit_after_a_handlers_own_append_is_refused_too(target: Target) -> None:
    with target.open(projections=[AppendsThenEnds()]) as store:
        with pytest.raises(ProjectionFailed, match=REFUSED):
            append(store, {})
        assert (store.revision("f"), store.revision("g"), positions(store)) == (0, 0, [])


class CarriesOn(Seen):
    """Swallows a failed insert: SQLite goes on; PostgreSQL has aborted the whole transaction."""

    def on_E(self, tx: Transaction, event: RecordedEvent) -> None:
        with suppress(sa.exc.IntegrityError):
            tx.connection.execute(self.table("seen").insert().values(position=1))


def test_a_handler_carrying_on_after_a_failed_statement_is_told_why(store: EventStore) -> None:
    runner = CatchUpRunner(store, CarriesOn())
    append(store, {}, {})
    if store.dialect == "sqlite":  # the failed statement alone was undone
        assert runner.run_once() == 2 and positions(store) == [1]
        return
    with pytest.raises(ProjectionFailed, match=r"PostgreSQL aborted the transaction.*begin_nested"):
        runner.run_once()
    assert (positions(store), runner.position()) == ([], 0)


def test_an_append_whose_inline_handler_carried_on_is_not_reported_written(target: Target) -> None:
    """PostgreSQL turns the COMMIT of an aborted transaction into a ROLLBACK, without an error:
    the append returned its result as if written, and its events were gone."""
    with target.open(projections=[CarriesOn()]) as store:
        append(store, {})
        if store.dialect == "sqlite":
            append(store, {})
            assert (store.revision("f"), positions(store)) == (2, [1])
            return
        with pytest.raises(ProjectionFailed, match="PostgreSQL aborted the transaction"):
            append(store, {})
        assert (store.revision("f"), positions(store)) == (1, [1])
