"""Test helpers: the flow read models as plain data, and the rebuild law."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from eventstore import EventStore
from projections import FlowProjection, rebuild


def snapshot(store: EventStore) -> dict[str, list[dict[str, Any]]]:
    """Every row of the three flow read models, sorted, as dicts."""
    tables = FlowProjection().tables
    keys = {"flows": ["flow_id"], "flow_steps": ["flow_id", "step_id"], "sessions": ["session_key"]}
    out = {}
    with store.engine.connect() as conn:
        for name, table in tables.items():
            order = [table.c[k] for k in keys[name]]
            out[name] = [dict(row._mapping) for row in conn.execute(sa.select(table).order_by(*order))]
    return out


def flow_projection(store: EventStore) -> FlowProjection:
    (projection,) = [p for p in store.projections if isinstance(p, FlowProjection)]
    return projection


def assert_matches_rebuild(store: EventStore) -> None:
    """The inline read models equal a from-scratch rebuild from the log."""
    inline = snapshot(store)
    rebuild(store, flow_projection(store))
    rebuilt = snapshot(store)
    for name in inline:
        assert inline[name] == rebuilt[name], f"{name} differs from a rebuild"
