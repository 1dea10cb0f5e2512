"""SIGKILL at a random moment: a child runs one operation, the parent kills it part way.

``kill_during(entry, args, delay)`` starts ``entry(*args, signal)`` in a
``spawn`` child (a store of its own, as another program would open it). The
child sends "ready" just before the operation under test begins and "done"
once it returned; the parent kills it ``delay`` seconds after "ready", or
lets it finish if it is done first. Entry points are module-level so they
pickle; the projection the catch-up tests count with lives here for the same
reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa

from eventstore import EventStore, RecordedEvent, Transaction
from eventstore.exchange import import_events
from eventstore.exportfile import Progress
from eventstore.retention import restore
from projections import CatchUpRunner, FlowProjection, Projection, rebuild

from .workers import SPAWN

CHILD_TIMEOUT = 60.0  # a bound on a child that hangs, never a clock


def kill_during(
    entry: Callable[..., None],
    args: tuple[Any, ...],
    delay: float,
    *,
    after_steps: int = 0,
    paced: bool = False,
) -> bool:
    """Run ``entry`` in a child and SIGKILL it ``delay`` s after it is ready (and, with ``after_steps``,
    has reported that many of its steps done); True if it finished first.

    ``paced``: the child waits for a "go" before each step (``wait_for_go``), and the parent gives
    one more than ``after_steps``: the kill lands in that step or right after it, never after
    the child ran ahead while the parent was slow to read its messages (a loaded machine)."""
    return _run(entry, args, delay, after_steps, paced=paced) is not None


def operation_time(entry: Callable[..., None], args: tuple[Any, ...]) -> float:
    """How long the operation takes from "ready" to "done" when nobody kills it (it must finish):
    the window a test draws its kill delays from, measured on the machine that runs it."""
    took = _run(entry, args, CHILD_TIMEOUT)
    assert took is not None, "the unkilled child did not finish"
    return took


def _run(
    entry: Callable[..., None],
    args: tuple[Any, ...],
    delay: float,
    after_steps: int = 0,
    *,
    paced: bool = False,
) -> float | None:
    """Seconds from "ready" to "done" if the child finished within ``delay`` of "ready" (of its
    ``after_steps``-th "step" message, if any), else None (killed then). A child may send "step"
    after each part of its operation; ``after_steps`` makes the kill land part way through, and
    ``paced`` gives the child a "go" for each step (``kill_during``)."""
    reader, child_end = SPAWN.Pipe()
    child = SPAWN.Process(target=entry, args=(*args, child_end), daemon=True)
    child.start()
    child_end.close()
    try:
        assert reader.poll(CHILD_TIMEOUT), "the child did not get ready in time; see its stderr"
        assert reader.recv() == "ready"
        for _ in range(after_steps):
            if paced:
                reader.send("go")
            assert reader.poll(CHILD_TIMEOUT), "the child did not report its steps in time; see its stderr"
            assert reader.recv() == "step", "the child finished before the steps it was to report"
        if paced:
            reader.send("go")  # the step the kill is for; the next waits for a "go" that never comes
        ready = time.monotonic()
        while True:
            left = ready + delay - time.monotonic()
            if left <= 0 or not reader.poll(left):  # where to kill the child, not a wait for a clock
                return None
            message = reader.recv()
            if message == "done":
                return time.monotonic() - ready
            assert message == "step", "the child failed; see its stderr"
    except EOFError:
        raise AssertionError(f"the child died ({child.exitcode}) on its own; see its stderr") from None
    finally:
        child.kill()
        child.join(CHILD_TIMEOUT)
        reader.close()


# -- a projection that shows a double apply ------------------------------------------
class AppliedOnce(Projection):
    """Counts, per event, how many times it was folded: every count must be 1."""

    name: ClassVar[str] = "applied_once"
    version: ClassVar[int] = 1

    def define_tables(self, metadata: sa.MetaData) -> None:
        sa.Table(
            "applied_once",
            metadata,
            sa.Column("position", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("applied", sa.Integer, nullable=False),
        )

    def apply(self, tx: Transaction, events: Sequence[RecordedEvent]) -> None:
        table = self.table("applied_once")
        for event in events:
            bumped = tx.connection.execute(
                table.update().where(table.c.position == event.position).values(applied=table.c.applied + 1)
            )
            if bumped.rowcount == 0:
                tx.connection.execute(table.insert().values(position=event.position, applied=1))


class AppliedOnceTelling(AppliedOnce):
    """``AppliedOnce`` that sends "ready" as it folds its first events: a kill then lands in the build."""

    telling: ClassVar[Connection | None] = None

    def apply(self, tx: Transaction, events: Sequence[RecordedEvent]) -> None:
        told, AppliedOnceTelling.telling = AppliedOnceTelling.telling, None
        if told is not None:
            told.send("ready")
        super().apply(tx, events)


def applied_counts(store: EventStore, projection: Projection) -> dict[int, int]:
    table = projection.table("applied_once")
    with store.engine.connect() as conn:
        return {row.position: row.applied for row in conn.execute(sa.select(table))}


# -- children --------------------------------------------------------------------------
def catch_up(url: str, options: dict[str, Any], batch_size: int, signal: Connection) -> None:
    with EventStore.open(url, **options) as store:
        runner = CatchUpRunner(store, AppliedOnce(), batch_size=batch_size)
        signal.send("ready")
        runner.run_until_caught_up()
    signal.send("done")


def catch_up_from_scratch(url: str, options: dict[str, Any], batch_size: int, signal: Connection) -> None:
    """A first runner on a log with events: making it rebuilds the projection's tables."""
    with EventStore.open(url, **options) as store:
        signal.send("ready")
        CatchUpRunner(store, AppliedOnce(), batch_size=batch_size).run_until_caught_up()
    signal.send("done")


def build_for_catch_up(url: str, options: dict[str, Any], signal: Connection) -> None:
    """A first runner on a log with events; ready once its build (a rebuild) folds its first events."""
    AppliedOnceTelling.telling = signal
    with EventStore.open(url, **options) as store:
        CatchUpRunner(store, AppliedOnceTelling())
    signal.send("done")


def catch_up_at(url: str, options: dict[str, Any], moment: str, batch_size: int, signal: Connection) -> None:
    """``catch_up_from_scratch`` with the store's clock stopped at ``moment`` (ISO): a lease held
    then never runs out."""
    stopped = datetime.fromisoformat(moment)
    with EventStore.open(url, **options, clock=lambda: stopped) as store:
        signal.send("ready")
        CatchUpRunner(store, AppliedOnce(), batch_size=batch_size).run_until_caught_up()
    signal.send("done")


def import_file(url: str, options: dict[str, Any], path: str, batch_size: int, signal: Connection) -> None:
    with EventStore.open(url, **options) as store:
        signal.send("ready")
        import_events(store, path, batch_size=batch_size)
    signal.send("done")


def restore_archive(
    url: str, options: dict[str, Any], archive_id: str, archive_dir: str, signal: Connection
) -> None:
    with EventStore.open(url, **options, projections=[FlowProjection()]) as store:
        signal.send("ready")
        restore(store, archive_id, archive_dir=archive_dir)
    signal.send("done")


def restore_archive_killed_mid_way(
    url: str, options: dict[str, Any], archive_id: str, archive_dir: str, signal: Connection
) -> None:
    """Restores the archive, saying "ready" once its first batch is committed (the first
    "importing" progress comes after it): a kill at once leaves a flow partly back."""
    said: list[bool] = []

    def ready(progress: Progress) -> None:
        if not said and progress.phase == "importing" and progress.done < (progress.total or 0):
            said.append(True)
            signal.send("ready")

    with EventStore.open(url, **options, projections=[FlowProjection()]) as store:
        restore(store, archive_id, archive_dir=archive_dir, progress=ready)
    signal.send("done")


def rebuild_flows(
    url: str, options: dict[str, Any], batch_size: int, claimed: bool, signal: Connection
) -> None:
    """Rebuild the flow read models; ready at the start, or once ``claimed`` (at the first progress)."""
    sent: list[bool] = []

    def progress(_: Any) -> None:
        if claimed and not sent:
            sent.append(True)
            signal.send("ready")

    with EventStore.open(url, **options, projections=[FlowProjection()]) as store:
        if not claimed:
            signal.send("ready")
        rebuild(store, FlowProjection(), batch_size=batch_size, progress=progress)
    signal.send("done")


def upgrade(url: str, options: dict[str, Any], signal: Connection) -> None:
    if url.startswith("sqlite"):
        Path(url.removeprefix("sqlite:///")).touch()
    with EventStore.open(url, **options, create=False, check_schema=False) as store:
        signal.send("ready")
        store.upgrade()
    signal.send("done")


def wait_for_go(signal: Connection) -> None:
    """A paced child's wait before each step (``kill_during(..., paced=True)``)."""
    assert signal.recv() == "go"


def saver_ops(
    url: str, options: dict[str, Any], operation: str, threads: list[str], paced: bool, signal: Connection
) -> None:
    """``operation`` ("copy", "delete", "prune", "runs") on each thread in turn, one call each,
    with a "step" message after each call; ``paced``, each call waits for a "go"."""
    from eventstore.integrations.langgraph import EventStoreSaver

    with EventStoreSaver.from_url(url, **options) as saver:
        signal.send("ready")
        for thread in threads:
            if paced:
                wait_for_go(signal)
            if operation == "copy":
                saver.copy_thread(thread, f"{thread}-copy")
            elif operation == "delete":
                saver.delete_thread(thread)
            elif operation == "prune":
                saver.prune([thread])
            else:
                saver.delete_for_runs([f"run-{thread}"])
            signal.send("step")
    signal.send("done")


def import_file_killed_mid_way(
    url: str, options: dict[str, Any], path: str, batch_size: int, signal: Connection
) -> None:
    """Imports ``path``, saying "ready" once the import pass has seen its first thousand events
    (whole batches of them committed): a kill at once lands part way through the import."""

    said: list[bool] = []

    def ready(progress: Progress) -> None:
        if not said and progress.phase == "importing" and progress.done < (progress.total or 0):
            said.append(True)
            signal.send("ready")

    with EventStore.open(url, **options) as store:
        import_events(store, path, batch_size=batch_size, progress=ready)
    signal.send("done")
