"""FlowService commands from many processes and threads on the same flows.

Each command reads the read model inside its write transaction and appends
expecting the revision it read, so no accepted command is lost or doubled:
the log holds exactly the events the commands reported, the inline read
models equal a rebuild from that log, and a command given an explicit
revision is refused, not merged, when another got there first.
"""

from __future__ import annotations

from collections import Counter

from eventstore import EventStore
from projections import FlowProjection, FlowQueries, FlowService

from . import flow_workers
from .conftest import Target
from .flow_workers import Tally
from .readmodels import assert_matches_rebuild
from .workers import SPAWN, Children

FLOWS = ["flow-a", "flow-b", "flow-c"]
PROCESSES, THREADS = 3, 2
ROUNDS, LOCKSTEP_ROUNDS = 6, 6


def start_flows(store: EventStore, flows: list[str]) -> dict[str, list[str]]:
    """Start the flows (some share an owner session); the event ids each start wrote."""
    service = FlowService(store)
    started = {}
    for n, flow in enumerate(flows):
        result = service.start_flow(
            flow, controller_id="ctl", goal="test", owner_session_key=f"sess-{n % 2}", state={"progress": {}}
        )
        started[flow] = [str(i) for i in result.event_ids]
    return started


def logged_ids(store: EventStore, flow: str) -> list[str]:
    return [str(e.event_id) for e in store.read_flow(flow)]


class TestConcurrentCommands:
    def test_every_accepted_command_is_in_the_log_exactly_once(self, target: Target) -> None:
        workers = PROCESSES * THREADS
        sync = SPAWN.Barrier(workers)
        with target.open(projections=[FlowProjection()]) as store, Children() as children:
            started = start_flows(store, FLOWS)
            for p in range(PROCESSES):
                children.start(
                    flow_workers.drive_flows,
                    target.url,
                    target.options,
                    f"p{p}",
                    sync,
                    FLOWS,
                    ROUNDS,
                    LOCKSTEP_ROUNDS,
                    THREADS,
                )
            tally, progress = Tally(), {}
            for child_tally, child_progress in children.results():
                tally.merge(child_tally)
                progress.update(child_progress)
            for flow in FLOWS:
                logged = logged_ids(store, flow)
                assert len(logged) == len(set(logged)) == store.revision(flow)
                assert Counter(logged) == Counter(started[flow] + tally.accepted.get(flow, [])), flow
            lockstep = (tally.lockstep_wins, tally.lockstep_mismatches)
            assert lockstep == (LOCKSTEP_ROUNDS, LOCKSTEP_ROUNDS * (workers - 1))
            report = store.verify()
            assert report.ok, report.problems[:5]
            assert_read_models_hold_every_command(store, tally, progress)
            assert_matches_rebuild(store)

    def test_two_processes_scheduling_the_same_run_make_one_step(self, target: Target) -> None:
        rounds = 8
        sync = SPAWN.Barrier(2)
        with target.open(projections=[FlowProjection()]) as store, Children() as children:
            start_flows(store, ["race"])
            for name in ("left", "right"):
                children.start(
                    flow_workers.schedule_same_runs, target.url, target.options, name, "race", sync, rounds
                )
            left, right = children.results()
            for round_, outcomes in enumerate(zip(left, right, strict=True)):
                written, started = zip(*outcomes, strict=True)
                assert sorted(written) == [0, 1], (round_, outcomes)
                assert sorted(started) == ["refused", "started"], (round_, outcomes)
            steps = FlowQueries(store).steps("race")
            assert sorted(s.run_id for s in steps) == [f"run-{r}" for r in range(rounds)]
            assert all((s.status, s.attempts) == ("running", 1) for s in steps)
            events = list(store.read_flow("race"))
            assert Counter(e.data["run_id"] for e in events if e.type == "StepScheduled") == dict.fromkeys(
                (f"run-{r}" for r in range(rounds)), 1
            )
            assert Counter(e.type for e in events)["StepStarted"] == rounds
            assert store.verify().ok
            assert_matches_rebuild(store)


def assert_read_models_hold_every_command(
    store: EventStore, tally: Tally, progress: dict[str, dict[str, int]]
) -> None:
    """Every step the workers ran is completed; each worker's last progress value is in its flow's state."""
    queries = FlowQueries(store)
    steps = {(s.flow_id, s.step_id): s for flow in FLOWS for s in queries.steps(flow)}
    assert sorted(steps) == sorted(tally.steps)
    assert all((s.status, s.result) == ("completed", {"by": s.step_id}) for s in steps.values())
    for flow in FLOWS:
        expected = {key: last[flow] for key, last in progress.items() if flow in last}
        assert queries.flow(flow).state == {"progress": expected}, flow
