"""``log_stats`` counts what is stored: events pruned by retention are not in their day's count."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from eventstore.retention import run_retention
from eventstore.stats import log_stats
from projections import FlowProjection, FlowService
from projections.pruning import prune_flow_read_models

from .conftest import Target


def test_events_pruned_by_retention_are_not_counted_per_day(target: Target, tmp_path: Path) -> None:
    now = [datetime(2030, 1, 1, 12, tzinfo=UTC)]
    with target.open(projections=[FlowProjection()], clock=lambda: now[0]) as store:
        service = FlowService(store)
        for flow_id in ("a", "b", "c", "open"):
            service.start_flow(flow_id, controller_id="c", goal="g", owner_session_key="s")
            if flow_id != "open":
                service.finish(flow_id)
        now[0] = datetime(2030, 1, 3, 12, tzinfo=UTC)
        pruned = run_retention(store, {"finished": 1}, tmp_path, pruners=[prune_flow_read_models])
        assert pruned.events_pruned == 6
        figures = log_stats(store, days=3)
    assert (figures.events, figures.last_position) == (1, 7)
    assert [(day.day.isoformat(), day.events) for day in figures.per_day] == [
        ("2030-01-01", 1),
        ("2030-01-02", 0),
        ("2030-01-03", 0),
    ]
