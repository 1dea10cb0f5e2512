"""A writer killed mid-append leaves all of its batch or none of it, and no lock behind.

A child process appends a large batch (20,000 events of about 1 KB) and is
SIGKILLed at points spread over its write: right after it is inside the write
transaction, then at random moments up to a little past the time a whole
write takes, so that some kills land around the commit. A
fresh store must then show all of the batch or none of it, verify, and take
the next append at once (a 5 s lock or busy timeout bounds "at once"). On
PostgreSQL the killed client's connection closes, so its transaction aborts.
"""

from __future__ import annotations

import random
import time
from multiprocessing.connection import Connection

import pytest

from eventstore import NewEvent

from . import workers
from .conftest import Target
from .workers import SPAWN

COUNT, SIZE = 20_000, 1000
PAST_THE_END = 1.2  # the last kills may come after the commit: that write must be whole
CHILD_TIMEOUT = 60.0  # a bound on a child that hangs, never a clock


def expect(reader: Connection, child: object, word: str) -> None:
    assert reader.poll(CHILD_TIMEOUT), f"the child did not send {word!r} in time"
    try:
        assert reader.recv() == word
    except EOFError:
        pytest.fail(f"the child exited ({child}) before sending {word!r}; see its stderr")


def run_child(target: Target, flows: list[str], count: int, *, kill_after: float | None) -> float:
    """Append ``count`` events to each flow in a child; kill it ``kill_after`` s into the write.

    With ``kill_after=None`` the child finishes; returns the seconds its write took.
    """
    reader, writer = SPAWN.Pipe(duplex=False)
    args = (target.url, target.options, flows, count, SIZE, writer)
    child = SPAWN.Process(target=workers.append_big, args=args, daemon=True)
    child.start()
    writer.close()
    try:
        expect(reader, child, "ready")
        began = time.monotonic()
        if kill_after is None:
            expect(reader, child, "done")
        else:
            time.sleep(kill_after)  # where to kill the writer, not a wait for a clock
            child.kill()
        return time.monotonic() - began
    finally:
        child.kill()
        child.join(CHILD_TIMEOUT)
        reader.close()


def settle(target: Target, flows: list[str], count: int, *, killed_after: float | None) -> int:
    """Check the flows hold all of the batch or none, append once more to each; return their revision."""
    with target.open(lock_timeout=5.0, busy_timeout=5.0) as store:
        revisions = {store.revision(flow) for flow in flows}
        assert revisions in ({0}, {count}), f"killed after {killed_after} s, the flows are at {revisions}"
        revision = revisions.pop()
        for flow in flows:
            store.append(flow, [NewEvent("After", {})], expected_revision=revision)
    return revision


def kill_repeatedly(target: Target, names: list[str], count: int, kills: int) -> list[int]:
    """A write left to finish, then ``kills`` killed ones; the revision each left its flows at."""
    duration = run_child(target, names, count, kill_after=None)
    outcomes = [settle(target, names, count, killed_after=None)]
    rng = random.Random()
    for k in range(kills):
        flows = [f"{name}-{k}" for name in names]
        delay = 0.0 if k == 0 else rng.uniform(k, k + 1) / kills * PAST_THE_END * duration
        run_child(target, flows, count, kill_after=delay)
        outcomes.append(settle(target, flows, count, killed_after=delay))
    with target.open() as store:
        report = store.verify()
        assert report.ok, report.problems[:5]
        assert report.events_checked == store.last_position() == len(names) * (sum(outcomes) + kills + 1)
    return outcomes


class TestKilledWriter:
    @pytest.mark.parametrize("kills", [3, pytest.param(8, marks=pytest.mark.slow)])
    def test_a_killed_batch_append_writes_all_or_nothing(self, target: Target, kills: int) -> None:
        outcomes = kill_repeatedly(target, ["big"], COUNT, kills)
        assert outcomes[0] == COUNT and outcomes[1] == 0, outcomes

    @pytest.mark.parametrize("kills", [3, pytest.param(8, marks=pytest.mark.slow)])
    def test_a_killed_transaction_over_two_flows_writes_both_or_neither(
        self, target: Target, kills: int
    ) -> None:
        outcomes = kill_repeatedly(target, ["left", "right"], COUNT // 4, kills)
        assert outcomes[0] == COUNT // 4 and outcomes[1] == 0, outcomes
