"""A tombstone names the session that owned the pruned flow (migration 0019)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from eventstore import EventStore, migrate
from eventstore.retention import run_retention
from projections import FlowProjection, FlowService

from .conftest import Target

T0 = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def mixed(target: Target, tmp_path: Path) -> Iterator[EventStore]:
    """Pruned: m1 of sess-M (3 events), z1 of sess-Z (3 events). Live: m2 of sess-M (a decision)."""
    now = [T0]
    with target.open(projections=[FlowProjection()], clock=lambda: now[0]) as store:
        flows = FlowService(store)
        for flow_id, session in (("m1", "sess-M"), ("z1", "sess-Z")):
            flows.start_flow(flow_id, controller_id="bot", goal="done", owner_session_key=session)
            flows.record_decision(flow_id, actor="human:kim", decision="go")
            flows.finish(flow_id)
        flows.start_flow("m2", controller_id="bot", goal="open", owner_session_key="sess-M")
        flows.record_decision("m2", actor="human:kim", decision="wait")
        now[0] = T0 + timedelta(days=2)
        assert sorted(run_retention(store, {"finished": 1}, tmp_path / "archives").pruned) == ["m1", "z1"]
        yield store


def owners(store: EventStore) -> dict[str, str | None]:
    with store.reading() as conn:
        return dict(conn.execute(sa.text("SELECT flow_id, owner_session_key FROM flow_tombstones")).all())


def test_retention_writes_each_pruned_flows_owner_into_its_tombstone(mixed: EventStore) -> None:
    assert owners(mixed) == {"m1": "sess-M", "z1": "sess-Z"}


def test_the_migration_leaves_tombstones_written_before_it_without_owner(mixed: EventStore) -> None:
    config = migrate._config()
    with mixed.engine.connect() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0018")
        conn.commit()
        assert "owner_session_key" not in {c["name"] for c in sa.inspect(conn).get_columns("flow_tombstones")}
        migrate.upgrade(conn)
        assert "ix_flow_tombstones_owner" in {
            i["name"] for i in sa.inspect(conn).get_indexes("flow_tombstones")
        }
    assert owners(mixed) == {"m1": None, "z1": None}
