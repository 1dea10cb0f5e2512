"""Retiring a projection, or handing it to a runner, while a live rebuild of it runs: refused at once
with RebuildInProgress, not after waiting for the write lock a SQLite rebuild's batches hold (and then
acting on what the rebuild had just swapped in)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from eventstore import EventStore, RebuildInProgress
from projections import CatchUpRunner, make_catch_up, retire
from projections.status import projection_statuses

from .conftest import Target
from .test_projections import DecisionsByActor, decide
from .test_rebuild_takeover import appends_held, paused_rebuild


@contextmanager
def during_rebuild(target: Target) -> Iterator[EventStore]:
    """A store with short waits, while a live rebuild of ``decisions_by_actor`` is paused and the
    append lock is held (as the rebuild's next batch holds it on SQLite)."""
    failures: list[BaseException] = []
    with (
        paused_rebuild(target, failures, DecisionsByActor()),
        target.open(busy_timeout=0.5, lock_timeout=0.5) as store,
        appends_held(target),
    ):
        yield store
    assert not failures


@pytest.mark.parametrize("inline", [False, True], ids=["catch-up", "inline"])
def test_retire_is_refused_at_once_and_drops_nothing(target: Target, inline: bool) -> None:
    with target.open(**({"projections": [DecisionsByActor()]} if inline else {})) as store:
        decide(store, "agent:a", 6)
        if not inline:
            CatchUpRunner(store, DecisionsByActor())
    refused = pytest.raises(RebuildInProgress, match="retiring projection 'decisions_by_actor' refused")
    with during_rebuild(target) as store, refused:
        retire(store, "decisions_by_actor", by="ops:ann")
    with target.open() as store:
        assert [status.name for status in projection_statuses(store)] == ["decisions_by_actor"]
        assert store.last_position() == 6  # no ProjectionRetired


def test_a_handover_is_refused_at_once_and_one_catch_up_already_needs_no_lock(target: Target) -> None:
    with target.open(projections=[DecisionsByActor()]) as store:
        decide(store, "agent:a", 6)
    refused = pytest.raises(RebuildInProgress, match="handing over projection 'decisions_by_actor' refused")
    with during_rebuild(target) as store, refused:
        make_catch_up(store, "decisions_by_actor", by="ops:ann")
    with target.open() as store:
        (status,) = projection_statuses(store)
        assert (status.kind, store.last_position()) == ("inline", 6)
        make_catch_up(store, "decisions_by_actor", by="ops:ann")
    with during_rebuild(target) as store:
        assert make_catch_up(store, "decisions_by_actor", by="ops:ann").kind == "catchup"  # as it is
