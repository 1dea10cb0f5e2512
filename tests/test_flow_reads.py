"""Reading the flow read models costs the page, not the table: counted by the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from freezegun import freeze_time

from eventstore import EventStore
from projections import FlowQueries, FlowService
from projections.flows import FlowProjection
from tests.read_work import call_work

NOON = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def finished_flows(service: FlowService, prefix: str, count: int, *, steps: int = 0) -> None:
    """Flows whose worker held a lease and finished: the lease is kept, expired, on the finished row."""
    for n in range(count):
        flow_id = f"{prefix}-{n:04}"
        service.start_flow(flow_id, controller_id="c", goal="g", owner_session_key="s")
        lease = service.acquire_lease(flow_id, owner_token="w", ttl_seconds=60)
        for step in range(steps):
            service.schedule_step(
                flow_id, step_id=f"s{step}", name="t", run_id=f"{flow_id}/{step}", lease=lease
            )
            service.start_step(flow_id, f"s{step}", lease=lease)
            service.complete_step(flow_id, f"s{step}", result={}, lease=lease)
        service.finish(flow_id, result={})


def healthy_flows(service: FlowService, prefix: str, count: int) -> None:
    """Open flows whose worker holds its lease for a day: nobody needs to resume them."""
    for n in range(count):
        flow_id = f"{prefix}-{n:04}"
        service.start_flow(flow_id, controller_id="c", goal="g", owner_session_key="s")
        service.acquire_lease(flow_id, owner_token="w", ttl_seconds=86400)


def interrupted_work(store: EventStore) -> int:
    def listing() -> None:
        assert [f.flow_id for f in FlowQueries(store).interrupted(limit=5).items] == ["stuck"]

    return call_work(store, [FlowProjection().table("flows").name], listing)


def test_listing_interrupted_flows_reads_neither_finished_nor_healthy_flows(flow_store: EventStore) -> None:
    service = FlowService(flow_store)
    with freeze_time(NOON) as clock:
        service.start_flow("stuck", controller_id="c", goal="g", owner_session_key="s")
        service.acquire_lease("stuck", owner_token="dead", ttl_seconds=60)
        finished_flows(service, "a", 5)
        clock.move_to(NOON + timedelta(hours=1))
        few = interrupted_work(flow_store)
        finished_flows(service, "b", 100)  # every one's lease expired too, long ago
        healthy_flows(service, "c", 100)
        clock.move_to(NOON + timedelta(hours=2))
        many = interrupted_work(flow_store)
    assert few > 0, "the database reported no work: nothing was measured"
    assert many <= few * 1.2, (few, many)  # before: every open flow read, and the matches sorted


def test_sweeping_expired_steps_reads_no_finished_flow(flow_store: EventStore) -> None:
    """The sweeper's query (``expired_steps``) reads the open flows, not the finished ones' steps."""
    service, queries = FlowService(flow_store), FlowQueries(flow_store)
    tables = [FlowProjection().table(name).name for name in ("flows", "flow_steps")]
    with freeze_time(NOON) as clock:
        service.start_flow("stuck", controller_id="c", goal="g", owner_session_key="s")
        lease = service.acquire_lease("stuck", owner_token="dead", ttl_seconds=60)
        service.schedule_step("stuck", step_id="s", name="tool", run_id="stuck/s", lease=lease)
        service.start_step("stuck", "s", lease=lease)
        finished_flows(service, "a", 5)
        clock.move_to(NOON + timedelta(hours=1))
        few = call_work(flow_store, tables, lambda: queries.expired_steps(limit=5))
        finished_flows(service, "b", 150, steps=2)
        clock.move_to(NOON + timedelta(hours=2))
        many = call_work(flow_store, tables, lambda: queries.expired_steps(limit=5))
    assert [step.step_id for step in queries.expired_steps(now=NOON + timedelta(hours=2))] == ["s"]
    assert few > 0, "the database reported no work: nothing was measured"
    assert many <= few * 1.2, (few, many)
