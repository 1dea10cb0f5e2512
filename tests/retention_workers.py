"""A child process for the retention crash tests: a run that stops at a given step until it is killed."""

from __future__ import annotations

import time
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

from eventstore import EventStore
from eventstore.exportfile import Progress
from eventstore.retention import run_retention
from projections import FlowProjection
from projections.pruning import prune_flow_read_models

HELD_FOR = 120.0  # a bound on a child nobody kills, never a clock


def retain_until(
    url: str, options: dict[str, Any], archive_dir: str, now: str, phase: str, signal: Connection
) -> None:
    """Run retention (finished flows kept 30 days) with the clock at ``now``.

    When the run reports ``phase`` ("written", "verified"), send it and sleep
    there, inside the run, until the parent kills this process.
    """
    moment = datetime.fromisoformat(now)

    def progress(item: Progress) -> None:
        if item.phase == phase:
            signal.send(phase)
            time.sleep(HELD_FOR)

    with EventStore.open(url, **options, clock=lambda: moment, projections=[FlowProjection()]) as store:
        run_retention(
            store, {"finished": 30}, archive_dir, pruners=[prune_flow_read_models], progress=progress
        )
    signal.send("done")
