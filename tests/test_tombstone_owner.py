"""A tombstone names the session that owned the pruned flow (migration 0019), so a session's question
counts its own pruned flows, and a mistyped session is unknown again on a store that ran retention."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from eventstore import EventStore, SessionNotFound, migrate
from eventstore.audit import audit_trail
from eventstore.exporting import export_events
from eventstore.retention import list_archives, restore, run_retention
from projections import FlowProjection, FlowService

from .conftest import Target
from .test_audit_pruned import T0, cli


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


def forget_owner(store: EventStore, flow_id: str) -> None:
    """The tombstone as written before migration 0019: the migration leaves its owner null."""
    with store.transaction() as tx:
        tx.connection.execute(
            sa.text("UPDATE flow_tombstones SET owner_session_key = NULL WHERE flow_id = :f"), {"f": flow_id}
        )


def test_retention_writes_each_pruned_flows_owner_into_its_tombstone(mixed: EventStore) -> None:
    assert owners(mixed) == {"m1": "sess-M", "z1": "sess-Z"}


class TestUnknownSession:
    def test_a_mistyped_session_is_not_found_on_a_store_that_pruned_flows(
        self, mixed: EventStore, tmp_path: Path
    ) -> None:
        with pytest.raises(SessionNotFound, match=r"^no session 'sess-X'$") as caught:
            audit_trail(mixed, session="sess-X")
        assert caught.value.pruned is None
        with pytest.raises(SessionNotFound, match=r"^no session 'sess-X'$"):
            export_events(mixed, tmp_path / "out.jsonl", session="sess-X")

    def test_the_commands_say_no_session(self, mixed: EventStore, target: Target, tmp_path: Path) -> None:
        for args in (["audit"], ["flows"], ["export", str(tmp_path / "out.jsonl")]):
            result = cli(target, *args, "--session", "sess-X", code=1)
            assert "no session 'sess-X'" in result.stderr and "pruned" not in result.stderr


class TestOwnCount:
    def test_a_session_of_pruned_and_live_flows_counts_only_its_own(self, mixed: EventStore) -> None:
        trail = audit_trail(mixed, session="sess-M")
        assert [entry.flow_id for entry in trail] == ["m2"]
        assert trail.pruned is not None
        assert (trail.pruned.flows, trail.pruned.events, trail.pruned.unknown_owner) == (1, 3, 0)
        assert trail.pruned.note().startswith(
            "session 'sess-M' owns 1 flow (3 events) pruned by retention into 1 archive, not searched"
        )

    def test_its_export_manifest_counts_its_own(self, mixed: EventStore, tmp_path: Path) -> None:
        manifest = export_events(mixed, tmp_path / "m.jsonl", session="sess-M")
        assert manifest.pruned == {
            "flows": 1,
            "events": 3,
            "archives": 1,
            "session": "sess-M",
            "unknown_owner": 0,
        }
        assert "session 'sess-M' owned 1, and none is in this export" in manifest.warnings[0]

    def test_the_commands_count_its_own(self, mixed: EventStore, target: Target) -> None:
        assert (
            "note: session 'sess-Z' owns 1 flow (3 events)"
            in cli(target, "audit", "--session", "sess-Z").stderr
        )
        assert "note: session 'sess-M' owns 1 flow" in cli(target, "flows", "--session", "sess-M").stderr

    def test_a_restore_gives_the_session_its_flows_back(self, mixed: EventStore) -> None:
        restore(mixed, list_archives(mixed)[0].archive_id, ["z1"])
        trail = audit_trail(mixed, session="sess-Z")
        assert [entry.flow_id for entry in trail] == ["z1"] and trail.pruned is None


class TestUnknownOwner:
    def test_any_session_may_own_a_tombstone_from_before_0019(self, mixed: EventStore) -> None:
        forget_owner(mixed, "z1")
        trail = audit_trail(mixed, session="sess-X")
        assert list(trail) == [] and trail.pruned is not None
        assert (trail.pruned.flows, trail.pruned.unknown_owner) == (1, 1)
        assert trail.pruned.note().startswith(
            "session 'sess-X' may own some of the 1 flow (3 events) pruned by retention into 1 archive "
            "before the store recorded their owners"
        )

    def test_a_session_with_its_own_counts_both(self, mixed: EventStore) -> None:
        forget_owner(mixed, "z1")
        trail = audit_trail(mixed, session="sess-M")
        assert trail.pruned is not None and (trail.pruned.flows, trail.pruned.unknown_owner) == (2, 1)
        assert (
            "owns 1 flow pruned by retention and may own some of the 1 flow pruned before"
            in trail.pruned.note()
        )


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
