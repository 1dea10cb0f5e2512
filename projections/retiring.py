"""Retiring a projection the code no longer has (renamed or dropped): ``retire``.

A projection's tables, its checkpoint row, its rows in ``projection_tables``
and a rebuild's claim outlive the code that made them. ``retire`` drops them
all in one transaction, under the append lock (which rebuilds take to claim
and to swap), and records it twice in that transaction: a
``ProjectionRetired`` event in the flow ``$system-projections`` (who, why,
what was dropped), and a row ``<projection>#retired`` in
``projection_checkpoints``. That row is what keeps code that still folds the
projection (a runner in another process, a store opened with it) from
building it again unasked: ``refuse_retired`` raises ``RetiredProjection``
there instead, until a rebuild builds it again on purpose and deletes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from pydantic import Field

from eventstore import EventStore, Transaction, reconnecting
from eventstore.aio import pause
from eventstore.checks import check_flag, check_text, shown
from eventstore.errors import (
    InvalidInput,
    ProjectionInUse,
    ProjectionNotFound,
    RetiredProjection,
    StoreBusy,
)
from eventstore.events import Event
from eventstore.integrity import format_time
from eventstore.rebuild_claims import REBUILD_CLAIM, refuse_during_rebuild
from eventstore.schema import projection_checkpoints as checkpoints
from eventstore.schema import projection_tables as owned

from .checkpoints import RETIRED, RETIRED_KIND, lock_appends, read_checkpoint, retired_at
from .definitions import ASCII_LOWER
from .ownership import enum_types_only_of, referrers_first
from .swap import FIRST_PAUSE, LONGEST_PAUSE, LiveTableBusy, lock_tables

SYSTEM_PROJECTIONS_FLOW = "$system-projections"
"""The flow that records every projection retired or handed to a runner, in the transaction that did it."""
MAX_BY_LENGTH = 200
PATIENCE = 30.0
"""How long ``retire`` waits in all, by default, for tables a long transaction holds (PostgreSQL)."""


class ProjectionRetired(Event):
    """The projection ``projection`` was retired: ``tables`` dropped with its checkpoint
    (``kind``, ``version`` and ``position`` as it stood; None for one never built) and its claims."""

    projection: str
    kind: str | None
    version: int | None
    position: int | None
    tables: list[str]
    by: str
    reason: str | None = None
    types: list[str] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Retirement:
    """What ``retire`` dropped (with ``dry_run``, would drop): the projection's ``tables``, its
    checkpoint as it stood (``kind``, ``version``, ``position``: None for a first build that never
    finished), on PostgreSQL the enum ``types`` only its tables used (whoever created them), and,
    with ``claim``, a rebuild's claim that had died or expired."""

    name: str
    kind: str | None
    version: int | None
    position: int | None
    tables: tuple[str, ...]
    claim: bool
    by: str
    reason: str | None
    retired_at: datetime
    dry_run: bool
    types: tuple[str, ...] = ()


def retire(
    store: EventStore,
    name: str,
    *,
    by: str,
    reason: str | None = None,
    dry_run: bool = False,
    patience: float = PATIENCE,
) -> Retirement:
    """Drop the projection ``name``'s tables, its checkpoint, its table ownership and any dead or
    expired rebuild claim, in one transaction, recorded as a ``ProjectionRetired`` event (by ``by``)
    in ``$system-projections``; with ``dry_run``, say what would go and write nothing.

    Refused, with nothing written: a built-in read model, or one this store was opened with
    (``ProjectionInUse``); one a live rebuild holds an unexpired claim on (``RebuildInProgress``);
    a name nothing is recorded for (``ProjectionNotFound``), or retired already (``RetiredProjection``).
    On PostgreSQL the drop waits for a transaction holding one of the tables (a long report) a
    short while at a time, appends going on between, up to ``patience`` seconds (then ``StoreBusy``).
    """
    _check_arguments(store, name, by, reason, dry_run, patience)
    refuse_in_use(store, name, "retire")
    refuse_live_rebuild(store, name, "retiring")
    waited, wait = 0.0, FIRST_PAUSE
    while True:
        try:
            return _retire(store, name, by=by, reason=reason, dry_run=dry_run)
        except LiveTableBusy as busy:
            if waited >= patience:
                raise StoreBusy(
                    f"cannot retire projection {name!r}: another transaction (a long read?) held its "
                    f"table {busy.table!r} for {waited:g} s; nothing was written: try again when it ends"
                ) from None
            pause(wait)
            waited += wait
            wait = min(wait * 2, LONGEST_PAUSE)


def _retire(store: EventStore, name: str, *, by: str, reason: str | None, dry_run: bool) -> Retirement:
    with store.transaction() as tx:
        conn = tx.connection
        lock_appends(conn)  # rebuilds claim and swap under it: none claims or swaps meanwhile
        current = read_checkpoint(conn, name, lock=True)
        refuse_during_rebuild(store, conn, f"retiring projection {name!r}", only=name)
        claimed = read_checkpoint(conn, name + REBUILD_CLAIM) is not None
        owns = list(conn.execute(sa.select(owned.c.table_name).where(owned.c.projection == name)).scalars())
        if current is None and not claimed and not owns:
            raise not_found(store, conn, name, "retire")
        now = store.clock()
        tables = referrers_first(conn, owns)  # those that exist, in the order dropped
        done = Retirement(
            name=name,
            kind=None if current is None else current.kind,
            version=None if current is None else current.version,
            position=None if current is None else current.position,
            tables=tuple(tables),
            types=tuple(enum_types_only_of(conn, tables)),
            claim=claimed,
            by=by,
            reason=reason,
            retired_at=now,
            dry_run=dry_run,
        )
        if not dry_run:
            _drop(tx, done)
    return done


def _drop(tx: Transaction, done: Retirement) -> None:
    """Drop the tables (each before those it points at) and the rows; record it."""
    conn = tx.connection
    lock_tables(conn, list(done.tables))  # PostgreSQL: a short wait for each, not the store's lock_timeout
    quote = conn.dialect.identifier_preparer.quote_identifier
    for table in done.tables:
        conn.exec_driver_sql(f"DROP TABLE {quote(table)}")
    for type_ in done.types:
        conn.exec_driver_sql(f"DROP TYPE {quote(type_)}")
    c = checkpoints.c
    conn.execute(owned.delete().where(owned.c.projection == done.name))
    conn.execute(
        checkpoints.delete().where(
            c.name.in_([done.name + suffix for suffix in ("", REBUILD_CLAIM, RETIRED)])
        )
    )
    conn.execute(
        checkpoints.insert().values(
            name=done.name + RETIRED,
            kind=RETIRED_KIND,
            version=done.version or 0,
            position=done.position or 0,
            build="",
            updated_at=format_time(done.retired_at),
        )
    )
    # every store checks its inline projections again at its next append (EventStore.fence)
    conn.exec_driver_sql("UPDATE event_positions SET generation = generation + 1 WHERE id = 1")
    retired = ProjectionRetired(
        projection=done.name,
        kind=done.kind,
        version=done.version,
        position=done.position,
        tables=list(done.tables),
        by=done.by,
        reason=done.reason,
        types=list(done.types),
    )
    tx.append(SYSTEM_PROJECTIONS_FLOW, [retired], metadata={"actor": done.by})


def _check_arguments(
    store: object, name: object, by: object, reason: object, dry_run: object, patience: object
) -> None:
    check_store_and_name(store, name)
    check_who("retiring a projection", "who retires it", by, reason)
    check_flag("dry_run", dry_run)
    if isinstance(patience, bool) or not isinstance(patience, int | float) or not patience >= 0:
        raise InvalidInput(f"patience must be a number of seconds, 0 or more, not {shown(patience)}")


def check_who(action: str, who: str, by: object, reason: object) -> None:
    """``InvalidInput`` unless ``by`` (``who``: "who retires it") is 1 to ``MAX_BY_LENGTH`` characters
    of text and ``reason`` is None or text: what ``action`` records in ``$system-projections``."""
    check_text(f"the 'by' of {action}", by)
    if not isinstance(by, str) or not by.strip() or len(by) > MAX_BY_LENGTH:
        raise InvalidInput(f"{action} needs a 'by' of 1 to {MAX_BY_LENGTH} characters: {who}")
    if reason is not None:
        check_text(f"the 'reason' of {action}", reason)


def refuse_live_rebuild(store: EventStore, name: str, doing: str) -> None:
    """``RebuildInProgress`` if a live rebuild of ``name`` holds its claim, read without the append lock.

    The check under the append lock stays, for a rebuild claimed meanwhile; but on SQLite a rebuild's
    batches hold the write lock back to back, so waiting for it there ran into the busy timeout, or
    acted on the projection the rebuild had just swapped in."""
    with reconnecting.reading(store) as conn:
        refuse_during_rebuild(store, conn, f"{doing} projection {name!r}", only=name)


def check_store_and_name(store: object, name: object) -> None:
    """``InvalidInput`` unless ``store`` is an ``EventStore`` and ``name`` could name a projection."""
    if not isinstance(store, EventStore):
        raise InvalidInput(f"store must be an EventStore, not {shown(store)}")
    check_text("the projection's name", name)
    if not isinstance(name, str) or not name or "#" in name:
        raise InvalidInput(f"name a projection (a non-empty name without '#'), not {shown(name)}")


def _built_in(name: str, *, table: bool) -> str | None:
    """Why ``name`` may not be retired or handed over if it is a built-in read model's (with ``table``,
    the name of one of its tables); else None."""
    from .flows import FlowProjection  # here: the built-in read models import the machinery
    from .langgraph import LangGraphProjection

    for built_in in (FlowProjection, LangGraphProjection):
        tables = {each.name.translate(ASCII_LOWER) for each in built_in().tables.values()}
        if name == built_in.name or (table and name.translate(ASCII_LOWER) in tables):
            what = "" if name == built_in.name else "a table of "
            return f"it is {what}the built-in {built_in.__name__}'s read model, which the library folds"
    return None


def refuse_in_use(store: EventStore, name: str, action: str) -> None:
    """``ProjectionInUse`` for a built-in read model, or one this store folds inline: what ``action``
    (``retire``...) may not be done to. A name of a built-in's table is refused by ``not_found``, when
    no projection of that name is recorded: a projection may be named ``sessions`` too."""
    built_in = _built_in(name, table=False)
    if built_in is not None:
        raise ProjectionInUse(name, action, built_in)
    if any(projection.name == name for projection in store.projections):
        raise ProjectionInUse(
            name,
            action,
            f"this store was opened with it (projections=[...]): open one without it to {action} it",
        )


def not_found(store: EventStore, conn: sa.Connection, name: str, action: str) -> Exception:
    """``RetiredProjection`` for a name retired already, ``ProjectionInUse`` for a built-in's table
    (what ``action`` may not be done to), else ``ProjectionNotFound`` naming the known ones."""
    retired = refusal(store, conn, name)
    if retired is not None:
        return retired
    built_in = _built_in(name, table=True)  # nothing is recorded for it: `retire flow_steps` meant the table
    if built_in is not None:
        return ProjectionInUse(name, action, built_in)
    c = checkpoints.c
    names = conn.execute(sa.select(c.name).where(c.kind != RETIRED_KIND).order_by(c.name)).scalars()
    return ProjectionNotFound(name, sorted({known.removesuffix(REBUILD_CLAIM) for known in names}))


def refusal(store: EventStore, conn: sa.Connection, name: str) -> RetiredProjection | None:
    """``RetiredProjection`` if the projection ``name`` was retired (and not rebuilt since), saying
    by whom and why as ``$system-projections`` records it; else None."""
    at = retired_at(conn, name)
    if at is None:
        return None
    return RetiredProjection(name, at, _said(store, name))


def refuse_retired(store: EventStore, conn: sa.Connection, name: str) -> None:
    """Raise ``refusal``'s ``RetiredProjection``, if any: a first build must not bring it back unasked."""
    retired = refusal(store, conn, name)
    if retired is not None:
        raise retired


def _said(store: EventStore, name: str) -> str:
    """`` by WHO (WHY)``, from the newest ``ProjectionRetired`` of ``name``; "" if none is found."""
    for event in store.read_flow(SYSTEM_PROJECTIONS_FLOW, backwards=True):
        if event.type == ProjectionRetired.event_type and event.data.get("projection") == name:
            why = event.data.get("reason")
            return f" by {event.data.get('by')!r}" + (f" ({why})" if why else "")
    return ""
