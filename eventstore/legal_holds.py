"""Legal holds: a flow under hold is never pruned by retention until the hold is lifted.

``hold`` and ``release`` change the ``legal_holds`` table and record what
they did as an event in the ``$system-retention`` flow, in one transaction;
``run_retention`` (``retention.py``) skips every held flow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .checks import check_store, check_text
from .errors import InvalidInput
from .events import Event
from .integrity import format_time
from .preparation import check_flow_id
from .privileged import chunks, lock_appends
from .schema import flow_events, legal_holds
from .store import EventStore
from .tombstones import flow_not_found


@dataclass(frozen=True, slots=True)
class LegalHold:
    flow_id: str
    reason: str
    held_by: str
    held_at: datetime


SYSTEM_RETENTION_FLOW = "$system-retention"
"""The flow that records every legal hold placed or released, in the same transaction."""


class LegalHoldPlaced(Event):
    """``held_flow_id`` was put under legal hold: retention keeps it until released."""

    held_flow_id: str
    reason: str
    by: str


class LegalHoldReleased(Event):
    """The legal hold on ``held_flow_id`` was lifted."""

    held_flow_id: str
    by: str
    reason: str | None = None


MAX_BY_LENGTH = 200
"""The most characters of who placed or lifted a hold (``legal_holds.held_by``), on every backend."""


def _check_text(what: str, **values: object) -> None:
    """Refuse before anything is written: every backend then stores what SQLite would (no driver error)."""
    for name, value in values.items():
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput(f"{what} needs a non-empty {name}")
        check_text(f"the {name!r} of {what}", value)
        if name == "by" and len(value) > MAX_BY_LENGTH:
            raise InvalidInput(
                f"the 'by' of {what} may have at most {MAX_BY_LENGTH} characters, not {len(value)}"
            )


def hold(store: EventStore, flow_id: str, *, reason: str, by: str) -> LegalHold:
    """Put a flow under legal hold: retention never prunes it until ``release``.

    The flow must exist (``FlowNotFound``; ``FlowArchived`` if retention
    pruned it). A flow already held keeps its first hold, which is
    returned. A new hold is recorded as a ``LegalHoldPlaced`` event in
    ``$system-retention``, in the same transaction.
    """
    check_store(store)
    check_flow_id(flow_id)
    _check_text("a legal hold", reason=reason, by=by)
    h = legal_holds.c
    with store.transaction() as tx:
        conn = tx.connection
        lock_appends(conn)  # orders holds and prunes: a prune never misses a committed hold
        existing = conn.execute(sa.select(legal_holds).where(h.flow_id == flow_id)).first()
        if existing is not None:
            return _hold_of(existing._mapping)
        found = _has_events(conn, flow_id)
        if found:
            values = {
                "flow_id": flow_id,
                "reason": reason,
                "held_by": by,
                "held_at": format_time(store.clock()),
            }
            conn.execute(legal_holds.insert().values(**values))
            placed = LegalHoldPlaced(held_flow_id=flow_id, reason=reason, by=by)
            tx.append(SYSTEM_RETENTION_FLOW, [placed], metadata={"actor": by})
    if not found:
        raise flow_not_found(store, flow_id)  # asked outside the transaction: pruned, or unknown
    return _hold_of(values)


def release(store: EventStore, flow_id: str, *, by: str, reason: str | None = None) -> bool:
    """Lift a flow's legal hold; False if it had none (``FlowNotFound`` if the flow has no events).

    A lifted hold is recorded as a ``LegalHoldReleased`` event (who, and why
    if given) in ``$system-retention``, in the same transaction.
    """
    check_store(store)
    check_flow_id(flow_id)
    _check_text("releasing a legal hold", by=by)
    if reason is not None:
        _check_text("releasing a legal hold", reason=reason)
    with store.transaction() as tx:
        deleted = tx.connection.execute(legal_holds.delete().where(legal_holds.c.flow_id == flow_id))
        if deleted.rowcount:
            released = LegalHoldReleased(held_flow_id=flow_id, by=by, reason=reason)
            tx.append(SYSTEM_RETENTION_FLOW, [released], metadata={"actor": by})
            return True
        found = _has_events(tx.connection, flow_id)
    if not found:
        raise flow_not_found(store, flow_id)
    return False


def _has_events(conn: sa.Connection, flow_id: str) -> bool:
    query = sa.select(flow_events.c.position).where(flow_events.c.flow_id == flow_id).limit(1)
    return conn.execute(query).first() is not None


def list_holds(store: EventStore) -> list[LegalHold]:
    """Every legal hold, by flow id."""
    check_store(store)
    with store.reading() as conn:  # the store's translation of driver errors
        rows = conn.execute(sa.select(legal_holds).order_by(legal_holds.c.flow_id)).all()
    return [_hold_of(row._mapping) for row in rows]


def _hold_of(values: Any) -> LegalHold:
    return LegalHold(
        values["flow_id"], values["reason"], values["held_by"], datetime.fromisoformat(values["held_at"])
    )


def held_flows(conn: sa.Connection, flow_ids: Sequence[str]) -> set[str]:
    """The flows of ``flow_ids`` under legal hold."""
    held: set[str] = set()
    for chunk in chunks(flow_ids):
        held.update(
            conn.execute(sa.select(legal_holds.c.flow_id).where(legal_holds.c.flow_id.in_(chunk))).scalars()
        )
    return held
