"""Where each projection stands: how far behind the log a catch-up one is, and a rebuild's claim.

A rebuild killed with SIGKILL leaves its claim, its lease still running:
it must show as dead (its rebuild lock went with its process), not
under way; a first build, which has no checkpoint yet, is listed too.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

from eventstore import EventStore, NewEvent, utc_now
from eventstore.cli import main
from projections import CatchUpRunner, FlowProjection, Progress, Projection, rebuild
from projections.checkpoints import REBUILD_LEASE, claim
from projections.status import RebuildStatus, projection_statuses

from . import kill_workers
from .conftest import Target
from .kill_workers import CHILD_TIMEOUT, kill_during
from .test_projections import DecisionsByActor, decide
from .test_rebuild_crash import some_flows

T0 = datetime(2026, 12, 7, 12, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def test_a_catch_up_projection_is_behind_by_the_events_it_has_yet_to_apply(target: Target) -> None:
    clock = Clock()
    with target.open(projections=[FlowProjection()], clock=clock) as store:
        decide(store, "agent:a", 3)
        runner = CatchUpRunner(store, DecisionsByActor())  # built from the log: it has applied all 3
        built = store.last_position()
        clock.now = T0 + timedelta(minutes=5)
        decide(store, "agent:b", 4)
        by_name = {status.name: status for status in projection_statuses(store)}
        assert set(by_name) == {"decisions_by_actor", "flows"}
        behind = by_name["decisions_by_actor"]
        assert (behind.kind, behind.version, behind.position, behind.behind) == ("catchup", 1, built, 4)
        assert behind.updated_at == T0 and behind.rebuilding_until is None
        flows = by_name["flows"]
        assert (flows.kind, flows.position, flows.behind) == ("inline", None, 0)
        runner.run_once()
        caught_up = {status.name: status for status in projection_statuses(store)}["decisions_by_actor"]
        assert (caught_up.position, caught_up.behind) == (store.last_position(), 0)
        assert caught_up.updated_at == T0 + timedelta(minutes=5)


def test_a_claim_without_the_lock_shows_its_lease_and_renewal_until_it_runs_out(target: Target) -> None:
    """As written where no lock can be had, or by older code: only the lease speaks for its holder."""
    clock = Clock()
    with target.open(clock=clock) as store:
        decide(store, "agent:a")
        projection = DecisionsByActor()
        CatchUpRunner(store, projection)
        assert claim(store, projection, "build-1")  # what a rebuild takes before it builds
        (status,) = projection_statuses(store)
        assert status.rebuilding_until == T0 + REBUILD_LEASE
        assert status.rebuild == RebuildStatus("leased", T0, T0 + REBUILD_LEASE, 0)
        clock.now = T0 + REBUILD_LEASE + timedelta(seconds=1)  # its holder died: the lease ran out
        (status,) = projection_statuses(store)
        assert status.rebuilding_until is None
        assert status.rebuild == RebuildStatus("expired", T0, T0 + REBUILD_LEASE, 0)


def cli_projections(target: Target) -> str:
    schema = target.options.get("schema")
    result = CliRunner().invoke(
        main, ["--url", target.url, *(["--schema", schema] if schema else []), "projections"]
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_a_rebuild_killed_mid_way_is_shown_dead_while_its_lease_runs(target: Target) -> None:
    some_flows(target)
    assert not kill_during(kill_workers.rebuild_flows, (target.url, target.options, 20, True), 0.0)
    now = utc_now()
    with target.open(projections=[FlowProjection()], clock=lambda: now) as store:
        (status,) = projection_statuses(store)
    assert status.rebuild is not None and status.rebuild.lease_until > now, (
        "its lease ran out: nothing tested"
    )
    assert status.rebuild.state == "died" and status.rebuilding_until is None
    assert status.rebuild.renewed_at <= now and status.version == FlowProjection.version
    assert "rebuild died: its process no longer holds the rebuild lock" in cli_projections(target)


def test_a_first_build_killed_mid_way_is_listed_dead(target: Target) -> None:
    with target.open() as store:
        store.append("f", [NewEvent("Counted", {"n": n}) for n in range(50)])
    assert not kill_during(kill_workers.build_for_catch_up, (target.url, target.options), 0.0)
    with target.open() as store:
        (status,) = projection_statuses(store)
    assert status.name == "applied_once" and status.version is None and status.updated_at is None
    assert status.rebuild is not None and status.rebuild.state == "died"
    assert status.rebuild.folded == 0  # killed inside its only batch: nothing of it was committed
    assert (
        "first build died: its process no longer holds the rebuild lock; 0 events folded"
        in cli_projections(target)
    )


@contextmanager
def paused_rebuild(target: Target, projection: Projection) -> Iterator[None]:
    """``projection`` rebuilt in a thread, two events a batch, paused after its first batch (its claim
    and its rebuild lock held) until the block ends."""
    paused, go = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def hold(_: Progress) -> None:
        if not paused.is_set():
            paused.set()
            go.wait()

    def rebuilder() -> None:
        try:
            with target.open() as store:
                rebuild(store, projection, batch_size=2, progress=hold)
        except BaseException as exc:
            failures.append(exc)
            paused.set()

    thread = threading.Thread(target=rebuilder)
    thread.start()
    try:
        assert paused.wait(CHILD_TIMEOUT) and not failures, failures
        yield
    finally:
        go.set()
        thread.join()
    assert not failures, failures


def test_a_first_build_under_way_is_listed_with_its_progress(target: Target) -> None:
    with target.open() as store:
        decide(store, "agent:a", 3)
        with paused_rebuild(target, DecisionsByActor()):
            (status,) = projection_statuses(store)
            shown = cli_projections(target)
        assert status.name == "decisions_by_actor" and status.version is None and status.behind is None
        assert status.rebuild is not None and (status.rebuild.state, status.rebuild.folded) == ("running", 2)
        assert status.rebuilding_until == status.rebuild.lease_until
        assert "first build running: 2 events folded" in shown
        (status,) = projection_statuses(store)  # the build is done: its checkpoint, and no claim
        assert (status.version, status.position, status.rebuild) == (1, 3, None)


def test_a_live_rebuild_is_shown_running(target: Target) -> None:
    with target.open() as store:
        decide(store, "agent:a", 3)
        CatchUpRunner(store, DecisionsByActor())
        with paused_rebuild(target, DecisionsByActor()):
            (status,) = projection_statuses(store)
            shown = cli_projections(target)
        assert status.rebuild is not None and (status.rebuild.state, status.rebuild.folded) == ("running", 2)
        assert status.rebuilding_until == status.rebuild.lease_until
        assert status.rebuild.renewed_at == status.rebuild.lease_until - REBUILD_LEASE
        assert "rebuild running: 2 events folded, renewed " in shown


def test_the_cli_lists_them_as_a_table_and_as_json(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    with EventStore.open(url, projections=[FlowProjection()]) as store:
        decide(store, "agent:a", 2)
        CatchUpRunner(store, DecisionsByActor())
        decide(store, "agent:a", 1)
    result = CliRunner().invoke(main, ["--url", url, "projections"])
    assert result.exit_code == 0, result.output
    header, *lines = result.output.splitlines()
    assert header.split() == [
        "PROJECTION",
        "KIND",
        "VERSION",
        "APPLIED",
        "TO",
        "BEHIND",
        "UPDATED",
        "REBUILD",
    ]
    assert lines[0].split()[:6] == ["decisions_by_actor", "catch-up", "1", "2", "1", "event"]
    assert lines[1].split()[:6] == ["flows", "inline", str(FlowProjection.version), "every", "append", "-"]
    as_json = json.loads(CliRunner().invoke(main, ["--url", url, "projections", "--json"]).output)
    assert [(p["name"], p["position"], p["behind"]) for p in as_json] == [
        ("decisions_by_actor", 2, 1),
        ("flows", None, 0),
    ]


def test_a_store_with_no_projection_says_so(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    EventStore.open(url).close()
    result = CliRunner().invoke(main, ["--url", url, "projections"])
    assert result.exit_code == 0 and result.output == "no projections: none has been built in this store\n"
