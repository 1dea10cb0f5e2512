"""Long-running work survives pooled connections the server ended while they sat idle in the pool.

``idle_session_timeout``, a firewall, a failover or ``pg_terminate_backend``
end a pooled connection between two transactions of a loop: the loop's next
transaction begins on a fresh connection instead of failing. The sessions
are ended here by ``pg_terminate_backend``, all the idle ones of the
database but a rebuild's lock session (``test_rebuild_lock_session`` ends
that one). SQLite has no server to end a connection: PostgreSQL only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import pytest

from eventstore import ConnectionLost, NewEvent, RecordedEvent, Transaction
from eventstore.maintenance import Maintenance
from projections import CatchUpRunner, FlowProjection, FlowService, rebuild

from .conftest import Target
from .kill_workers import AppliedOnce, applied_counts
from .readmodels import assert_matches_rebuild, snapshot
from .test_rebuild_crash import some_flows
from .test_rebuild_lock_session import HELD_LOCKS, admin, until
from .test_rebuild_takeover import paused_rebuild

IDLE = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    f" AND state = 'idle' AND pid NOT IN ({HELD_LOCKS})"
)


def end_idle_sessions(target: Target) -> None:
    """End every idle session of the database but a rebuild lock's, and wait until they are gone."""
    with admin(target) as conn:
        pids = [pid for (pid,) in conn.execute(IDLE)]
        assert pids, "no idle pooled connection to end: the test proves nothing"
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        gone = "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)"
        until(lambda: conn.execute(gone, (pids,)).fetchone() == (0,), "the ended sessions are gone")


class EndsItsSession(AppliedOnce):
    """``AppliedOnce`` whose fold ends its own database session, once, at the event at ``armed``:
    the connection dies inside a transaction, past its first statement."""

    name: ClassVar[str] = "ends_its_session"
    armed: ClassVar[int | None] = None

    def apply(self, tx: Transaction, events: Sequence[RecordedEvent]) -> None:
        if EndsItsSession.armed in [event.position for event in events]:
            EndsItsSession.armed = None
            tx.connection.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())")
        super().apply(tx, events)


def counted(n: int) -> list[NewEvent]:
    return [NewEvent("Counted", {"n": k}) for k in range(n)]


def test_a_rebuild_goes_on_after_its_pooled_connections_were_ended_between_batches(pg_target: Target) -> None:
    some_flows(pg_target)
    with pg_target.open(projections=[FlowProjection()]) as store:
        before = snapshot(store)
    failures: list[BaseException] = []
    with paused_rebuild(pg_target, failures):
        end_idle_sessions(pg_target)
    assert not failures
    with pg_target.open(projections=[FlowProjection()]) as store:
        assert snapshot(store) == before
        assert_matches_rebuild(store)


def test_a_catch_up_runner_goes_on_after_its_pooled_connections_were_ended(pg_target: Target) -> None:
    with pg_target.open() as store:
        runner = CatchUpRunner(store, AppliedOnce(), batch_size=20)
        store.append("f", counted(100))
        assert runner.run_once() == 20
        end_idle_sessions(pg_target)
        assert runner.run_until_caught_up() == 80
        assert applied_counts(store, runner.projection) == dict.fromkeys(range(1, 101), 1)


def test_a_flow_command_goes_on_after_the_pools_connections_were_ended(pg_target: Target) -> None:
    with pg_target.open(projections=[FlowProjection()]) as store:
        service = FlowService(store)
        service.start_flow("f", controller_id="c", goal="g", owner_session_key="s")
        end_idle_sessions(pg_target)
        result: Any = service.schedule_step("f", step_id="a", name="a", run_id="run-1")
        assert result.revision == 2
        assert [event.type for event in store.read_flow("f")] == ["FlowStarted", "StepScheduled"]
        assert_matches_rebuild(store)


def test_a_rebuild_begins_on_a_pool_whose_connections_were_ended(pg_target: Target) -> None:
    some_flows(pg_target)
    with pg_target.open(projections=[FlowProjection()]) as store:
        before = snapshot(store)
        end_idle_sessions(pg_target)
        rebuild(store, FlowProjection(), batch_size=20)
        assert snapshot(store) == before


def test_a_rebuild_whose_connection_dies_inside_a_batch_says_to_run_it_again(pg_target: Target) -> None:
    with pg_target.open() as store:
        store.append("f", counted(100))
        EndsItsSession.armed = 50
        with pytest.raises(ConnectionLost) as raised:
            rebuild(store, EndsItsSession(), batch_size=20)
        assert "run the rebuild again (it starts over)" in raised.value.__notes__[0]
        rebuild(store, EndsItsSession(), batch_size=20)
        assert applied_counts(store, EndsItsSession()) == dict.fromkeys(range(1, 101), 1)


def test_a_command_whose_connection_dies_inside_it_says_it_may_have_committed(pg_target: Target) -> None:
    with pg_target.open(projections=[FlowProjection(), EndsItsSession()]) as store:
        service = FlowService(store)
        service.start_flow("f", controller_id="c", goal="g", owner_session_key="s")
        EndsItsSession.armed = 2
        with pytest.raises(ConnectionLost) as raised:
            service.schedule_step("f", step_id="a", name="a", run_id="run-1")
        assert "may have committed before the connection died: read the flow" in raised.value.__notes__[0]
        assert store.revision("f") == 1  # here it had not
        assert service.schedule_step("f", step_id="a", name="a", run_id="run-1").revision == 2
        assert_matches_rebuild(store)


def test_a_catch_up_runner_whose_connection_dies_inside_a_batch_is_run_again_safely(
    pg_target: Target,
) -> None:
    with pg_target.open() as store:
        runner = CatchUpRunner(store, EndsItsSession(), batch_size=20)
        store.append("f", counted(100))
        assert runner.run_once() == 20
        EndsItsSession.armed = 30
        with pytest.raises(ConnectionLost):
            runner.run_once()
        assert runner.run_until_caught_up() == 80
        assert applied_counts(store, runner.projection) == dict.fromkeys(range(1, 101), 1)


def test_a_maintenance_job_runs_on_a_pool_whose_connections_were_ended(pg_target: Target) -> None:
    with pg_target.open() as store:
        service = Maintenance(store)
        store.append("f", counted(3))
        assert service.run_once("integrity").status == "ok"
        store.append("f", counted(2))
        end_idle_sessions(pg_target)
        second = service.run_once("integrity")
        assert (second.status, second.error) == ("ok", None)
        assert (second.details["from_position"], second.details["to_position"]) == (4, 5)
