"""Retention pruners for the flow read models: drop a pruned flow's rows, recount its session.

``eventstore.retention`` deletes a flow's events; this module, on the
projections side of the layering, removes what the flow projection derived
from them, in the prune's transaction. Pass it to the retention run::

    run_retention(store, policy, archive_dir, pruners=[prune_flow_read_models])

The result is what a rebuild from the remaining log would give: the flows'
``flows`` and ``flow_steps`` rows go, and each affected session's counts and
activity times are recomputed from the flows it still has (its row goes when
it has none): its first and last activity are read from the remaining
flows' events, as the fold read them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any

import sqlalchemy as sa

from eventstore import Transaction
from eventstore.flow_fold import FLOW_STATUSES
from eventstore.privileged import chunks
from eventstore.schema import flow_events

from .flows import FlowProjection


@cache
def _tables() -> dict[str, sa.Table]:
    return FlowProjection().tables


def prune_flow_read_models(tx: Transaction, flow_ids: Sequence[str]) -> None:
    """Remove the flow, step and session rows derived from ``flow_ids`` (a retention ``Pruner``)."""
    conn = tx.connection
    if not sa.inspect(conn).has_table("flows"):
        return  # this store never had the flow read models
    tables = _tables()
    flows, steps = tables["flows"], tables["flow_steps"]
    owners: set[str] = set()
    for chunk in chunks(flow_ids):
        owners.update(
            conn.execute(sa.select(flows.c.owner_session_key).where(flows.c.flow_id.in_(chunk))).scalars()
        )
        conn.execute(steps.delete().where(steps.c.flow_id.in_(chunk)))
        conn.execute(flows.delete().where(flows.c.flow_id.in_(chunk)))
    _recount_sessions(conn, sorted(owners))


def _recount_sessions(conn: sa.Connection, session_keys: Sequence[str]) -> None:
    flows, sessions = _tables()["flows"], _tables()["sessions"]
    f = flows.c
    for chunk in chunks(session_keys):
        query = (
            sa.select(
                f.owner_session_key,
                f.status,
                sa.func.count(),
                sa.func.sum(f.event_count),
                sa.func.min(sa.func.coalesce(f.created_at, f.updated_at)),
                sa.func.max(f.updated_at),
            )
            .where(f.owner_session_key.in_(chunk))
            .group_by(f.owner_session_key, f.status)
        )
        rows: dict[str, dict[str, Any]] = {}
        for key, status, count, events, first, last in conn.execute(query):
            # The flows' own times stand in where the log has none of their events (an altered log).
            row = rows.setdefault(
                key,
                {
                    "session_key": key,
                    **dict.fromkeys(FLOW_STATUSES, 0),
                    "event_count": 0,
                    "first_activity_at": first,
                    "last_activity_at": last,
                },
            )
            row[status] = count
            row["event_count"] += int(events or 0)
            row["first_activity_at"] = _known(min, row["first_activity_at"], first)
            row["last_activity_at"] = _known(max, row["last_activity_at"], last)
        for key, first, last in conn.execute(_activity(chunk)):
            rows[key] |= {"first_activity_at": _time(first), "last_activity_at": _time(last)}
        conn.execute(sessions.delete().where(sessions.c.session_key.in_(chunk)))
        recounted = list(rows.values())
        if recounted:
            conn.execute(sessions.insert(), recounted)


def _activity(session_keys: Sequence[str]) -> sa.Select[Any]:
    """Each session's first and last activity: the times of its flows' events from their starts on.

    Read from the log, as the fold counts them: a clock that stepped back can
    leave a flow's last event (its ``updated_at``) earlier than another of its events.
    The events before a flow's start (its revision less its event count) are not its activity.
    """
    f, e = _tables()["flows"].c, flow_events.c
    return (
        sa.select(f.owner_session_key, sa.func.min(e.recorded_at), sa.func.max(e.recorded_at))
        .select_from(_tables()["flows"].join(flow_events, e.flow_id == f.flow_id))
        .where(f.owner_session_key.in_(session_keys), e.revision > f.revision - f.event_count)
        .group_by(f.owner_session_key)
    )


def _known(pick: Any, *times: datetime | None) -> datetime | None:
    """``pick`` (min or max) of the known times; None if none is (a time outside the fold's range)."""
    known = [t for t in times if t is not None]
    return pick(known) if known else None


def _time(value: datetime | str) -> datetime:
    """A time the log holds: a datetime on PostgreSQL, canonical UTC text on SQLite."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(value).replace(tzinfo=UTC)
