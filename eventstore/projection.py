"""What the store needs from an inline projection (the machinery is in ``projections/``).

An inline projection is applied inside every append transaction, with the
events just written, so its read models change together with the log or not
at all.

On PostgreSQL an inline projection may also offer ``fuse``: the same writes
as SQL that runs inside the append statement itself, so an append outside a
unit of work is one statement in autocommit mode, one round trip, instead of
a transaction of several (``FusedWrite``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import sqlalchemy as sa

from .errors import EventStoreError, ProjectionError, ProjectionFailed
from .events import RecordedEvent

if TYPE_CHECKING:
    from .store import EventStore, Transaction


class InlineProjection(Protocol):
    name: ClassVar[str]

    def prepare(self, store: EventStore) -> None:
        """Create or check the projection's tables; called once when the store opens."""

    def apply(self, tx: Transaction, events: Sequence[RecordedEvent]) -> None:
        """Fold ``events`` (just appended to one flow) into the read model, within ``tx``."""

    # Optional: ``check_current(tx)``, called before a fold after another process swapped a read
    # model (``EventStore.fence``), raises ``ProjectionError`` if the tables are no longer the ones
    # ``apply`` writes for (``projections.Projection`` compares versions).


def apply_inline(projection: InlineProjection, tx: Transaction, events: Sequence[RecordedEvent]) -> None:
    """``projection.apply`` within ``tx``; an ``apply`` that returns something (a coroutine) wrote nothing."""
    apply: Any = projection.apply  # typed to return None: this is the check that it did
    with fold_errors(projection.name, "apply", events):
        returned = apply(tx, events)
    if returned is not None:
        close = getattr(returned, "close", None)  # a coroutine or generator never to be run
        if callable(close):
            close()
        raise ProjectionError(
            f"apply of projection {projection.name!r} returned a {type(returned).__name__}, not None; "
            "nothing of this append was written"
        )


@contextmanager
def fold_errors(projection: str, fold: str, events: Sequence[RecordedEvent]) -> Iterator[None]:
    """An error of a projection's own code (a ``KeyError`` in a handler) raised as ``ProjectionFailed``,
    naming the projection and the events; the store's errors, and the database's, which the
    transaction translates (a lock timeout, a deadlock), go through as they are."""
    try:
        yield
    except (EventStoreError, sa.exc.SQLAlchemyError):
        raise
    except Exception as exc:
        raise fold_failed(projection, fold, events, exc) from exc


def fold_failed(
    projection: str, fold: str, events: Sequence[RecordedEvent], exc: Exception
) -> ProjectionFailed:
    """``ProjectionFailed`` for ``exc``, raised by ``fold`` of ``projection`` as it folded ``events``."""
    first, last = (events[0], events[-1]) if events else (None, None)
    positions = (first.position if first else 0, last.position if last else 0)
    about = f" ({first.type} of flow {first.flow_id!r})" if first is not None and first is last else ""
    return ProjectionFailed(projection, fold, positions, f"{about}: {type(exc).__name__}: {exc}")


@dataclass(frozen=True, slots=True)
class FusedWrite:
    """Read-model writes that run inside the append statement itself (PostgreSQL).

    ``ctes`` are ``name AS (...)`` clauses added to the append's ``WITH``
    list. They may read ``appended(position, revision)``, the rows the append
    inserted, and must write nothing when it is empty: the append's guard
    found the flow's head moved, and the store then takes the ordinary path.
    Their CTE and parameter names start with the ``prefix`` given to
    ``fuse``; ``params`` holds the parameters (psycopg's ``%(name)s``).

    PostgreSQL locks the tables a statement names as it reads it, so the
    CTEs must name the projection's tables in ``Projection.tables`` order:
    a rebuild's swap locks them in that order, and an append that took them
    in another could deadlock with it.
    """

    ctes: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)


NOTHING = FusedWrite()
"""What ``fuse`` returns for events the projection does not fold."""


class FusingProjection(InlineProjection, Protocol):
    fuses: bool
    """False when ``fuse`` would return None whatever the events: the store skips the attempt."""

    def fuse(self, dialect: str, events: Sequence[RecordedEvent], prefix: str) -> FusedWrite | None:
        """The writes ``apply`` would make for ``events``, as SQL for the append statement; or None.

        ``events`` are as ``apply`` would get them except ``position``, which
        is 0: the database hands positions out, so the SQL takes them from
        ``appended``. None: this append must take the ordinary path.
        """
