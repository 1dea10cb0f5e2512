"""Long-running work survives pooled connections the server ended while they sat idle in the pool.

``idle_session_timeout``, a firewall, a failover or ``pg_terminate_backend``
end a pooled connection between two transactions of a loop: the loop's next
transaction begins on a fresh connection instead of failing. The sessions
are ended here by ``pg_terminate_backend``, all the idle ones of the
database but a rebuild's lock session (``test_rebuild_lock_session`` ends
that one). SQLite has no server to end a connection: PostgreSQL only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa

from eventstore import (
    ConnectionLost,
    EventStore,
    NewEvent,
    ReconnectFailed,
    RecordedEvent,
    Transaction,
    reconnecting,
)
from eventstore.maintenance import Maintenance
from projections import CatchUpRunner, FlowProjection, FlowService, rebuild
from projections.checkpoints import read_checkpoint
from projections.indexes import add_missing_indexes

from .conftest import Target
from .kill_workers import AppliedOnce, applied_counts
from .readmodels import assert_matches_rebuild, snapshot
from .tcp_proxy import TcpProxy, tcp_proxy
from .test_rebuild_crash import some_flows
from .test_rebuild_lock_session import HELD_LOCKS, admin, until
from .test_rebuild_takeover import paused_rebuild, the_claim

IDLE = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    f" AND state = 'idle' AND pid NOT IN ({HELD_LOCKS})"
)


def end_idle_sessions(target: Target) -> set[int]:
    """End every idle session of the database but a rebuild lock's, wait until they are gone; their pids."""
    with admin(target) as conn:
        pids = [pid for (pid,) in conn.execute(IDLE)]
        assert pids, "no idle pooled connection to end: the test proves nothing"
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        gone = "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)"
        until(lambda: conn.execute(gone, (pids,)).fetchone() == (0,), "the ended sessions are gone")
    return set(pids)


def fill_pool(store: EventStore, n: int = 3) -> set[int]:
    """Check ``n`` connections out at once (as other threads of a process do) and back in: the pool
    then holds ``n`` idle ones, which it hands out oldest first. Their sessions' pids."""
    with ExitStack() as stack:
        conns = [stack.enter_context(store.reading()) for _ in range(n)]
        pids = {conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() for conn in conns}
    assert len(pids) == n
    return pids


def end_pooled_sessions(target: Target, store: EventStore, n: int = 3) -> None:
    """Fill ``store``'s pool with ``n`` idle connections, then end them all."""
    pooled = fill_pool(store, n)
    assert pooled <= end_idle_sessions(target)


@contextmanager
def sessions_checked_out() -> Iterator[list[int]]:
    """The backend pids of every pooled connection any engine checks out meanwhile, in order."""
    pids: list[int] = []

    def note(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        pids.append(dbapi_connection.info.backend_pid)

    sa.event.listen(sa.pool.Pool, "checkout", note)
    try:
        yield pids
    finally:
        sa.event.remove(sa.pool.Pool, "checkout", note)


def no_fresh_tables(store: EventStore) -> bool:
    return not [name for name in sa.inspect(store.engine).get_table_names() if "__rebuild" in name]


@pytest.fixture(autouse=True)
def disarmed() -> Iterator[None]:
    """``EndsItsSession.armed`` is class state: a test that fails before its fold fired leaves it set."""
    EndsItsSession.armed = None
    try:
        yield
    finally:
        EndsItsSession.armed = None


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
    with sessions_checked_out() as used, paused_rebuild(pg_target, failures):
        before_the_end = set(used)
        ended = end_idle_sessions(pg_target)
        after_the_end = len(used)
    assert not failures
    assert ended <= before_the_end  # the sessions ended were the paused rebuild's pooled ones
    assert set(used[after_the_end:]) - ended  # it found one dead, and went on on fresh ones
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
        assert not isinstance(raised.value, ReconnectFailed)
        assert "run the rebuild again (it starts over)" in raised.value.__notes__[0]
        assert no_fresh_tables(store)  # dropped on a fresh connection
        assert the_claim(store, EndsItsSession.name) is None  # and the claim given up
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


def test_a_flow_command_goes_on_after_several_pooled_connections_were_ended(pg_target: Target) -> None:
    """The first dead connection found invalidates its older pool-mates: the one retry gets a live one."""
    with pg_target.open(projections=[FlowProjection()]) as store:
        service = FlowService(store)
        service.start_flow("f", controller_id="c", goal="g", owner_session_key="s")
        end_pooled_sessions(pg_target, store)
        result: Any = service.schedule_step("f", step_id="a", name="a", run_id="run-1")
        assert result.revision == 2
        assert_matches_rebuild(store)


def test_reads_go_on_after_several_pooled_connections_were_ended(pg_target: Target) -> None:
    with pg_target.open() as store:
        store.append("f", counted(5))
        end_pooled_sessions(pg_target, store)
        assert [event.revision for event in store.read_flow("f")] == [1, 2, 3, 4, 5]
        end_pooled_sessions(pg_target, store)
        assert [event.position for event in store.read_all()] == [1, 2, 3, 4, 5]
        end_pooled_sessions(pg_target, store)
        assert (store.revision("f"), store.last_position()) == (5, 5)


def test_a_rebuild_goes_on_after_several_pooled_connections_were_ended_between_batches(
    pg_target: Target,
) -> None:
    """A projection without a bulk fill reads each batch (``read_all``) before its batch's transaction."""
    with pg_target.open() as store:
        store.append("f", counted(60))
        ended: list[int] = []

        def end_once(_: object) -> None:
            if not ended:
                ended.append(1)
                end_pooled_sessions(pg_target, store)

        rebuild(store, AppliedOnce(), batch_size=10, progress=end_once)
        assert ended
        assert applied_counts(store, AppliedOnce()) == dict.fromkeys(range(1, 61), 1)


def end_own_session(conn: sa.Connection) -> None:
    conn.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())")


def test_a_transaction_whose_fresh_connection_is_dead_too_says_nothing_ran(pg_target: Target) -> None:
    with pg_target.open() as store:
        with (
            pytest.raises(ReconnectFailed, match="a fresh one too; nothing of the transaction ran") as raised,
            reconnecting.transaction(store, end_own_session) as tx,
        ):
            tx.append("f", counted(1))
        assert isinstance(raised.value, ConnectionLost)
        assert isinstance(raised.value.__cause__, ConnectionLost)  # the first loss
        assert store.revision("f") == 0


def test_a_transaction_that_cannot_open_a_fresh_connection_says_nothing_ran(pg_target: Target) -> None:
    with tcp_proxy(pg_target.url) as proxy, proxied(pg_target, proxy).open() as store:
        store.append("f", counted(1), expected_revision=0)  # a pooled connection, through the proxy
        proxy.down()  # the database goes away: the pooled connection is dead, a new one refused
        with (
            pytest.raises(ReconnectFailed, match="no fresh one could be opened") as raised,
            reconnecting.transaction(store) as tx,
        ):
            tx.append("f", counted(1))
        assert isinstance(raised.value.__cause__, ConnectionLost)  # the pooled one's loss
    with pg_target.open() as store:
        assert store.revision("f") == 1


def test_a_command_while_the_database_is_down_says_it_did_not_run(pg_target: Target) -> None:
    flows = [FlowProjection()]
    with tcp_proxy(pg_target.url) as proxy, proxied(pg_target, proxy).open(projections=flows) as store:
        service = FlowService(store)
        service.start_flow("f", controller_id="c", goal="g", owner_session_key="s")
        proxy.down()
        with pytest.raises(ReconnectFailed) as raised:
            service.finish("f", result={})
        assert "the command on flow 'f' did not run" in " ".join(raised.value.__notes__)
    with pg_target.open(projections=flows) as store:
        assert store.revision("f") == 1


def proxied(target: Target, proxy: TcpProxy) -> Target:
    """``target``'s store, reached through ``proxy``."""
    return Target(proxy.route(target.url), target.options)


def test_a_store_opens_its_read_models_on_a_pool_whose_connections_were_ended(pg_target: Target) -> None:
    """Opening with FlowProjection checks its indexes on a read connection: one the server ended
    (CI's idle_session_timeout test met it) raised ConnectionLost out of ``open``."""
    some_flows(pg_target)
    with pg_target.open(projections=[FlowProjection()]) as store:
        with store.reading() as conn:
            checkpoint = read_checkpoint(conn, "flows")
        assert checkpoint is not None
        fill_pool(store)
        end_idle_sessions(pg_target)
        assert add_missing_indexes(store, FlowProjection(), checkpoint.build) == []  # all valid already
