"""A pruned flow, or one a restore cut short has put only partly back, takes no append at any revision."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventstore import EventStore, FlowPruned, NewEvent
from eventstore.exportfile import Progress
from eventstore.retention import restore
from projections import FlowService

from .test_retention import DAY, T0, flows, retain

__all__ = ["flows"]  # the fixture, used by name


class Cut(Exception):
    """Stops a restore part way, as a crash or Ctrl-C would."""


def cut_after_first_batch(progress: Progress) -> None:
    """Reported every 1,000 rows read; the first batch of 1,000 is written a few rows after the first."""
    if progress.phase == "importing" and progress.done >= 2000:
        raise Cut


def test_a_half_restored_flow_takes_no_append_until_the_restore_finishes(
    flows: EventStore, tmp_path: Path
) -> None:
    service = FlowService(flows)
    service.start_flow("long", controller_id="c", goal="g", owner_session_key="s")
    flows.append("long", [NewEvent("T", {"i": i}) for i in range(2100)])
    service.finish("long")
    archive_id = retain(flows, tmp_path, T0 + 40 * DAY).archive_id
    assert archive_id is not None
    with pytest.raises(Cut):
        restore(flows, archive_id, ["long"], progress=cut_after_first_batch)
    assert flows.revision("long") == 1000
    last = flows.last_position()
    for expected in (None, 1000, 16):
        with pytest.raises(FlowPruned, match=f"'long': was pruned by retention into archive '{archive_id}'"):
            if expected is None:
                flows.append("long", [NewEvent("T", {})])
            else:
                flows.append("long", [NewEvent("T", {})], expected_revision=expected)
    with pytest.raises(FlowPruned, match="'long': was pruned"), flows.transaction() as tx:
        tx.append("long", [NewEvent("T", {})], expected_revision=1000)
    with pytest.raises(FlowPruned, match="'long': was pruned"):
        service.advance("long", state_patch={"late": True})
    assert flows.last_position() == last and flows.verify().ok
    assert restore(flows, archive_id, ["long"]).events == 2102 - 1000
    assert flows.revision("long") == 2102 and flows.verify().ok
    assert flows.append("long", [NewEvent("T", {})]).revision == 2103


def test_an_append_expecting_a_revision_of_a_pruned_flow_says_it_was_pruned(
    flows: EventStore, tmp_path: Path
) -> None:
    archive_id = retain(flows, tmp_path, T0 + 40 * DAY).archive_id
    with pytest.raises(FlowPruned, match=f"'f1': was pruned by retention into archive '{archive_id}'"):
        flows.append("f1", [NewEvent("T", {})], expected_revision=3)
    assert flows.revision("f1") == 0 and flows.verify().ok
