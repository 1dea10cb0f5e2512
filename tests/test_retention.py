"""Retention: archive, verify, then prune in one transaction; legal holds; restore; crash repair."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from click.testing import CliRunner
from freezegun import freeze_time

from eventstore import (
    AppendOnlyViolation,
    ArchiveNotFound,
    EventStore,
    FlowArchived,
    FlowNotFound,
    FlowPruned,
    IntegrityViolation,
    InvalidInput,
    NewEvent,
    RebuildInProgress,
    RetentionInProgress,
    migrate,
)
from eventstore.checkpoints import generate_key, take_checkpoint, verify_checkpoints
from eventstore.cli import main
from eventstore.exportfile import Progress, verify_export
from eventstore.maintenance import Maintenance, MaintenanceConfig
from eventstore.retention import (
    SYSTEM_RETENTION_FLOW,
    RetentionPolicy,
    RetentionReport,
    hold,
    list_archives,
    list_holds,
    release,
    restore,
    run_retention,
)
from eventstore.timetravel import fork
from projections import FlowProjection, FlowQueries, FlowService
from projections.checkpoints import REBUILD_LEASE, claim
from projections.pruning import prune_flow_read_models

from . import retention_workers
from .conftest import Target
from .readmodels import assert_matches_rebuild
from .test_tamper import drop_guards, sql
from .workers import SPAWN

T0 = datetime(2030, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
FINISHED_30 = RetentionPolicy(finished=30 * DAY)


@pytest.fixture
def flows(target: Target) -> Iterator[EventStore]:
    """At T0: f1 and f2 finished, f3 failed, f4 still running, all of session s; a plain flow."""
    with freeze_time(T0), target.open(projections=[FlowProjection()]) as store:
        service = FlowService(store)
        for flow_id in ("f1", "f2", "f3", "f4"):
            service.start_flow(flow_id, controller_id="c", goal="g", owner_session_key="s")
            service.schedule_step(flow_id, step_id="a", name="a", run_id=f"run-{flow_id}")
        service.finish("f1")
        service.finish("f2")
        service.fail("f3", error="boom")
        store.append("plain", [NewEvent("T", {})])
        yield store


def retain(
    store: EventStore,
    tmp_path: Path,
    at: datetime,
    policy: RetentionPolicy = FINISHED_30,
    *,
    dry_run: bool = False,
) -> RetentionReport:
    with freeze_time(at):
        return run_retention(
            store, policy, tmp_path / "archives", pruners=[prune_flow_read_models], dry_run=dry_run
        )


def table_count(store: EventStore, table: str) -> int:
    with store.engine.connect() as conn:
        return int(conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one())


class TestPolicy:
    def test_parse_and_refuse(self) -> None:
        assert RetentionPolicy.parse(["finished=30", "failed=0.5"]) == RetentionPolicy(
            finished=30 * DAY, failed=DAY / 2
        )
        assert RetentionPolicy().keeps_everything
        with pytest.raises(InvalidInput, match="one of finished, failed, cancelled"):
            RetentionPolicy.parse(["running=3"])
        with pytest.raises(InvalidInput, match="STATUS=DAYS"):
            RetentionPolicy.parse(["finished"])


class TestRun:
    def test_age_is_measured_from_the_last_event(self, flows: EventStore, tmp_path: Path) -> None:
        early = retain(flows, tmp_path, T0 + 30 * DAY - timedelta(seconds=1))
        assert early.pruned == () and early.archive_id is None
        late = retain(flows, tmp_path, T0 + 30 * DAY + timedelta(seconds=1))
        assert late.pruned == ("f1", "f2") and late.events_pruned == 6

    def test_archive_then_prune(self, flows: EventStore, tmp_path: Path) -> None:
        take_checkpoint(flows, key := generate_key())
        report = retain(flows, tmp_path, T0 + 31 * DAY, policy=RetentionPolicy(finished=DAY, failed=DAY))
        assert report.pruned == ("f1", "f2", "f3")
        archive = verify_export(report.archive_path)
        assert archive.ok and [s.flow_id for s in archive.manifest.flows] == ["f1", "f2", "f3"]
        assert list(flows.read_flow("f1")) == [] and flows.revision("f4") == 2
        assert (table_count(flows, "flow_tombstones"), table_count(flows, "pruned_events")) == (3, 9)
        assert [a.status for a in list_archives(flows)] == ["pruned"]
        assert flows.verify().ok
        with pytest.raises(FlowArchived) as pruned:  # as `eventstore verify f1`: its events are archived
            flows.verify("f1")
        assert (pruned.value.archive_id, pruned.value.last_revision) == (report.archive_id, 3)
        assert [f.flow_id for f in FlowQueries(flows).flows().items] == ["f4"]
        assert FlowQueries(flows).session("s").event_count == 2
        assert_matches_rebuild(flows)
        take_checkpoint(flows, key)
        assert verify_checkpoints(flows, key.public_key()).ok

    def test_a_fork_of_a_finished_flow_is_pruned_as_finished(self, flows: EventStore, tmp_path: Path) -> None:
        fork(flows, "f1", at_revision=3, new_flow_id="f1-copy")  # finished: its FlowForked copy says so
        fork(flows, "f4", at_revision=2, new_flow_id="f4-copy")  # running
        assert retain(flows, tmp_path, T0 + 31 * DAY, dry_run=True).eligible == ("f1", "f1-copy", "f2")
        report = retain(flows, tmp_path, T0 + 31 * DAY)
        assert report.pruned == ("f1", "f1-copy", "f2") and flows.revision("f4-copy") == 1
        assert flows.verify().ok
        assert_matches_rebuild(flows)

    def test_a_store_with_the_flow_projection_prunes_its_read_models_itself(
        self, flows: EventStore, tmp_path: Path
    ) -> None:
        with freeze_time(T0 + 31 * DAY):
            report = run_retention(flows, FINISHED_30, tmp_path / "archives")  # no pruners given
        assert report.pruned == ("f1", "f2")
        assert [f.flow_id for f in FlowQueries(flows).flows().items] == ["f3", "f4"]
        assert_matches_rebuild(flows)

    def test_legal_hold_is_respected(self, flows: EventStore, tmp_path: Path) -> None:
        hold(flows, "f1", reason="litigation", by="legal@example.com")
        report = retain(flows, tmp_path, T0 + 40 * DAY)
        assert (report.pruned, report.held) == (("f2",), ("f1",))
        assert [h.flow_id for h in list_holds(flows)] == ["f1"]
        assert release(flows, "f1", by="legal@example.com", reason="settled")
        assert not release(flows, "f1", by="legal@example.com")
        assert retain(flows, tmp_path, T0 + 40 * DAY).pruned == ("f1",)
        with pytest.raises(FlowNotFound):
            hold(flows, "f1", reason="too late", by="legal")
        recorded = list(flows.read_flow(SYSTEM_RETENTION_FLOW))
        assert [(e.type, e.data["held_flow_id"], e.data["by"], e.metadata["actor"]) for e in recorded] == [
            ("LegalHoldPlaced", "f1", "legal@example.com", "legal@example.com"),
            ("LegalHoldReleased", "f1", "legal@example.com", "legal@example.com"),
        ]
        assert (recorded[0].data["reason"], recorded[1].data["reason"]) == ("litigation", "settled")

    def test_a_hold_or_release_without_who_is_refused_and_writes_nothing(self, flows: EventStore) -> None:
        with pytest.raises(InvalidInput, match="non-empty by"):
            hold(flows, "f1", reason="litigation", by=" ")
        hold(flows, "f1", reason="litigation", by="legal")
        with pytest.raises(InvalidInput, match="non-empty by"):
            release(flows, "f1", by="")
        assert [h.flow_id for h in list_holds(flows)] == ["f1"]
        assert flows.revision(SYSTEM_RETENTION_FLOW) == 1

    def test_half_written_archives_of_dead_runs_are_removed(self, flows: EventStore, tmp_path: Path) -> None:
        """A run killed while exporting leaves ``<id>.jsonl.gz.partial``; the next run removes it,
        unless it was touched within the hour (another run may be writing it)."""
        directory = tmp_path / "archives"
        directory.mkdir()
        dead, busy = directory / "dead.jsonl.gz.partial", directory / "busy.jsonl.gz.partial"
        for path in (dead, busy):
            path.write_bytes(b"\x1f\x8b half")
        now = T0 + 40 * DAY
        os.utime(dead, (now.timestamp() - 3601,) * 2)
        os.utime(busy, (now.timestamp() - 60,) * 2)
        report = retain(flows, tmp_path, now)
        assert report.removed_partials == (str(dead),)
        assert not dead.exists() and busy.exists() and report.pruned == ("f1", "f2")

    def test_dry_run_and_keep_everything_write_nothing(self, flows: EventStore, tmp_path: Path) -> None:
        dry = retain(flows, tmp_path, T0 + 40 * DAY, dry_run=True)
        assert dry.eligible == ("f1", "f2") and dry.pruned == ()
        assert retain(flows, tmp_path, T0 + 400 * DAY, policy=RetentionPolicy()).pruned == ()
        assert table_count(flows, "archives") == 0 and not (tmp_path / "archives").exists()


class TestRestore:
    def test_restore_puts_flows_back(self, flows: EventStore, tmp_path: Path) -> None:
        before = {e.flow_id: e.hash for e in flows.read_all()}
        report = retain(flows, tmp_path, T0 + 40 * DAY)
        one = restore(flows, report.archive_id, ["f2"])
        assert (one.flows, one.events) == (("f2",), 3)
        assert [a.flows_pruned for a in list_archives(flows)] == [1]
        restore(flows, report.archive_id)
        assert {e.flow_id: e.hash for e in flows.read_all()} == before
        assert table_count(flows, "flow_tombstones") == 0 and flows.verify().ok
        assert FlowQueries(flows).flow("f1").status == "finished"
        assert_matches_rebuild(flows)
        with pytest.raises(InvalidInput, match="nothing to restore"):
            restore(flows, report.archive_id)
        with pytest.raises(ArchiveNotFound):
            restore(flows, "no-such-archive")

    def test_a_moved_archive_is_refused_saying_how_to_find_it(
        self, flows: EventStore, tmp_path: Path
    ) -> None:
        report = retain(flows, tmp_path, T0 + 40 * DAY)
        (tmp_path / "archives").rename(tmp_path / "moved")
        written = tmp_path / "archives" / f"{report.archive_id}.jsonl.gz"
        with pytest.raises(InvalidInput, match="if it was moved, give archive_dir") as refused:
            restore(flows, report.archive_id)
        assert str(refused.value).startswith(f"the file of archive {report.archive_id!r} is not at {written}")
        with pytest.raises(InvalidInput, match=f"is not at {tmp_path / 'elsewhere'}"):
            restore(flows, report.archive_id, archive_dir=tmp_path / "elsewhere")
        assert restore(flows, report.archive_id, archive_dir=tmp_path / "moved").flows == ("f1", "f2")


class TestAppendOnlyGuard:
    def test_a_plain_delete_or_update_is_refused(self, flows: EventStore) -> None:
        for statement in ("DELETE FROM flow_events WHERE flow_id = 'f1'", "DELETE FROM flow_events"):
            with pytest.raises(sa.exc.DatabaseError, match="append-only"):
                sql(flows, statement)
        assert flows.revision("f1") == 3 and flows.verify().ok

    def test_an_authorisation_lets_only_its_flows_be_deleted(self, flows: EventStore) -> None:
        with pytest.raises(Rollback) as allowed:
            authorised(flows, "DELETE FROM flow_events WHERE flow_id = 'f1'")
        assert allowed.value.args == (3,)
        for statement in (
            "DELETE FROM flow_events WHERE flow_id IN ('f1', 'f2')",
            "UPDATE flow_events SET type = 'X' WHERE flow_id = 'f1'",
        ):
            with pytest.raises(AppendOnlyViolation, match="append-only"):
                authorised(flows, statement)
        assert flows.revision("f1") == 3 and flows.verify().ok

    def test_an_authorisation_does_not_open_a_held_flow(self, flows: EventStore) -> None:
        hold(flows, "f1", reason="litigation", by="legal")
        with pytest.raises(AppendOnlyViolation, match="legal hold"):
            authorised(flows, "DELETE FROM flow_events WHERE flow_id = 'f1'")
        assert flows.revision("f1") == 3 and flows.verify().ok

    def test_a_committed_authorisation_stops_the_prune(self, flows: EventStore, tmp_path: Path) -> None:
        sql(flows, "INSERT INTO prune_authorisations (flow_id) VALUES ('plain')")
        with pytest.raises(IntegrityViolation, match="prune-authorisation-left"):
            retain(flows, tmp_path, T0 + 40 * DAY)
        assert flows.revision("f1") == 3 and table_count(flows, "prune_authorisations") == 1
        assert [p.kind for p in flows.verify().problems] == ["prune-authorisation-left"]
        assert [a.status for a in list_archives(flows)] == ["verified"]

    def test_the_downgrade_restores_the_unconditional_guard(self, store: EventStore) -> None:
        def guard(conn: sa.Connection) -> str:
            if conn.dialect.name == "postgresql":
                query = "SELECT prosrc FROM pg_proc WHERE proname = 'flow_events_append_only'"
            else:
                query = "SELECT sql FROM sqlite_master WHERE name = 'flow_events_no_delete'"
            return str(conn.exec_driver_sql(query).scalar_one())

        def reuse_guarded(conn: sa.Connection) -> bool:
            if conn.dialect.name == "postgresql":
                query = "SELECT count(*) FROM pg_trigger WHERE tgname = 'flow_events_no_pruned_reuse'"
            else:
                query = "SELECT count(*) FROM sqlite_master WHERE name = 'flow_events_no_pruned_reuse'"
            return conn.exec_driver_sql(query).scalar_one() == 1

        config = Config()
        config.set_main_option("script_location", str(migrate.script_location()))
        with store.engine.connect() as conn:
            config.attributes["connection"] = conn
            assert "prune_authorisations" in guard(conn) and reuse_guarded(conn)
            command.downgrade(config, "0004")
            conn.commit()
            assert "prune_authorisations" not in guard(conn) and "append-only" in guard(conn)
            assert not reuse_guarded(conn)
            migrate.upgrade(conn)
            assert "prune_authorisations" in guard(conn) and reuse_guarded(conn)


class Rollback(Exception):
    """Ends a test's transaction without committing it."""


def authorised(store: EventStore, statement: str) -> int:
    """Run ``statement`` with f1 authorised for deletion; roll back, raising ``Rollback(rowcount)``."""
    with store.transaction() as tx:
        tx.connection.exec_driver_sql("INSERT INTO prune_authorisations (flow_id) VALUES ('f1')")
        raise Rollback(tx.connection.exec_driver_sql(statement).rowcount)


class TestPrunedFlowIds:
    def test_a_pruned_flow_cannot_be_started_again(
        self, flows: EventStore, target: Target, tmp_path: Path
    ) -> None:
        archive_id = retain(flows, tmp_path, T0 + 40 * DAY).archive_id
        last = flows.last_position()
        with pytest.raises(FlowPruned, match=f"archive '{archive_id}'.*restore {archive_id} f1") as error:
            flows.append("f1", [NewEvent("T", {})])
        assert (error.value.flow_id, error.value.archive_id) == ("f1", archive_id)
        with pytest.raises(FlowPruned, match="'f2': was pruned"), flows.transaction() as tx:
            tx.append("f2", [NewEvent("T", {})], expected_revision=0)
        with pytest.raises(FlowPruned, match="'f1': was pruned"):
            FlowService(flows).start_flow("f1", controller_id="c", goal="g", owner_session_key="s")
        with target.open() as plain, pytest.raises(FlowPruned, match="'f2': was pruned"):
            plain.append("f2", [NewEvent("T", {})])
        assert flows.last_position() == last and flows.revision("f1") == 0 and flows.verify().ok
        assert [f.flow_id for f in FlowQueries(flows).flows().items] == ["f3", "f4"]

    def test_a_restored_flow_carries_on(self, flows: EventStore, tmp_path: Path) -> None:
        restore(flows, retain(flows, tmp_path, T0 + 40 * DAY).archive_id, ["f1"])
        assert flows.append("f1", [NewEvent("T", {})]).revision == 4 and flows.verify().ok


def claim_rebuild(store: EventStore) -> None:
    """Claim a rebuild of the flow read models, as ``projections.rebuild`` does first."""
    assert claim(store, FlowProjection(), "test")


class TestRebuildClaims:
    def test_no_prune_while_a_rebuild_holds_its_claim(self, flows: EventStore, tmp_path: Path) -> None:
        def claim_once_verified(item: Progress) -> None:
            if item.phase == "verified":
                claim_rebuild(flows)

        with freeze_time(T0 + 40 * DAY), pytest.raises(RebuildInProgress, match=r"stays verified.*'flows'"):
            run_retention(flows, FINISHED_30, tmp_path / "archives", progress=claim_once_verified)
        assert flows.revision("f1") == 3 and [a.status for a in list_archives(flows)] == ["verified"]
        with pytest.raises(RebuildInProgress, match="retention refused"):
            retain(flows, tmp_path, T0 + 40 * DAY)
        later = retain(flows, tmp_path, T0 + 40 * DAY + REBUILD_LEASE + timedelta(seconds=1))
        assert later.pruned == ("f1", "f2") and len(later.repaired) == 1
        assert [f.flow_id for f in FlowQueries(flows).flows().items] == ["f3", "f4"]

    def test_no_restore_while_a_rebuild_holds_its_claim(self, flows: EventStore, tmp_path: Path) -> None:
        archive_id = retain(flows, tmp_path, T0 + 40 * DAY).archive_id
        with freeze_time(T0 + 41 * DAY):
            claim_rebuild(flows)
            with pytest.raises(RebuildInProgress, match="restoring from archive"):
                restore(flows, archive_id)
        assert flows.revision("f1") == 0 and table_count(flows, "flow_tombstones") == 2
        with freeze_time(T0 + 41 * DAY + REBUILD_LEASE + timedelta(seconds=1)):
            assert restore(flows, archive_id).flows == ("f1", "f2")


class TestVerifyAccounting:
    def test_pruned_events_are_accounted_for(self, flows: EventStore, tmp_path: Path) -> None:
        retain(flows, tmp_path, T0 + 40 * DAY)
        assert flows.verify().ok
        sql(flows, "DELETE FROM pruned_events WHERE flow_id = 'f1' AND revision = 1")
        assert [p.kind for p in flows.verify().problems] == ["tombstone-mismatch", "missing-events"]

    def test_a_missing_event_without_tombstone_is_still_reported(
        self, flows: EventStore, tmp_path: Path
    ) -> None:
        retain(flows, tmp_path, T0 + 40 * DAY)
        drop_guards(flows)
        sql(flows, "DELETE FROM flow_events WHERE flow_id = 'plain'")
        (problem,) = flows.verify().problems
        assert problem.kind == "missing-events" and "and 6 pruned" in problem.detail

    def test_a_tombstone_must_match_its_leaves(self, flows: EventStore, tmp_path: Path) -> None:
        retain(flows, tmp_path, T0 + 40 * DAY)
        sql(flows, "UPDATE flow_tombstones SET last_revision = 2 WHERE flow_id = 'f2'")
        assert [(p.flow_id, p.kind) for p in flows.verify().problems] == [("f2", "tombstone-mismatch")]


class TestCrashRepair:
    @pytest.mark.parametrize("phase", ["written", "verified"])
    def test_a_run_killed_before_the_prune_is_finished_next_time(
        self, flows: EventStore, target: Target, tmp_path: Path, phase: str
    ) -> None:
        reader, writer = SPAWN.Pipe(duplex=False)
        args = (
            target.url,
            target.options,
            str(tmp_path / "archives"),
            (T0 + 40 * DAY).isoformat(),
            phase,
            writer,
        )
        child = SPAWN.Process(target=retention_workers.retain_until, args=args, daemon=True)
        child.start()
        writer.close()
        try:
            assert reader.poll(60.0) and reader.recv() == phase
        finally:
            child.kill()
            child.join(30.0)
        (archive,) = list_archives(flows)
        assert archive.status == phase and flows.revision("f1") == 3
        report = retain(flows, tmp_path, T0 + 40 * DAY)
        assert report.repaired == (archive.archive_id,) and report.pruned == ("f1", "f2")
        assert report.archive_id is None and [a.status for a in list_archives(flows)] == ["pruned"]
        assert flows.verify().ok

    def test_a_second_run_while_one_is_under_way_does_nothing_and_says_so(
        self, flows: EventStore, target: Target, tmp_path: Path
    ) -> None:
        """Two runs at once archived the same flows twice, the loser saying they had changed since.
        The second is refused while the first (another process, here stopped after writing its
        archive) runs; once that one is killed, its lock goes with it and a run finishes its work."""
        reader, writer = SPAWN.Pipe(duplex=False)
        archives = str(tmp_path / "archives")
        args = (target.url, target.options, archives, (T0 + 40 * DAY).isoformat(), "written", writer)
        child = SPAWN.Process(target=retention_workers.retain_until, args=args, daemon=True)
        child.start()
        writer.close()
        try:
            assert reader.poll(60.0) and reader.recv() == "written"
            with pytest.raises(RetentionInProgress, match="another retention run is under way"):
                retain(flows, tmp_path, T0 + 40 * DAY)
            with freeze_time(T0 + 40 * DAY):
                said = run(target, "prune", "--policy", "finished=30", "--archive-dir", archives, code=1)
            assert said.startswith("error: another retention run is under way") and "Traceback" not in said
            assert len(list_archives(flows)) == 1 and flows.revision("f1") == 3
            assert retain(flows, tmp_path, T0 + 40 * DAY, dry_run=True).eligible == ("f1", "f2")  # reads only
            nightly = {"retention": {"keep_days": {"finished": 30}, "archive_dir": archives}}
            with freeze_time(T0 + 40 * DAY):
                job = Maintenance(flows, MaintenanceConfig.parse(nightly)).run_once("retention")
            assert job.status == "skipped"
            assert job.details["reason"].startswith("another retention run is under way")
        finally:
            child.kill()
            child.join(30.0)
        report = retain(flows, tmp_path, T0 + 40 * DAY)
        assert report.pruned == ("f1", "f2") and [a.status for a in list_archives(flows)] == ["pruned"]

    def test_an_archive_lost_before_the_prune_prunes_nothing(self, flows: EventStore, tmp_path: Path) -> None:
        retain(flows, tmp_path, T0 + 40 * DAY)
        restore(flows, list_archives(flows)[0].archive_id)
        with flows.transaction() as tx:  # an archive written, its file then lost
            tx.connection.exec_driver_sql("UPDATE archives SET status = 'written'")
        for path in (tmp_path / "archives").iterdir():
            path.unlink()
        again = retain(flows, tmp_path, T0 + 40 * DAY)
        assert len(again.failed) == 1 and again.pruned == ("f1", "f2")
        assert sorted(a.status for a in list_archives(flows)) == ["failed", "pruned"]


def run(target: Target, *args: str, code: int = 0) -> str:
    schema = target.options.get("schema")
    prefix = ["--url", target.url, *(["--schema", schema] if schema else [])]
    result = CliRunner().invoke(main, [*prefix, *args], env={"EVENTSTORE_ARCHIVE_DIR": None})
    assert result.exit_code == code, result.output
    return result.output


class TestCommands:
    def test_hold_prune_list_restore(self, flows: EventStore, target: Target, tmp_path: Path) -> None:
        archives = str(tmp_path / "arch")
        assert "f1 is held" in run(target, "hold", "f1", "--reason", "audit", "--by", "ann")
        assert '"flow_id":"f1"' in run(target, "holds", "--json")
        with freeze_time(T0 + 40 * DAY):
            assert "would prune 1 flow: f2" in run(target, "prune", "--policy", "finished=30", "--dry-run")
            out = run(target, "prune", "--policy", "finished=30", "--archive-dir", archives)
        assert "pruned 1 flow (3 events)" in out and "kept under legal hold: f1" in out
        assert "released the hold on f1" in run(target, "release", "f1", "--by", "ann", "--reason", "done")
        (listed,) = orjson.loads(run(target, "archive", "list", "--json"))
        assert listed["status"] == "pruned" and listed["flows_pruned"] == 1
        assert listed["archive_id"] in run(target, "archive", "list")
        with gzip.open(listed["path"]) as archive:
            assert [orjson.loads(line)["flow_id"] for line in archive] == ["f2"] * 3
        assert "restored 1 flow (3 events)" in run(target, "archive", "restore", listed["archive_id"], "f2")
        assert "Invalid value for '--policy'" in run(target, "prune", "--policy", "running=3", code=2)
        assert FlowQueries(flows).flow("f2").status == "finished"
