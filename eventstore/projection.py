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

import re
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import sqlalchemy as sa

from .errors import EventStoreError, ProjectionError, ProjectionFailed
from .events import RecordedEvent
from .sqlscan import transaction_end

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
    with fold_errors(projection.name, "apply", events, tx.connection):
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
def fold_errors(
    projection: str,
    fold: str,
    events: Sequence[RecordedEvent],
    conn: sa.Connection | None = None,
    *,
    copies: Mapping[str, str] | None = None,
) -> Iterator[None]:
    """An error of a projection's own code (a ``KeyError`` in a handler) raised as ``ProjectionFailed``,
    naming the projection and the events; the store's errors, and the database's, which the
    transaction translates (a lock timeout, a deadlock), keep their type (callers catch
    ``StorageError``...) and say where all the same (``locate``).

    With ``conn``, the fold's transaction: the fold may not end it (``TransactionEnded``).
    ``copies`` maps a build's fresh tables to the tables they replace, to name them in a message.
    """
    outer = False
    if conn is not None:
        _guard(conn.engine)
        info = conn.info
        outer = info.get(_FOLDING, False)  # a fold within a fold (a handler's own append)
        info[_FOLDING] = True
    try:
        yield
    except (EventStoreError, sa.exc.SQLAlchemyError) as exc:
        refused = _stop_guarding(conn, outer)
        if refused is not None and refused is not exc.__cause__:  # not the fold's own ProjectionFailed
            raise fold_failed(projection, fold, events, refused) from refused  # what SQLAlchemy then said
        locate(exc, FoldSite.of(projection, fold, events, copies))
        raise
    except Exception as exc:
        _stop_guarding(conn, outer)
        raise fold_failed(projection, fold, events, exc) from exc
    except BaseException:
        _stop_guarding(conn, outer)
        raise
    refused = _stop_guarding(conn, outer)
    if conn is None:
        return
    if refused is not None:  # the fold caught the refusal and carried on: its batch is refused still
        raise fold_failed(projection, fold, events, refused) from refused
    state = _transaction_state(conn)
    if state == "aborted":
        aborted = StatementFailed(
            "a statement of it failed and it carried on, but PostgreSQL aborted the transaction with "
            "the statement: wrap a statement that may fail in tx.connection.begin_nested()"
        )
        raise fold_failed(projection, fold, events, aborted)
    if state == "ended":
        raise ProjectionError(
            f"{fold} of projection {projection!r} ended its transaction on the driver's own connection, "
            "where it cannot be refused: what was written before may have been committed without the "
            "rest; fix it, then check the read model (or rebuild it)"
        )


def _stop_guarding(conn: sa.Connection | None, outer: bool) -> TransactionEnded | None:
    """End the guard of ``fold_errors`` (an ``outer`` fold's goes on); the refusal the fold met, if any."""
    info = _info(conn)
    if info is None:
        return None
    if outer:
        refused: TransactionEnded | None = info.get(_REFUSED)
        return refused
    info.pop(_FOLDING, None)
    refused = info.pop(_REFUSED, None)
    return refused


def _info(conn: sa.Connection | None) -> dict[Any, Any] | None:
    """``conn.info``; None without a connection, or once it lost its DBAPI connection (a cancelled
    read, a dead server): reading ``info`` would then reconnect, or raise, inside SQLAlchemy's own
    rollback, and the pool clears the lost connection's ``info`` itself."""
    if conn is None or conn.invalidated or conn.closed:
        return None
    return conn.info


class StatementFailed(Exception):
    """A fold caught a failed statement's error and went on, in a transaction PostgreSQL had aborted."""


class TransactionEnded(Exception):
    """What a projection's fold meets when it tries to end the transaction it folds in.

    The store commits a fold's writes with the events (or the checkpoint) it
    folds, or rolls them back together: a fold's COMMIT would split them. Not
    an ``EventStoreError``: it becomes the ``ProjectionFailed`` the caller sees.
    """

    def __init__(self, how: str) -> None:
        super().__init__(f"a projection may not end the transaction it folds in ({how})")


_FOLDING = ("eventstore", "folding")
"""Set in a connection's ``info`` while a projection folds on it."""
_REFUSED = ("eventstore", "refused")
_MAY_END = re.compile(r"commit|end|abort|begin|start|prepare|rollback", re.IGNORECASE)
"""Words any SQL that ends a transaction holds: SQL without them needs no closer reading."""
_guarded: weakref.WeakSet[sa.Engine] = weakref.WeakSet()
_guarding = threading.Lock()


def _guard(engine: sa.Engine) -> None:
    """Listen on ``engine`` for a fold's COMMIT or ROLLBACK, and refuse it before it runs."""
    if engine in _guarded:
        return
    with _guarding:
        if engine in _guarded:
            return
        sa.event.listen(engine, "commit", lambda conn: _refuse(conn, "commit()"))
        sa.event.listen(engine, "rollback", lambda conn: _refuse(conn, "rollback()"))
        sa.event.listen(engine, "before_cursor_execute", _refuse_statement)
        _guarded.add(engine)


def _refuse(conn: sa.Connection, how: str) -> None:
    info = _info(conn)
    if info is not None and info.get(_FOLDING):
        refused = info[_REFUSED] = TransactionEnded(how)
        raise refused


def _refuse_statement(conn: sa.Connection, cursor: Any, statement: str, *args: Any) -> None:
    info = _info(conn)
    if info is None or not info.get(_FOLDING) or _MAY_END.search(statement) is None:
        return
    ends = transaction_end(statement, conn.dialect.name, standard_strings=_standard_strings(conn))
    if ends is not None:  # PostgreSQL runs "...; COMMIT" as two statements: each is read
        _refuse(conn, ends)


def _standard_strings(conn: sa.Connection) -> bool:
    """PostgreSQL's ``standard_conforming_strings`` (off: a backslash escapes a quote in '..' too)."""
    info = getattr(conn.connection.dbapi_connection, "info", None)  # psycopg: known without a query
    status = getattr(info, "parameter_status", None)
    return not callable(status) or status("standard_conforming_strings") != "off"


def _transaction_state(conn: sa.Connection) -> str:
    """``"open"``; ``"aborted"`` (PostgreSQL: a statement failed, the rest will too); or ``"ended"``: a
    fold went round SQLAlchemy, to the driver's connection, and committed or rolled back there."""
    raw: Any = conn.connection.dbapi_connection
    info = getattr(raw, "info", None)  # psycopg
    if info is not None and hasattr(info, "transaction_status"):
        status = int(info.transaction_status)
        return "open" if status == 2 else "aborted" if status == 3 else "ended"  # INTRANS, INERROR
    return "open" if getattr(raw, "in_transaction", True) else "ended"  # sqlite3; aiosqlite's cannot tell


@dataclass(frozen=True, slots=True)
class FoldSite:
    """Where a fold was when the database or the store refused it: the projection, its fold, the
    positions (and type, for one event) it was folding, and a build's fresh tables (``copies``)."""

    projection: str
    fold: str
    positions: tuple[int, int]
    event_type: str | None = None
    copies: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls, projection: str, fold: str, events: Sequence[RecordedEvent], copies: Mapping[str, str] | None
    ) -> FoldSite:
        first, last = (events[0], events[-1]) if events else (None, None)
        positions = (first.position if first else 0, last.position if last else 0)
        event_type = first.type if first is not None and first is last else None
        return cls(projection, fold, positions, event_type, dict(copies or {}))

    def where(self, message: str) -> str:
        """What to add to ``message``: the projection and the events, and which fresh copy a table
        the message names is (a handler writes through ``self.table``, so the database names the copy)."""
        first, last = self.positions
        if first == last:
            what = f"event at position {first}" + (f" ({self.event_type})" if self.event_type else "")
        else:
            what = f"events at positions {first} to {last}"
        said = [f"in projection {self.projection!r} applying {what}"]
        said += [
            f"{copy} is the fresh copy of table {table} that a build fills, swapped in when it is done"
            for copy, table in self.copies.items()
            if copy in message
        ]
        return "; ".join(said)


_SITE = "eventstore_fold_site"
"""The attribute of a driver error raised in a fold: its ``FoldSite``, for the error it becomes."""


def locate(exc: BaseException, site: FoldSite) -> None:
    """Say on ``exc`` where the fold was: on a store error, its attributes and message (unless an
    inner fold, a handler's own append, said it first); on a driver error, for ``translated``."""
    if isinstance(exc, sa.exc.SQLAlchemyError):
        if getattr(exc, _SITE, None) is None:
            setattr(exc, _SITE, site)
        return
    if not isinstance(exc, EventStoreError) or exc.projection is not None:
        return  # a ProjectionFailed says where already
    exc.projection, exc.fold, exc.positions = site.projection, site.fold, site.positions
    if len(exc.args) == 1 and isinstance(exc.args[0], str):
        exc.args = (f"{exc.args[0]}; {site.where(exc.args[0])}",)
    else:
        exc.add_note(site.where(str(exc)))


def translated(driver_error: sa.exc.SQLAlchemyError, error: Exception) -> Exception:
    """``error``, which the transaction translated ``driver_error`` to, saying where if a fold raised it."""
    site: FoldSite | None = getattr(driver_error, _SITE, None)
    if site is not None:
        locate(error, site)
    return error


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
