"""The lease sweeper: steps left running under an expired lease are ended, and their flows resumed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from freezegun import freeze_time

from eventstore import EventStore
from eventstore.flows import StepCompleted
from eventstore.maintenance import Maintenance
from eventstore.maintenance_config import MaintenanceConfig
from projections import FlowQueries, FlowService, Lease
from projections.recovery import sweep_expired_leases

from .conftest import Target
from .readmodels import assert_matches_rebuild, snapshot

NOON = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def leased_flow(service: FlowService, flow_id: str, steps: list[str], ttl: float = 60) -> Lease:
    """A flow whose worker holds a lease and has started ``steps``."""
    service.start_flow(flow_id, controller_id="c", goal="g", owner_session_key="s")
    lease = service.acquire_lease(flow_id, owner_token="worker-1", ttl_seconds=ttl)
    for step_id in steps:
        service.schedule_step(
            flow_id, step_id=step_id, name="tool", run_id=f"{flow_id}/{step_id}", lease=lease
        )
        service.start_step(flow_id, step_id, lease=lease)
    return lease


def statuses(store: EventStore, flow_id: str) -> dict[str, str]:
    return {step.step_id: step.status for step in FlowQueries(store).steps(flow_id)}


class TestSweeper:
    def test_a_lease_is_swept_after_it_expires_not_before(self, flow_store: EventStore) -> None:
        service = FlowService(flow_store)
        maintenance = Maintenance(flow_store)
        with freeze_time(NOON - timedelta(minutes=1)) as clock:
            leased_flow(service, "f", ["s1"])  # the lease expires at 12:00
            clock.move_to(NOON - timedelta(seconds=1))
            assert maintenance.run_once("sweep-leases").details["swept"] == 0
            clock.move_to(NOON + timedelta(seconds=1))
            assert maintenance.run_once("sweep-leases").details == {
                "swept": 1,
                "skipped": 0,
                "steps": ["f/s1"],
            }
        step = FlowQueries(flow_store).step("f", "s1")
        assert (step.status, step.reason) == ("timed_out", "lease expired: the worker stopped renewing it")
        (event,) = flow_store.read_flow("f", from_revision=flow_store.revision("f"))
        assert (event.type, event.metadata["actor"]) == ("StepTimedOut", "eventstore:sweeper")

    def test_terminal_steps_are_never_touched(self, flow_store: EventStore) -> None:
        service = FlowService(flow_store)
        with freeze_time(NOON):
            lease = leased_flow(service, "f", ["done", "failed", "skipped", "stuck"])
            service.complete_step("f", "done", result={"ok": 1}, lease=lease)
            service.fail_step("f", "failed", error="bad", lease=lease)
            service.skip_step("f", "skipped", reason="n/a", lease=lease)
            before = {k: v for k, v in snapshot(flow_store).items() if k != "flows"}
            revision = flow_store.revision("f")
        with freeze_time(NOON + timedelta(hours=1)):
            report = sweep_expired_leases(service)
        assert report.swept == [("f", "stuck")]
        assert [e.type for e in flow_store.read_flow("f", from_revision=revision + 1)] == ["StepTimedOut"]
        after = snapshot(flow_store)["flow_steps"]
        assert [row for row in after if row["step_id"] != "stuck"] == [
            row for row in before["flow_steps"] if row["step_id"] != "stuck"
        ]

    def test_the_read_models_equal_a_rebuild_after_a_sweep(self, flow_store: EventStore) -> None:
        service = FlowService(flow_store)
        with freeze_time(NOON):
            for n in range(5):
                leased_flow(service, f"f{n}", ["a", "b"], ttl=30 * (n + 1))
            service.finish("f4", result={})
        with freeze_time(NOON + timedelta(seconds=100)):
            report = sweep_expired_leases(service, on_expired="fail", batch_size=2)
        assert sorted(report.swept) == [(f"f{n}", s) for n in range(3) for s in "ab"]
        assert statuses(flow_store, "f0") == {"a": "failed", "b": "failed"}
        assert statuses(flow_store, "f3") == {"a": "running", "b": "running"}
        assert_matches_rebuild(flow_store)

    def test_retry_puts_the_step_back_for_the_next_worker(self, flow_store: EventStore) -> None:
        service = FlowService(flow_store)
        with freeze_time(NOON):
            leased_flow(service, "f", ["s1"])
        with freeze_time(NOON + timedelta(minutes=5)):
            sweep_expired_leases(service, on_expired="retry")
        step = FlowQueries(flow_store).step("f", "s1")
        assert (step.status, step.retry_count, step.error) == (
            "scheduled",
            1,
            "lease expired: the worker stopped renewing it",
        )

    def test_a_lease_renewed_meanwhile_is_left_to_its_worker(self, flow_store: EventStore) -> None:
        service = FlowService(flow_store)
        with freeze_time(NOON):
            leased_flow(service, "f", ["s1"])
            # judged as of 12:05 by the query, but the command checks the lease by the store's clock
            report = sweep_expired_leases(service, now=NOON + timedelta(minutes=5))
        assert report.skipped == [("f", "s1", "the lease was renewed or taken over meanwhile")]
        assert statuses(flow_store, "f") == {"s1": "running"}

    def test_a_step_that_ended_meanwhile_is_skipped(self, target: Target, flow_store: EventStore) -> None:
        service = FlowService(flow_store)
        with freeze_time(NOON):
            leased_flow(service, "f", ["s1"])
        # The worker completes the step through a store without the flow read models, so the
        # sweeper's query still finds it running; its command reads the log and finds it ended.
        with target.open() as worker, freeze_time(NOON + timedelta(seconds=30)):
            completed = StepCompleted(step_id="s1", result={"late": True})
            worker.append("f", [completed], expected_revision=4, metadata={"actor": "worker-1"})
        with freeze_time(NOON + timedelta(minutes=5)):
            report = sweep_expired_leases(service)
        assert report.skipped == [("f", "s1", "the step ended meanwhile (completed)")]
        assert [(e.type, e.data["result"]) for e in flow_store.read_flow("f", from_revision=5)] == [
            ("StepCompleted", {"late": True})
        ]

    def test_a_store_without_flow_read_models_skips_the_job(self, store: EventStore) -> None:
        result = Maintenance(store).run_once("sweep-leases")
        assert (result.status, result.details["reason"]) == (
            "skipped",
            "the store was opened without FlowProjection",
        )


class TestInterruptedFlows:
    def test_interrupted_flows_are_listed_then_resumed(self, flow_store: EventStore) -> None:
        service, queries = FlowService(flow_store), FlowQueries(flow_store)
        config = MaintenanceConfig.parse({"sweeper": {"reason": "worker died"}})
        with freeze_time(NOON) as clock:
            leased_flow(service, "f", ["s1"])
            leased_flow(service, "healthy", ["s1"], ttl=3600)
            clock.move_to(NOON + timedelta(minutes=2))
            Maintenance(flow_store, config).run_once("sweep-leases")
            assert [f.flow_id for f in queries.interrupted().items] == ["f"]
            # resume: a new worker takes the lease (fencing the dead one off) and redoes the step
            lease = service.acquire_lease("f", owner_token="worker-2", ttl_seconds=60)
            assert queries.interrupted().total == 0 and lease.generation == 2
            service.schedule_step(
                "f", step_id="s1-again", name="tool", run_id="f/s1#2", iteration=1, lease=lease
            )
            service.start_step("f", "s1-again", lease=lease)
            service.complete_step("f", "s1-again", result={"ok": True}, lease=lease)
            service.finish("f", result={"ok": True})
        assert statuses(flow_store, "f") == {"s1": "timed_out", "s1-again": "completed"}
        assert queries.step("f", "s1").reason == "worker died"
