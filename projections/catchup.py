"""``CatchUpRunner``: a catch-up projection folded after the appends, from its checkpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from eventstore import EventStore, reconnecting
from eventstore.checks import check_count
from eventstore.errors import ProjectionError

from .checkpoints import INLINE, Checkpoint, newer_version, read_checkpoint, write_checkpoint
from .folding import apply_grouped
from .ownership import layout_difference
from .rebuilding import check_arguments, ensure
from .retiring import refuse_retired

if TYPE_CHECKING:
    from .declaration import Projection


class CatchUpRunner:
    """Keeps a catch-up projection current: reads the log from its checkpoint, in batches.

    Each batch's read-model writes and the new checkpoint commit in one
    transaction, so every event takes effect exactly once, and a crashed
    runner resumes where it left off.
    """

    def __init__(self, store: EventStore, projection: Projection, *, batch_size: int = 500) -> None:
        check_arguments(store, projection)
        check_count("batch_size", batch_size, minimum=1)
        if projection.kind == "inline" or any(p.name == projection.name for p in store.projections):
            raise ProjectionError(
                f"projection {projection.name!r} is inline here: appends fold it already, and a runner "
                "would fold their events a second time; use it inline or with a runner, not both"
            )
        self.store = store
        self.projection = projection
        self.batch_size = batch_size
        # the build this runner started on, to tell what its layout error is (no read of its own)
        self._started_on = ensure(store, projection)
        # the build whose tables were found laid out as declared: none yet, the first batch looks
        # (tables changed without a version bump pass ensure, which compares only their names)
        self._build: str | None = None

    def run_once(self) -> int:
        """Apply the next batch; return how many events it held (0: caught up).

        A ``ConnectionLost`` out of it is safe to follow with another call: the
        batch and its checkpoint commit together, so none is applied twice.
        """
        with reconnecting.transaction(self.store) as tx:
            checkpoint = self._own(
                tx.connection, read_checkpoint(tx.connection, self.projection.name, lock=True)
            )
            if checkpoint.build != self._build:
                self._check_layout(tx.connection, checkpoint)
            events = list(self.store.read_all(after_position=checkpoint.position, limit=self.batch_size))
            if not events:
                return 0
            apply_grouped(self.projection, tx, events)
            write_checkpoint(
                self.store,
                tx.connection,
                self.projection,
                position=events[-1].position,
                build=checkpoint.build,
            )
        return len(events)

    def _own(self, conn: sa.Connection, checkpoint: Checkpoint | None) -> Checkpoint:
        """``checkpoint`` if it is this runner's, else ``ProjectionError``: the tables and position
        are another version's (rebuilt by another process since this runner began), or appends fold
        them (a store opened with the projection; its position stays where it was built), or there
        are none: ``RetiredProjection`` if it was retired (``projections.retire``)."""
        if checkpoint is None:
            refuse_retired(self.store, conn, self.projection.name)
        if checkpoint is not None and checkpoint.version > self.projection.version:
            raise newer_version(self.projection, checkpoint)  # not to be rebuilt back by this code
        if checkpoint is None or checkpoint.version != self.projection.version:
            raise ProjectionError(
                f"projection {self.projection.name!r} needs a rebuild before it can catch up"
            )
        if checkpoint.kind == INLINE:
            raise ProjectionError(
                f"projection {self.projection.name!r} is folded inline by the stores opened with it "
                "(projections=[...]): a runner would fold their events a second time; nothing was "
                "written: run it with a runner under another name"
            )
        return checkpoint

    def _check_layout(self, conn: sa.Connection, checkpoint: Checkpoint) -> None:
        """A build this runner has not checked yet (the one it started on, or another process's
        rebuild at this version): ``ProjectionError`` unless its tables are laid out as this
        runner's projection declares them (else the fold would fail in the database, or write
        into columns it does not know)."""
        difference = layout_difference(conn, self.projection)
        if difference is None:
            self._build = checkpoint.build
            return
        name, version = self.projection.name, checkpoint.version
        if checkpoint.build == self._started_on:
            what = f"was built here at version {version} before this runner started, by code with"
        else:
            what = f"was rebuilt at version {version} since this runner started, with"
        raise ProjectionError(
            f"projection {name!r} {what} other tables than this process folds into ({difference}); "
            "nothing was written: if its tables changed, bump its version, and run the code that has them"
        )

    def run_until_caught_up(self) -> int:
        """Apply batches until none is left; return the number of events applied."""
        total = 0
        while applied := self.run_once():
            total += applied
        return total

    def position(self) -> int:
        """The position of the last event applied; ``ProjectionError``, as ``run_once`` gives, when
        the checkpoint is not this runner's (another version's, or an inline projection's)."""
        with self.store.reading() as conn:
            return self._own(conn, read_checkpoint(conn, self.projection.name)).position
