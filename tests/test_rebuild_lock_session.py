"""The PostgreSQL session that holds a live rebuild's lock: kept alive while idle, and honest when lost.

The rebuild lock (``eventstore.process_locks``) is a session-level advisory
lock on a connection that sits idle for the whole rebuild. A server's
``idle_session_timeout`` must not end that session: another rebuild would
then take the live rebuild's claim over. If the session is ended all the
same (``pg_terminate_backend``, a dropped connection), the rebuild fails at
its next renewal, and says its claim may have been taken over, not only
that its lease expired.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from eventstore.errors import ProjectionError
from projections import FlowProjection, rebuild

from . import kill_workers
from .conftest import Target, _admin_connect
from .test_rebuild_crash import some_flows
from .test_rebuild_takeover import paused_rebuild, the_claim

HELD_LOCKS = (
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def admin(target: Target) -> Any:
    conn = _admin_connect(target.url)
    conn.execute("SET idle_session_timeout = 0")
    return conn


def until(check: Callable[[], bool], what: str) -> None:
    """Poll the server's state until ``check`` holds (bounded, never a clock the test asserts on)."""
    deadline = time.monotonic() + kill_workers.CHILD_TIMEOUT
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def test_a_rebuild_whose_lock_session_was_ended_says_it_may_have_been_taken_over(pg_target: Target) -> None:
    some_flows(pg_target)
    failures: list[BaseException] = []
    with paused_rebuild(pg_target, failures), admin(pg_target) as conn:
        (lock_pid,) = [pid for (pid,) in conn.execute(HELD_LOCKS)]
        assert conn.execute("SELECT pg_terminate_backend(%s)", (lock_pid,)).fetchone() == (True,)
        until(lambda: not conn.execute(HELD_LOCKS).fetchall(), "the ended session let its lock go")
        with pg_target.open(projections=[FlowProjection()]) as store:
            rebuild(store, FlowProjection())  # the live claim is taken over: its lock is gone
            assert the_claim(store, "flows") is None
    assert len(failures) == 1 and isinstance(failures[0], ProjectionError)
    assert "another rebuild took it over because this one's process lock was lost" in str(failures[0])


def test_idle_session_timeout_does_not_end_a_rebuilds_lock_session(pg_alone_target: Target) -> None:
    some_flows(pg_alone_target)
    database = pg_alone_target.url.rsplit("/", 1)[1]
    with admin(pg_alone_target) as conn:
        conn.execute(f"ALTER DATABASE \"{database}\" SET idle_session_timeout = '1s'")
    failures: list[BaseException] = []
    with paused_rebuild(pg_alone_target, failures), admin(pg_alone_target) as conn:
        (lock_pid,) = [pid for (pid,) in conn.execute(HELD_LOCKS)]
        # A session opened after the lock's went idle, and idle since: once the server has ended
        # it, it would have ended the lock's too, were that not kept alive.
        with _admin_connect(pg_alone_target.url) as canary:
            canary_pid = canary.info.backend_pid
            alive = "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
            until(lambda: conn.execute(alive, (canary_pid,)).fetchone() == (0,), "the idle canary ended")
        assert conn.execute(alive, (lock_pid,)).fetchone() == (1,)
        assert [pid for (pid,) in conn.execute(HELD_LOCKS)] == [lock_pid]
        store = pg_alone_target.open(projections=[FlowProjection()])
        with store, pytest.raises(ProjectionError, match="already running"):
            rebuild(store, FlowProjection())
    # The holder's pooled connections idled past the timeout too: ended, they are replaced as it
    # resumes (``eventstore.reconnecting``), and it completes.
    assert not failures
