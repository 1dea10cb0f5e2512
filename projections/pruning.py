"""Retention pruners for the flow read models: drop a pruned flow's rows, recount its session.

``eventstore.retention`` deletes a flow's events; this module, on the
projections side of the layering, removes what the flow projection derived
from them, in the prune's transaction. Pass it to the retention run::

    run_retention(store, policy, archive_dir, pruners=[prune_flow_read_models])

The result is what a rebuild from the remaining log would give: the flows'
``flows`` and ``flow_steps`` rows go, and each affected session's counts and
activity times are recomputed from the flows it still has (its row goes when
it has none).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import sqlalchemy as sa

from eventstore import Transaction
from eventstore.flow_fold import FLOW_STATUSES
from eventstore.privileged import chunks

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
                sa.func.min(sa.func.coalesce(f.created_at, f.updated_at)).label("first"),
                sa.func.max(f.updated_at).label("last"),
            )
            .where(f.owner_session_key.in_(chunk))
            .group_by(f.owner_session_key, f.status)
        )
        rows: dict[str, dict[str, Any]] = {}
        for key, status, count, events, first, last in conn.execute(query):
            row = rows.setdefault(
                key,
                {
                    "session_key": key,
                    **dict.fromkeys(FLOW_STATUSES, 0),
                    "event_count": 0,
                    "first": [],
                    "last": [],
                },
            )
            row[status] = count
            row["event_count"] += int(events or 0)
            row["first"].append(first)
            row["last"].append(last)
        conn.execute(sessions.delete().where(sessions.c.session_key.in_(chunk)))
        recounted = [
            {
                **{name: value for name, value in row.items() if name not in ("first", "last")},
                "first_activity_at": min(t for t in row["first"] if t is not None),
                "last_activity_at": max(t for t in row["last"] if t is not None),
            }
            for row in rows.values()
        ]
        if recounted:
            conn.execute(sessions.insert(), recounted)
