"""Time travel: replay, state at a revision or time, snapshots, diffs, forks, what-ifs."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from click.testing import CliRunner

from eventstore import EventStore, FlowNotFound, IntegrityViolation, InvalidInput, NewEvent
from eventstore.cli import main
from eventstore.flow_fold import FOLD_VERSION, FlowView, step_to_dict, view_to_dict
from eventstore.integrity import digest
from eventstore.schema import flow_snapshots
from eventstore.serialization import canonical
from eventstore.timetravel import Change, diff, diff_flows, diff_states, fork, replay, state_at, what_if
from projections import FlowProjection, FlowQueries, FlowService

from .conftest import Target
from .readmodels import assert_matches_rebuild
from .test_tamper import drop_guards, sql


def drive(service: FlowService, flow_id: str = "f", steps: int = 3) -> None:
    service.start_flow(flow_id, controller_id="c", goal="g", owner_session_key="s", state={"n": 0})
    for i in range(steps):
        service.schedule_step(flow_id, step_id=f"s{i}", name="tool", run_id=f"{flow_id}/r{i}", position=i)
        service.start_step(flow_id, f"s{i}")
        service.complete_step(flow_id, f"s{i}", result={"i": i})
        service.advance(flow_id, current_step=f"s{i}", state_patch={"n": i + 1})


def folded(store: EventStore, flow_id: str, revision: int) -> FlowView:
    view = FlowView()
    for event in store.read_flow(flow_id, to_revision=revision):
        view.apply(event)
    return view


@pytest.fixture
def service(flow_store: EventStore) -> FlowService:
    flows = FlowService(flow_store)
    drive(flows)
    return flows


class TestReplayAndStateAt:
    def test_replay_yields_each_state_and_ends_at_the_read_model(self, service: FlowService) -> None:
        states = list(replay(service.store, "f"))
        assert [e.revision for e, _ in states] == list(range(1, 14))
        assert states[0][1].flow is not None and states[0][1].flow.state == {"n": 0}
        final = states[-1][1]
        assert final.flow == FlowQueries(service.store).flow("f")
        assert final.steps == {s.step_id: s for s in FlowQueries(service.store).steps("f")}

    def test_replay_from_a_revision(self, service: FlowService) -> None:
        tail = list(replay(service.store, "f", from_revision=10))
        assert [e.revision for e, _ in tail] == [10, 11, 12, 13]
        assert tail[-1][1] == folded(service.store, "f", 13)

    def test_replay_checks_the_flow_and_from_revision_when_called(self, service: FlowService) -> None:
        assert list(replay(service.store, "f", from_revision=14)) == []  # just past the head: nothing yet
        with pytest.raises(InvalidInput, match=r"from_revision 15 is past the end of flow 'f'.* 1 to 14"):
            replay(service.store, "f", from_revision=15)
        for from_revision in (1, 2):
            with pytest.raises(FlowNotFound, match="'nope' does not exist"):
                replay(service.store, "nope", from_revision=from_revision)

    def test_state_at_every_revision_equals_folding_from_the_start(self, service: FlowService) -> None:
        for revision in range(0, 14):
            assert state_at(service.store, "f", revision=revision, snapshot_every=4) == folded(
                service.store, "f", revision
            )

    def test_state_at_a_time(self, target: Target) -> None:
        now = [datetime(2030, 1, 1, tzinfo=UTC)]
        with target.open(projections=[FlowProjection()], clock=lambda: now[0]) as store:
            flows = FlowService(store)
            flows.start_flow("f", controller_id="c", goal="g", owner_session_key="s")
            now[0] += timedelta(minutes=5)
            flows.advance("f", state_patch={"late": True})
            before = state_at(store, "f", at=datetime(2030, 1, 1, 0, 4, tzinfo=UTC))
            assert before.flow is not None and before.flow.state == {} and before.flow.revision == 1
            assert state_at(store, "f", at=datetime(2029, 1, 1, tzinfo=UTC)) == FlowView()

    def test_bad_points(self, service: FlowService) -> None:
        with pytest.raises(InvalidInput, match="revisions 0 to 13, not 14"):
            state_at(service.store, "f", revision=14)
        with pytest.raises(InvalidInput, match="not both"):
            state_at(service.store, "f", revision=1, at=datetime.now(UTC))
        with pytest.raises(FlowNotFound):
            state_at(service.store, "nope")


class TestSnapshots:
    def snapshot_rows(self, store: EventStore) -> list[int]:
        with store.engine.connect() as conn:
            return [
                r[0] for r in conn.exec_driver_sql("SELECT revision FROM flow_snapshots ORDER BY revision")
            ]

    def test_snapshots_are_kept_every_k_revisions(self, service: FlowService) -> None:
        state_at(service.store, "f", snapshot_every=4)
        assert self.snapshot_rows(service.store) == [4, 8, 12]
        assert state_at(service.store, "f", revision=13, snapshot_every=4) == folded(service.store, "f", 13)

    def snapshot_at_12(self, store: EventStore) -> tuple[str, bytes]:
        with store.engine.connect() as conn:
            (row,) = conn.exec_driver_sql("SELECT state, state_hash FROM flow_snapshots WHERE revision = 12")
        return row[0], bytes(row[1])

    def test_a_tampered_snapshot_is_ignored_and_replaced(self, service: FlowService) -> None:
        store = service.store
        state_at(store, "f", snapshot_every=4)
        true_state, true_hash = self.snapshot_at_12(store)
        assert digest(true_state.encode()) == true_hash
        forged = '{"flow": null, "steps": {}}'
        with store.engine.connect() as conn:
            conn.exec_driver_sql(f"UPDATE flow_snapshots SET state = '{forged}' WHERE revision = 12")
            conn.commit()
        assert self.snapshot_at_12(store) == (forged, true_hash)
        assert state_at(store, "f", revision=13, snapshot_every=4) == folded(store, "f", 13)
        assert self.snapshot_at_12(store) == (true_state, true_hash), "the fold's snapshot replaced it"
        assert self.snapshot_rows(store) == [4, 8, 12]
        assert state_at(store, "f", revision=12, snapshot_every=4) == folded(store, "f", 12)

    def forge(self, store: EventStore, *, event_hash: bytes, fold_version: int) -> None:
        """A snapshot at revision 12 claiming the flow's state was {"forged": true}."""
        forged = folded(store, "f", 12)
        assert forged.flow is not None
        forged.flow.state = {"forged": True}
        encoded = canonical(view_to_dict(forged))
        with store.engine.connect() as conn:
            conn.execute(flow_snapshots.delete())
            conn.execute(
                flow_snapshots.insert().values(
                    flow_id="f",
                    revision=12,
                    fold_version=fold_version,
                    event_hash=event_hash,
                    state=encoded.decode(),
                    state_hash=digest(encoded),
                    created_at="2030-01-01T00:00:00.000000Z",
                )
            )
            conn.commit()

    def test_a_consistent_snapshot_is_used(self, service: FlowService) -> None:
        store = service.store
        (at_12,) = store.read_flow("f", from_revision=12, to_revision=12)
        self.forge(store, event_hash=bytes.fromhex(at_12.hash), fold_version=FOLD_VERSION)
        view = state_at(store, "f", revision=13, snapshot_every=0)
        assert view.flow is not None and view.flow.state == {"forged": True, "n": 3}, (
            "a snapshot whose hashes check out is trusted: the Merkle checkpoints guard the log itself"
        )

    @pytest.mark.parametrize("mismatch", ["event_hash", "fold_version"])
    def test_a_snapshot_of_another_history_or_fold_is_ignored(
        self, service: FlowService, mismatch: str
    ) -> None:
        store = service.store
        (at_12,) = store.read_flow("f", from_revision=12, to_revision=12)
        event_hash = bytes(32) if mismatch == "event_hash" else bytes.fromhex(at_12.hash)
        self.forge(
            store, event_hash=event_hash, fold_version=0 if mismatch == "fold_version" else FOLD_VERSION
        )
        assert state_at(store, "f", revision=13, snapshot_every=0) == folded(store, "f", 13)

    def test_a_step_its_snapshot_lists_but_the_log_lost_is_an_integrity_violation(
        self, service: FlowService
    ) -> None:
        state_at(service.store, "f", snapshot_every=4)
        view = state_at(service.store, "f", revision=8)  # from the snapshot at 8: s0 and s1 not loaded
        drop_guards(service.store)
        sql(service.store, "DELETE FROM snapshot_parts")
        sql(service.store, "DELETE FROM flow_events WHERE flow_id = 'f' AND revision = 6")  # s1 scheduled
        with pytest.raises(
            IntegrityViolation, match="'f' has no event at revision 6 though it has later"
        ) as caught:
            view.steps.load_all()  # the parts' stand-in, the log up to 8, skips the revision deleted
        assert (caught.value.flow_id, caught.value.revision) == ("f", 6)


class TestDiffForkWhatIf:
    def test_diff_between_revisions(self, service: FlowService) -> None:
        result = diff(service.store, "f", 5, 9)
        assert [e.revision for e in result.events] == [6, 7, 8, 9]
        assert Change("replace", "/flow/state/n", old=1, new=2) in result.changes
        assert any(c.op == "add" and c.path == "/steps/s1" for c in result.changes)

    def test_diff_states_is_json_patch_like(self, service: FlowService) -> None:
        before = folded(service.store, "f", 13)
        after = before.copy()
        assert after.flow is not None and after.flow.state == {"n": 3}
        after.flow.state = {"a/b~": "added", "n": 4}
        after.steps["s1"].status = "failed"
        del after.steps["s0"]
        removed = step_to_dict(before.steps["s0"])
        assert diff_states(before, after) == [
            Change("add", "/flow/state/a~1b~0", new="added"),
            Change("replace", "/flow/state/n", old=3, new=4),
            Change("remove", "/steps/s0", old=removed),
            Change("replace", "/steps/s1/status", old="completed", new="failed"),
        ]
        assert diff_states(after, before) == [
            Change("remove", "/flow/state/a~1b~0", old="added"),
            Change("replace", "/flow/state/n", old=4, new=3),
            Change("add", "/steps/s0", new=removed),
            Change("replace", "/steps/s1/status", old="failed", new="completed"),
        ]
        assert diff_states(before, before.copy()) == [] and diff_states(FlowView(), FlowView()) == []

    def test_fork_starts_from_the_origin_state_and_leaves_it_untouched(self, service: FlowService) -> None:
        store = service.store
        original = [e.hash for e in store.read_flow("f")]
        (origin,) = store.read_flow("f", from_revision=8, to_revision=8)
        fork(store, "f", at_revision=8, new_flow_id="f-retry", metadata={"actor": "human:ann"})
        assert [e.hash for e in store.read_flow("f")] == original
        (first,) = store.read_flow("f-retry")
        assert first.type == "FlowForked"
        assert (first.data["origin_flow_id"], first.data["origin_revision"], first.data["origin_hash"]) == (
            "f",
            8,
            origin.hash,
        )
        queries = FlowQueries(store)
        forked = queries.flow("f-retry")
        assert forked.parent_flow_id == "f" and forked.state == {"n": 1} and forked.revision == 1
        assert [s.step_id for s in queries.steps("f-retry")] == ["s0", "s1"]
        service.advance("f-retry", state_patch={"n": 99})
        assert Change("replace", "/flow/state/n", old=3, new=99) in diff_flows(store, "f", "f-retry")
        assert_matches_rebuild(store)
        assert store.verify().ok

    def test_diff_flows_ignores_when_things_happened(self, target: Target) -> None:
        moments = iter(datetime(2030, 1, 1, tzinfo=UTC) + timedelta(minutes=m) for m in range(1000))
        with target.open(projections=[FlowProjection()], clock=lambda: next(moments)) as store:
            service = FlowService(store)
            service.start_flow("a", controller_id="c", goal="g", owner_session_key="s")
            fork(store, "a", at_revision=1, new_flow_id="b")
            for flow_id in ("a", "b"):  # the same commands, each event minutes after the last
                service.schedule_step(flow_id, step_id="s", name="tool", run_id="r")
                service.start_step(flow_id, "s")
                service.complete_step(flow_id, "s", result={"ok": True})
                service.finish(flow_id)
            assert diff_flows(store, "a", "b") == []

    def test_what_if_leaves_events_out_without_touching_the_log(self, service: FlowService) -> None:
        store = service.store
        last = store.last_position()
        view = what_if(store, "f", without_types=["FlowAdvanced"])
        assert view.flow is not None and view.flow.state == {"n": 0}
        view = what_if(store, "f", without_revisions=[12])
        assert view.steps["s2"].status == "running"
        assert store.last_position() == last

    def test_what_if_of_an_unknown_flow(self, flow_store: EventStore) -> None:
        with pytest.raises(FlowNotFound):
            what_if(flow_store, "nope")
        flow_store.append("raw", [NewEvent("Note", {})])
        assert what_if(flow_store, "raw") == FlowView()


def wide_flow(store: EventStore) -> int:
    """A flow of 1021 revisions and 340 steps (two snapshot parts), snapshotted at revision 1000."""
    events = [NewEvent("FlowStarted", {"controller_id": "c", "goal": "g", "owner_session_key": "s"})]
    for n in range(340):
        sid = f"s{n:04d}"
        events += [
            NewEvent("StepScheduled", {"step_id": sid, "name": "tool", "run_id": f"r{n}", "position": n}),
            NewEvent("StepStarted", {"step_id": sid}),
            NewEvent("StepCompleted", {"step_id": sid, "result": {"n": n}}),
        ]
    store.append("f", events)
    state_at(store, "f")  # leaves the snapshot at 1000 (snapshot_every=1000)
    return store.revision("f")


class TestStatesOutliveTheStore:
    def test_replayed_states_from_a_snapshot_are_usable_after_the_store_closes(
        self, store: EventStore
    ) -> None:
        head = wide_flow(store)
        kept = [view for _, view in replay(store, "f", from_revision=1001)]
        expected = [folded(store, "f", revision) for revision in (1001, head)]
        store.close()
        assert kept[-1].steps["s0000"].status == "completed"
        assert [kept[0], kept[-1]] == expected

    def test_a_copy_of_a_state_read_from_a_snapshot_is_usable_after_the_store_closes(
        self, store: EventStore
    ) -> None:
        wide_flow(store)
        kept = state_at(store, "f", revision=1001).copy()
        expected = folded(store, "f", 1001)
        store.close()
        assert kept == expected

    def test_state_json_on_the_command_line_reads_from_a_snapshot(self, target: Target) -> None:
        with target.open() as store:
            wide_flow(store)
            expected = view_to_dict(folded(store, "f", 1001))
        schema = target.options.get("schema")
        prefix = ["--url", target.url, *(["--schema", schema] if schema else [])]
        result = CliRunner().invoke(main, [*prefix, "state", "f", "--at", "1001", "--json"])
        assert result.exit_code == 0, result.output
        assert orjson.loads(result.output) == expected


class TestConcurrentSnapshots:
    def test_concurrent_state_at_calls_saving_the_same_snapshot_all_succeed(self, target: Target) -> None:
        with target.open() as store:
            start = NewEvent("FlowStarted", {"controller_id": "c", "goal": "g", "owner_session_key": "s"})
            store.append("f", [start, *(NewEvent("Noted", {"n": n}) for n in range(1100))])
            expected = folded(store, "f", 1100)

        def read(barrier: threading.Barrier) -> FlowView:
            with target.open() as mine:
                barrier.wait()  # all four fold, then save the snapshot at 1000, at once
                view = state_at(mine, "f", revision=1100)
                view.steps.load_all()
                return view

        for _ in range(5):
            with target.open() as store, store.transaction() as tx:
                tx.connection.execute(flow_snapshots.delete())  # a cache: each round starts without it
            barrier = threading.Barrier(4)
            with ThreadPoolExecutor(4) as pool:
                results = [pool.submit(read, barrier) for _ in range(4)]
                assert [future.result() for future in results] == [expected] * 4
