"""A FlowService client killed mid-command leaves the log and the read models consistent.

A child process runs step lifecycles (schedule, start, gate, approval,
decision, completion, advance) on shared flows in a loop and is SIGKILLed:
first while it hangs inside a command's transaction, after its log rows and
read-model rows were written but before the commit; then at random moments.
After each kill a fresh store must verify, its inline read models must equal
a rebuild from the log, and the service must take the next command at once
(a 5 s lock or busy timeout bounds "at once").
"""

from __future__ import annotations

import random
import time
from multiprocessing.connection import Connection

import pytest

from eventstore.errors import StepNotFound
from projections import FlowProjection, FlowQueries, FlowService

from . import flow_workers
from .conftest import Target
from .readmodels import assert_matches_rebuild
from .workers import SPAWN

FLOWS = ["crash-a", "crash-b"]
RANDOM_KILLS = 3
LATEST_KILL = 0.4  # seconds after the first lifecycle; a loop round takes a fraction of that
CHILD_TIMEOUT = 60.0  # a bound on a child that hangs, never a clock


def expect(reader: Connection, child: object, word: str) -> None:
    assert reader.poll(CHILD_TIMEOUT), f"the child did not send {word!r} in time"
    try:
        assert reader.recv() == word
    except EOFError:
        pytest.fail(f"the child exited ({child}) before sending {word!r}; see its stderr")


def kill_child(target: Target, tag: str, *, stall: bool, delay: float = 0.0) -> None:
    """Run the command loop in a child; kill it when it stalls, or ``delay`` s after its first lifecycle."""
    reader, writer = SPAWN.Pipe(duplex=False)
    args = (target.url, target.options, FLOWS, tag, writer)
    child = SPAWN.Process(target=flow_workers.command_loop, args=args, kwargs={"stall": stall}, daemon=True)
    child.start()
    writer.close()
    try:
        expect(reader, child, "ready")
        if stall:
            expect(reader, child, "stalled")
        else:
            time.sleep(delay)  # where to kill the client, not a wait for a clock
        assert child.exitcode is None, f"the child died ({child.exitcode}) before the kill; see its stderr"
        child.kill()
    finally:
        child.kill()
        child.join(CHILD_TIMEOUT)
        reader.close()


def check_after_kill(target: Target) -> None:
    """A fresh store verifies, matches a rebuild, and takes a command on every flow at once."""
    with target.open(projections=[FlowProjection()], lock_timeout=5.0, busy_timeout=5.0) as store:
        report = store.verify()
        assert report.ok, report.problems[:5]
        assert_matches_rebuild(store)
        service = FlowService(store)
        for flow in FLOWS:
            result = service.record_decision(flow, actor="parent", decision="carry on")
            assert result.revision == store.revision(flow) == FlowQueries(store).flow(flow).revision


def finish_everything(target: Target) -> None:
    """Every step the kills left open can still be driven to completion, and every flow finished."""
    with target.open(projections=[FlowProjection()], lock_timeout=5.0, busy_timeout=5.0) as store:
        service, queries = FlowService(store), FlowQueries(store)
        for flow in FLOWS:
            for step in queries.steps(flow):
                if step.status == "scheduled":
                    service.start_step(flow, step.step_id)
                if step.gate_status == "open":
                    service.approve_gate(flow, step.step_id, by="parent", selections=["y"])
                service.complete_step(flow, step.step_id, result=step.result or {"by": "parent"})
            service.finish(flow, result={"ok": True})
        assert {queries.flow(flow).status for flow in FLOWS} == {"finished"}
        assert {s.status for flow in FLOWS for s in queries.steps(flow)} == {"completed"}
        assert store.verify().ok
        assert_matches_rebuild(store)


class TestKilledClient:
    def test_commands_killed_at_any_point_leave_consistent_read_models(self, target: Target) -> None:
        with target.open(projections=[FlowProjection()]) as store:
            service = FlowService(store)
            for flow in FLOWS:
                service.start_flow(flow, controller_id="ctl", goal="survive", owner_session_key="sess")
        kill_child(target, "stalled", stall=True)
        check_after_kill(target)
        with target.open(projections=[FlowProjection()]) as store:
            with pytest.raises(StepNotFound):  # the stalled command (iteration 1) wrote nothing
                FlowQueries(store).step(FLOWS[1], "stalled.s1")
            assert not [e for e in store.read_all() if e.data.get("step_id") == "stalled.s1"]
        rng = random.Random()
        for k in range(RANDOM_KILLS):
            kill_child(target, f"random{k}", stall=False, delay=rng.uniform(0.0, LATEST_KILL))
            check_after_kill(target)
        finish_everything(target)
