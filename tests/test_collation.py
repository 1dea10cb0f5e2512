"""Text keys sort by code point on both backends, whatever the PostgreSQL database's collation.

A database created with an ICU or ``en_US`` collation sorts ``a A b B``;
SQLite and PostgreSQL's ``C`` collation sort ``A B a b``. The listings and
their keyset pages must follow the same order everywhere, so the flow id and
name columns are declared ``COLLATE "C"`` on PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from eventstore import EventStore, InvalidInput, NewEvent, RebuildInProgress
from eventstore.cli.exchange import _not_folded
from eventstore.job_leases import claim as claim_job
from eventstore.job_leases import job_status
from eventstore.legal_holds import hold, list_holds
from eventstore.migrate import _config, upgrade
from eventstore.retention import RetentionPolicy, list_archives, run_retention
from eventstore.schema import archives
from projections import FlowProjection, FlowQueries, FlowService, Projection, rebuild
from projections.checkpoints import claim as claim_rebuild

from .conftest import BACKENDS, PG_ADMIN_URL, Target, _admin_connect, _pg_schema
from .readmodels import flow_projection

IDS = ["b", "B", "a", "A"]
CODE_POINT_ORDER = ["A", "B", "a", "b"]
NOON = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
def linguistic_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """A SQLite file, or a schema in a PostgreSQL database whose default collation is ICU's en-US."""
    if request.param == "sqlite":
        yield Target(f"sqlite:///{tmp_path / 'events.db'}")
        return
    request.getfixturevalue("pg_database")  # fails loudly if PostgreSQL is unreachable
    name = f"es_icu_{uuid.uuid4().hex[:12]}"
    with _admin_connect(PG_ADMIN_URL) as admin:
        admin.execute(
            f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' "
            "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
        )
    try:
        with _admin_connect(f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}") as conn:
            # the premise: this database itself sorts linguistically
            rows = conn.execute("SELECT x FROM unnest(ARRAY['b', 'B', 'a', 'A']) AS x ORDER BY x").fetchall()
            assert [x for (x,) in rows] == ["a", "A", "b", "B"]
        with _pg_schema(f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}") as pg:
            yield pg
    finally:
        with _admin_connect(PG_ADMIN_URL) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def linguistic_store(linguistic_target: Target) -> Iterator[EventStore]:
    with linguistic_target.open(projections=[FlowProjection()], clock=lambda: NOON) as opened:
        yield opened


def _started(store: EventStore) -> FlowService:
    service = FlowService(store)
    for flow_id in IDS:
        service.start_flow(flow_id, controller_id="c", goal="g", owner_session_key=flow_id)
    return service


def test_store_flows_are_listed_and_paged_in_code_point_order(linguistic_store: EventStore) -> None:
    for flow_id in IDS:
        linguistic_store.append(flow_id, [NewEvent("Noted", {})])
    assert list(linguistic_store.flows()) == CODE_POINT_ORDER
    paged, after = [], None
    while page := list(linguistic_store.flows(after=after, limit=1)):
        paged += page
        after = page[-1]
    assert paged == CODE_POINT_ORDER
    assert list(linguistic_store.flows(after="B")) == ["a", "b"]
    assert list(linguistic_store.flows(after="")) == CODE_POINT_ORDER


def test_read_model_listings_break_ties_in_code_point_order(linguistic_store: EventStore) -> None:
    service = _started(linguistic_store)
    queries = FlowQueries(linguistic_store)
    assert [f.flow_id for f in queries.flows().items] == CODE_POINT_ORDER  # one created_at for all
    assert [f.flow_id for f in queries.flows(offset=2, limit=2).items] == ["a", "b"]
    assert [s.session_key for s in queries.sessions().items] == CODE_POINT_ORDER
    lease = service.acquire_lease("a", owner_token="w", ttl_seconds=60)
    for step_id in IDS:
        service.schedule_step("a", step_id=step_id, name="tool", run_id=step_id, lease=lease)
        service.start_step("a", step_id, lease=lease)
    assert [s.step_id for s in queries.steps("a")] == CODE_POINT_ORDER
    later = NOON + timedelta(hours=1)
    assert [s.step_id for s in queries.expired_steps(now=later)] == CODE_POINT_ORDER
    assert [s.step_id for s in queries.expired_steps(now=later, after=("a", "B"))] == ["a", "b"]
    rebuild(linguistic_store, flow_projection(linguistic_store))  # a rebuild's tables are the same
    assert [f.flow_id for f in queries.flows().items] == CODE_POINT_ORDER
    assert [s.step_id for s in queries.steps("a")] == CODE_POINT_ORDER


def test_legal_holds_are_listed_in_code_point_order(linguistic_store: EventStore) -> None:
    _started(linguistic_store)
    for flow_id in IDS:
        hold(linguistic_store, flow_id, reason="case 7", by="legal")
    assert [h.flow_id for h in list_holds(linguistic_store)] == CODE_POINT_ORDER


def test_flows_after_an_empty_string_starts_from_the_first(linguistic_store: EventStore) -> None:
    linguistic_store.append("a", [NewEvent("Noted", {})])
    assert list(linguistic_store.flows(after="")) == ["a"]
    with pytest.raises(InvalidInput, match=r"after must be a flow id, or '' for the first flow, not 3"):
        list(linguistic_store.flows(after=3))  # type: ignore[arg-type]


def test_migration_0015_moves_a_stores_flow_ids_to_code_point_order_and_back(
    linguistic_target: Target,
) -> None:
    with linguistic_target.open() as store:
        for flow_id in IDS:
            store.append(flow_id, [NewEvent("Noted", {})])
        with store.engine.connect() as conn:
            command.downgrade(_config(conn), "0014")
            conn.commit()
        linguistic = ["a", "A", "b", "B"] if linguistic_target.dialect == "postgresql" else CODE_POINT_ORDER
        assert list(store.flows()) == linguistic  # the order a store migrated up to 0014 had
        with store.engine.connect() as conn:
            upgrade(conn)
        assert list(store.flows()) == CODE_POINT_ORDER
        assert list(store.flows(after="B")) == ["a", "b"]
        assert store.verify().ok


def _named(name: str, *, kind: str = "inline") -> Projection:
    """A projection called ``name`` with a table of its own (``B`` and ``b`` get different ones)."""

    def define_tables(self: Projection, metadata: sa.MetaData) -> None:
        sa.Table(f"t_{ord(name)}", metadata, sa.Column("k", sa.Integer, primary_key=True))

    attributes = {"name": name, "kind": kind, "define_tables": define_tables}
    return type(f"Named{ord(name)}", (Projection,), attributes)()


def test_maintenance_jobs_are_listed_in_code_point_order(linguistic_store: EventStore) -> None:
    for name in IDS:
        assert claim_job(linguistic_store, name, "me", now=NOON, lease_seconds=60, period=NOON)
    assert [job.name for job in job_status(linguistic_store)] == CODE_POINT_ORDER


def test_projections_an_import_did_not_update_are_named_in_code_point_order(
    linguistic_target: Target,
) -> None:
    with linguistic_target.open(projections=[_named(name) for name in IDS]):
        pass
    with linguistic_target.open() as store:
        assert _not_folded(store) == CODE_POINT_ORDER


def test_rebuilds_that_refuse_retention_are_named_in_code_point_order(
    linguistic_store: EventStore, tmp_path: Path
) -> None:
    for name in IDS:
        assert claim_rebuild(linguistic_store, _named(name, kind="catchup"), "test")
    with pytest.raises(RebuildInProgress) as refused:
        run_retention(linguistic_store, RetentionPolicy(finished=timedelta(days=1)), tmp_path)
    assert refused.value.projections == CODE_POINT_ORDER


def test_archives_of_one_moment_are_listed_in_code_point_order(linguistic_store: EventStore) -> None:
    moment = "2030-01-01T12:00:00+00:00"
    row = {"path": "x", "status": "written", "flows": 0, "events": 0, "created_at": moment}
    with linguistic_store.engine.begin() as conn:
        conn.execute(archives.insert(), [{**row, "archive_id": archive_id} for archive_id in IDS])
    assert [a.archive_id for a in list_archives(linguistic_store)] == CODE_POINT_ORDER
