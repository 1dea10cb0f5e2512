"""A child that still folds two projections while the parent retires them (``test_projection_retire``).

It keeps a ``CatchUpRunner`` of ``AppliedOnce`` and a store opened with
``InlineCount`` inline, both caught up; says "ready"; waits for "go" (the
parent has retired both meanwhile); then tries a batch, an append, and a new
runner, and sends back what each raised, by type name and message. Module-level,
so that it pickles for a ``spawn`` child.
"""

from __future__ import annotations

from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, ClassVar

import sqlalchemy as sa

from eventstore import EventStore, NewEvent, RecordedEvent, Transaction
from projections import CatchUpRunner, Projection

from .kill_workers import AppliedOnce

GO_TIMEOUT = 60.0  # a bound on a parent that never says go, never a clock


class InlineCount(Projection):
    """Counts the events appended through the stores opened with it."""

    name: ClassVar[str] = "inline_count"
    kind: ClassVar[str] = "inline"

    def define_tables(self, metadata: sa.MetaData) -> None:
        sa.Table("inline_count", metadata, sa.Column("position", sa.Integer, primary_key=True))

    def on_Counted(self, tx: Transaction, event: RecordedEvent) -> None:
        tx.connection.execute(self.table("inline_count").insert().values(position=event.position))


def _raised(call: Callable[[], object]) -> tuple[str, str]:
    try:
        call()
    except Exception as exc:  # reported to the parent, which asserts on it
        return type(exc).__name__, str(exc)
    return "nothing", ""


def child(url: str, options: dict[str, Any], signal: Connection) -> None:
    """``still_folding``, its answer (or why it failed, which fails the parent's assertion) sent back."""
    try:
        signal.send(still_folding(url, options, signal))
    except BaseException as exc:
        signal.send(f"{type(exc).__name__}: {exc}")


def still_folding(url: str, options: dict[str, Any], signal: Connection) -> dict[str, tuple[str, str]]:
    with (
        EventStore.open(url, **options) as store,
        EventStore.open(url, **options, projections=[InlineCount()]) as inline,
    ):
        runner = CatchUpRunner(store, AppliedOnce())
        runner.run_until_caught_up()
        inline.append("counted", [NewEvent("Counted", {})])
        signal.send("ready")
        if not signal.poll(GO_TIMEOUT) or signal.recv() != "go":
            raise AssertionError("the parent never said go")
        return {
            "run_once": _raised(runner.run_once),
            "append": _raised(lambda: inline.append("counted", [NewEvent("Counted", {})])),
            "new_runner": _raised(lambda: CatchUpRunner(store, AppliedOnce())),
        }
