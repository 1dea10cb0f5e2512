"""The saver's copy, delete and prune calls SIGKILLed part way: each thread done whole or not at all.

A child runs one kind of call on thread after thread and is killed at a
random moment. Every thread must then be as before the call (all its
checkpoints, no removal record) or as after it (the copy whole, the
deletion record there and the checkpoints gone); the read model must equal
a rebuild, and a rerun must finish the rest.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from eventstore.integrations.langgraph import EventStoreSaver, flow_id_for
from projections import rebuild
from projections.langgraph import LangGraphProjection

from . import kill_workers
from .conftest import Target
from .kill_workers import kill_during, operation_time
from .test_langgraph_saver import put, tables

THREADS, CHECKPOINTS = 12, 6
KILL_WINDOW = 0.8  # of one call's measured duration, after a random number of whole calls


def checkpoints(saver: EventStoreSaver, thread: str) -> int:
    return len(list(saver.list({"configurable": {"thread_id": thread}})))


def removal_records(saver: EventStoreSaver, thread: str) -> list[str]:
    kinds = ("ThreadDeleted", "CheckpointsDeleted", "ThreadCopied")
    return [e.type for e in saver.store.read_flow(flow_id_for(thread)) if e.type in kinds]


def outcome(saver: EventStoreSaver, operation: str, thread: str) -> bool:
    """Whether the call happened to ``thread``; raises if it is half done."""
    have, records = checkpoints(saver, thread), removal_records(saver, thread)
    if operation == "copy":
        copied = checkpoints(saver, f"{thread}-copy")
        assert have == CHECKPOINTS and copied in (0, CHECKPOINTS), (thread, copied)
        assert removal_records(saver, f"{thread}-copy") == (["ThreadCopied"] if copied else [])
        return bool(copied)
    after = {"delete": 0, "runs": 0, "prune": 1}[operation]
    assert (have, bool(records)) in ((CHECKPOINTS, False), (after, True)), (thread, have, records)
    if have:
        assert saver.get_tuple({"configurable": {"thread_id": thread, "checkpoint_ns": ""}}) is not None
    return have != CHECKPOINTS


def run_killed(target: Target, operation: str, kills: int) -> None:
    seed = random.randrange(2**32)
    rng, replay = random.Random(seed), f"random.Random({seed})"
    threads, probes = [f"t{n}" for n in range(THREADS)], [f"probe{n}" for n in range(THREADS)]
    with EventStoreSaver.from_url(target.url, **target.options) as saver:
        for thread in threads + probes:
            config: Any = None
            for n in range(CHECKPOINTS):
                config = put(
                    saver, thread, {"n": n}, {"n": n + 1}, parent=config, metadata={"run_id": f"run-{thread}"}
                )
        # the same calls on as many other threads, unkilled: how long the child's calls take here
        probe = (target.url, target.options, operation, probes, False)
        window = operation_time(kill_workers.saver_ops, probe) / len(probes) * KILL_WINDOW
        done: list[str] = []
        cut = 0
        for k in range(kills):
            left = [t for t in threads if t not in done]
            if not left:
                break
            args = (target.url, target.options, operation, left, True)
            # in the call after a random number of whole ones, or right after it: paced, the child
            # waits for a "go" before each call, so it cannot run ahead of a parent slow to read its
            # messages on a loaded machine and finish the run (which would leave nothing to kill)
            steps = rng.randrange(max(1, len(left) - 1))
            delay = rng.uniform(0.0, window)
            cut += not kill_during(kill_workers.saver_ops, args, delay, after_steps=steps, paced=True)
            done = [t for t in threads if outcome(saver, operation, t)]
            assert done == threads[: len(done)], f"kill {k} ({replay}): calls done out of order {done}"
        assert cut, (
            f"every run finished before its kill (window {window:.4f} s per call, {replay}): no crash tested"
        )
        inline = tables(saver.store)
        rebuild(saver.store, LangGraphProjection())
        assert tables(saver.store) == inline
        assert saver.store.verify().ok


@pytest.mark.parametrize("operation", ["copy", "delete", "prune", "runs"])
@pytest.mark.parametrize("kills", [3, pytest.param(10, marks=pytest.mark.slow)])
def test_a_killed_saver_call_leaves_each_thread_whole(target: Target, operation: str, kills: int) -> None:
    run_killed(target, operation, kills)
