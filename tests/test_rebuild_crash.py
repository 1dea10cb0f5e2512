"""A rebuild or a schema upgrade SIGKILLed part way: the store keeps serving, and the next run succeeds.

A killed rebuild leaves its half-filled ``__rebuild`` tables and its claim:
the live read model must be untouched and served by the next open, and the
next rebuild must succeed and equal the read model (here at a clock past the
claim's lease; test_rebuild_takeover.py takes the claim over while it runs).
A killed ``db upgrade`` runs in one transaction (PostgreSQL's DDL is
transactional, and SQLite's inside BEGIN IMMEDIATE): the next upgrade must
bring the schema to head.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from eventstore import NewEvent, migrate, utc_now
from eventstore.migrate import head_revision
from projections import FlowProjection, FlowService, rebuild
from projections.checkpoints import REBUILD_LEASE

from . import kill_workers
from .conftest import Target, _pg_schema
from .kill_workers import kill_during, operation_time
from .readmodels import snapshot

FLOWS = 60
KILL_WINDOW = 0.8  # of an uninterrupted run's measured duration: kills land part way, mostly


def seeded() -> tuple[random.Random, str]:
    """A random source, and the words that replay it: every kill delay is drawn from it."""
    seed = random.randrange(2**32)
    return random.Random(seed), f"random.Random({seed})"


def some_flows(target: Target) -> None:
    with target.open(projections=[FlowProjection()]) as store:
        service = FlowService(store)
        for f in range(FLOWS):
            service.start_flow(f"f{f}", controller_id="c", goal="g", owner_session_key="s")
            service.schedule_step(f"f{f}", step_id="a", name="a", run_id=f"run-{f}")
            store.append(f"f{f}", [NewEvent("Noted", {"n": n}) for n in range(20)])
            service.finish(f"f{f}")


def past_the_lease() -> datetime:
    return utc_now() + REBUILD_LEASE + timedelta(seconds=1)


@pytest.mark.parametrize("kills", [3, pytest.param(10, marks=pytest.mark.slow)])
def test_a_killed_rebuild_leaves_the_read_model_served_and_the_next_rebuild_succeeds(
    target: Target, kills: int
) -> None:
    some_flows(target)
    rng, replay = seeded()
    args = (target.url, target.options, 50, False)
    window = operation_time(kill_workers.rebuild_flows, args) * KILL_WINDOW
    with target.open(projections=[FlowProjection()]) as store:
        before = snapshot(store)
    cut = 0
    for k in range(kills):
        delay = rng.uniform(0.0, window)
        cut += not kill_during(kill_workers.rebuild_flows, args, delay)
        with target.open(projections=[FlowProjection()], lock_timeout=5.0, busy_timeout=5.0) as store:
            assert snapshot(store) == before, f"kill {k} ({replay}): the live read model changed"
            FlowService(store).start_flow(f"new-{k}", controller_id="c", goal="g", owner_session_key="s")
            before = snapshot(store)
        later = past_the_lease()  # the killed child's claim has run out (it renewed it before its kill)
        with target.open(projections=[FlowProjection()], clock=lambda later=later: later) as store:
            rebuild(store, FlowProjection(), batch_size=50)
            assert snapshot(store) == before, f"kill {k} ({replay}): the rebuild differs from the read model"
            assert not [t for t in sa.inspect(store.engine).get_table_names() if t.endswith("__rebuild")]
    assert cut, f"every rebuild finished before its kill (window {window:.3f} s, {replay}): no crash tested"


@contextmanager
def fresh_places(target: Target, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if target.dialect == "sqlite":
        yield Target(f"sqlite:///{tmp_path / f'upgrade-{random.random()}.db'}")
    else:
        with _pg_schema(request.getfixturevalue("pg_database")) as pg:
            yield Target(pg.url, {"schema": pg.options["schema"]})


@pytest.mark.parametrize("kills", [4, pytest.param(12, marks=pytest.mark.slow)])
def test_a_killed_upgrade_is_finished_by_the_next(
    target: Target, request: pytest.FixtureRequest, tmp_path: Path, kills: int
) -> None:
    with fresh_places(target, request, tmp_path) as place:
        window = operation_time(kill_workers.upgrade, (place.url, place.options)) * KILL_WINDOW
    rng, replay = seeded()
    cut = 0
    for k in range(kills):
        with fresh_places(target, request, tmp_path) as place:
            delay = rng.uniform(0.0, window)
            cut += not kill_during(kill_workers.upgrade, (place.url, place.options), delay)
            with place.open(create=True, lock_timeout=5.0, busy_timeout=5.0) as store:
                assert store.schema_revision() == head_revision(), f"kill {k} after {delay} s ({replay})"
                store.append("f", [NewEvent("After", {})])
                assert store.verify().ok
    assert cut, f"every upgrade finished before its kill (window {window:.3f} s, {replay}): no crash tested"


def downgraded_with_events(place: Target, revision: str) -> None:
    """A store at head with events in it, then migrated back down to ``revision``."""
    with place.open(create=True) as store:
        for start in range(0, 3000, 500):
            store.append(f"f{start}", [NewEvent("Old", {"n": n, "pad": "x" * 200}) for n in range(500)])
        with store._backend.write_connection() as conn:  # the store's own connection: its schema
            command.downgrade(migrate._config(conn), revision)


@pytest.mark.parametrize("kills", [3, pytest.param(10, marks=pytest.mark.slow)])
def test_a_killed_upgrade_of_a_store_with_events_is_finished_by_the_next(
    target: Target, request: pytest.FixtureRequest, tmp_path: Path, kills: int
) -> None:
    with fresh_places(target, request, tmp_path) as place:
        downgraded_with_events(place, "0009")
        window = operation_time(kill_workers.upgrade, (place.url, place.options)) * KILL_WINDOW
    rng, replay = seeded()
    cut = 0
    for k in range(kills):
        with fresh_places(target, request, tmp_path) as place:
            downgraded_with_events(place, "0009")
            delay = rng.uniform(0.0, window)
            cut += not kill_during(kill_workers.upgrade, (place.url, place.options), delay)
            with place.open(create=True, lock_timeout=5.0, busy_timeout=5.0) as store:
                assert store.schema_revision() == head_revision(), f"kill {k} after {delay} s ({replay})"
                assert store.last_position() == 3000
                store.append("f", [NewEvent("After", {})])
                assert store.verify().ok
    assert cut, f"every upgrade finished before its kill (window {window:.3f} s, {replay}): no crash tested"
