"""Shutdown stops the long jobs at their next batch: they end `ok`, `stopped`, and the next run goes on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time

from eventstore import EventStore, NewEvent, housekeeping
from eventstore.maintenance import JobContext, Maintenance
from eventstore.maintenance_config import MaintenanceConfig
from projections import FlowProjection, FlowQueries, FlowService


def shut_down_at_first(monkeypatch: pytest.MonkeyPatch, hook: str, service: list[Maintenance]) -> list[int]:
    """Make the job's first call of ``JobContext.<hook>`` ask the service to stop, as SIGTERM does."""
    calls: list[int] = []
    original = getattr(JobContext, hook)

    def stop_then_go_on(self: JobContext, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            service[0].shutdown()
        original(self, **kwargs)

    monkeypatch.setattr(JobContext, hook, stop_then_go_on)
    return calls


def test_integrity_stops_at_its_next_batch_and_the_next_run_goes_on(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.append("f", [NewEvent("Noted", {"n": n}) for n in range(10)])
    config = MaintenanceConfig.parse({"integrity": {"batch_size": 2}})
    service = [Maintenance(store, config)]
    batches = shut_down_at_first(monkeypatch, "renew", service)
    result = service[0].run_once("integrity")
    assert len(batches) == 1
    assert (result.status, result.details) == (
        "ok",
        {"from_position": 1, "to_position": 2, "events_checked": 2, "stopped": True},
    )
    monkeypatch.undo()
    again = Maintenance(store, config).run_once("integrity").details
    assert (again["from_position"], again["to_position"], again.get("stopped")) == (3, 10, None)


def test_retention_stops_at_its_next_progress_report(
    flow_store: EventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flows = FlowService(flow_store)
    with freeze_time("2030-01-01"):
        flows.start_flow("old", controller_id="c", goal="g", owner_session_key="s")
        flows.finish("old", result={})
    config = MaintenanceConfig.parse(
        {"retention": {"keep_days": {"finished": 30}, "archive_dir": str(tmp_path)}}
    )
    service = [Maintenance(flow_store, config)]
    shut_down_at_first(monkeypatch, "renew_if_due", service)
    with freeze_time("2030-03-01"):
        result = service[0].run_once("retention")
        assert (result.status, result.details) == ("ok", {"stopped": True})
        assert [flow.flow_id for flow in FlowQueries(flow_store).flows().items] == ["old"]
        monkeypatch.undo()
        assert Maintenance(flow_store, config).run_once("retention").details["pruned"] == ["old"]


def test_a_backup_stops_at_its_next_step_and_leaves_no_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with EventStore.open(f"sqlite:///{tmp_path / 'live.db'}", projections=[FlowProjection()]) as store:
        store.append("notes", [NewEvent("Noted", {"text": "x" * 5000}) for _ in range(20)])
        monkeypatch.setattr(housekeeping, "PAGES_PER_STEP", 5)
        config = MaintenanceConfig.parse({"backup": {"directory": str(tmp_path / "b")}})
        service = [Maintenance(store, config)]
        steps = shut_down_at_first(monkeypatch, "renew_if_due", service)
        result = service[0].run_once("backup")
    assert (result.status, result.details, len(steps)) == ("ok", {"path": None, "stopped": True}, 1)
    assert list((tmp_path / "b").iterdir()) == []


@pytest.mark.parametrize("job", ["quick-check", "integrity-check"])
def test_a_check_of_the_file_stops_unfinished_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, job: str
) -> None:
    """SIGTERM during SQLite's one long check statement: it ends within a few steps, `ok` and
    `stopped` with no result, not after the whole file was read."""
    with EventStore.open(f"sqlite:///{tmp_path / 'live.db'}") as store:
        store.append("notes", [NewEvent("Noted", {"text": "x" * 5000}) for _ in range(20)])
        monkeypatch.setattr(housekeeping, "CHECK_STEPS", 100)
        service = Maintenance(store)
        asked: list[int] = []

        def stopping(ctx: JobContext) -> bool:
            asked.append(1)
            if len(asked) == 2:
                service.shutdown()  # as SIGTERM does, while the check runs
            return service._stopping.is_set()

        monkeypatch.setattr(JobContext, "stopping", property(stopping))
        result = service.run_once(job)
        assert (result.status, result.details) == ("ok", {"result": None, "stopped": True})
        assert len(asked) == 2
        monkeypatch.undo()
        assert Maintenance(store).run_once(job).details == {"result": "ok"}


def test_catch_up_stops_at_its_next_batch_and_leaves_the_next_projection_to_the_next_run(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from projections import CatchUpRunner

    from .kill_workers import AppliedOnce
    from .test_projections import DecisionsByActor, decide

    decide(store, "agent:a", 3)
    first, second = DecisionsByActor(), AppliedOnce()
    runners = [CatchUpRunner(store, first, batch_size=1), CatchUpRunner(store, second, batch_size=1)]
    decide(store, "agent:a", 3)
    service = [Maintenance(store, catch_up=[first, second])]
    service[0].state["catch-up"] = {runner.projection.name: runner for runner in runners}
    shut_down_at_first(monkeypatch, "renew", service)
    result = service[0].run_once("catch-up")
    assert (result.status, result.details) == ("ok", {"applied": {"decisions_by_actor": 1}, "stopped": True})
    monkeypatch.undo()
    again = Maintenance(store, catch_up=[first, second]).run_once("catch-up").details
    assert again == {"applied": {"decisions_by_actor": 2, "applied_once": 3}}
