"""Which flows a run selects under ``max_flows``: the eligible never starve, every held one is reported."""

from __future__ import annotations

from pathlib import Path

from freezegun import freeze_time

from eventstore import EventStore, NewEvent
from eventstore.retention import RetentionPolicy, hold, run_retention
from projections import FlowService

from .test_retention import DAY, FINISHED_30, T0, flows, retain

__all__ = ["flows"]  # the fixture, used by name


def test_every_held_flow_is_reported_whatever_max_flows(flows: EventStore, tmp_path: Path) -> None:
    for flow_id in ("f1", "f2"):
        hold(flows, flow_id, reason="audit", by="ann")
    policy = RetentionPolicy(finished=30 * DAY, failed=30 * DAY)
    with freeze_time(T0 + 40 * DAY):
        report = run_retention(flows, policy, tmp_path, max_flows=1, dry_run=True)
    assert (report.eligible, report.held) == (("f3",), ("f1", "f2"))


def test_older_flows_no_longer_finished_do_not_hide_the_finished_ones(
    flows: EventStore, tmp_path: Path
) -> None:
    service = FlowService(flows)
    with freeze_time(T0 - DAY):  # older than f1 and f2: the first candidates for `finished`
        for n in range(3):
            service.start_flow(f"reopened-{n}", controller_id="c", goal="g", owner_session_key="s")
            service.finish(f"reopened-{n}")
            flows.append(f"reopened-{n}", [NewEvent("FlowResumed", {})])
    with freeze_time(T0 + 40 * DAY):
        assert run_retention(flows, FINISHED_30, tmp_path, max_flows=2, dry_run=True).eligible == ("f1", "f2")
    assert retain(flows, tmp_path, T0 + 40 * DAY).pruned == ("f1", "f2")
    assert [flows.revision(f"reopened-{n}") for n in range(3)] == [3, 3, 3]
