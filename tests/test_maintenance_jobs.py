"""The integrity, snapshot and retention jobs."""

from __future__ import annotations

import logging
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from freezegun import freeze_time

from eventstore import EventStore, NewEvent
from eventstore.checkpoints import generate_key
from eventstore.flow_fold import FOLD_VERSION
from eventstore.incremental_verify import SYSTEM_INTEGRITY_FLOW
from eventstore.integrity import format_time
from eventstore.maintenance import Maintenance
from eventstore.maintenance_config import MaintenanceConfig
from eventstore.schema import archives, flow_snapshots, pruned_events
from projections import FlowQueries, FlowService

from .readmodels import assert_matches_rebuild


def append(store: EventStore, flow_id: str, count: int) -> None:
    store.append(flow_id, [NewEvent("Noted", {"n": n}) for n in range(count)])


def tamper(store: EventStore, sql: str) -> None:
    """Edit the log behind the library's back, as someone with database access could."""
    with store.engine.connect() as conn:
        if store.dialect == "postgresql":
            conn.exec_driver_sql("ALTER TABLE flow_events DISABLE TRIGGER USER")
        else:
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS flow_events_no_update")
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS flow_events_no_delete")
        conn.exec_driver_sql(sql)
        conn.commit()


def position_of(service: Maintenance, job: str) -> int:
    (row,) = [row for row in service.status() if row.name == job]
    return row.last_position


class TestIntegrityJob:
    def test_each_run_verifies_what_was_written_since_the_last(self, store: EventStore) -> None:
        service = Maintenance(store)
        append(store, "f", 3)
        append(store, "g", 2)
        first = service.run_once("integrity").details
        append(store, "f", 2)
        second = service.run_once("integrity").details
        assert (first["from_position"], first["to_position"], first["events_checked"]) == (1, 5, 5)
        assert (second["from_position"], second["to_position"], second["events_checked"]) == (6, 7, 2)
        assert position_of(service, "integrity") == 7

    def test_a_tampered_event_fails_loudly_and_is_recorded(
        self, store: EventStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        service = Maintenance(store)
        append(store, "f", 2)
        service.run_once("integrity")
        append(store, "f", 2)
        tamper(store, "UPDATE flow_events SET type = 'Forged' WHERE position = 4")
        with caplog.at_level(logging.DEBUG, logger="eventstore.maintenance"):  # DEBUG: with the exception
            result = service.run_once("integrity")
        assert result.status == "failed" and "f@4 (position 4): hash-mismatch" in (result.error or "")
        assert "1 problem among positions 3 to 4" in caplog.text
        (failure,) = [record.exc_info[1] for record in caplog.records if record.exc_info]
        assert [(p.flow_id, p.position, p.kind) for p in failure.problems] == [("f", 4, "hash-mismatch")]
        (recorded,) = store.read_flow(SYSTEM_INTEGRITY_FLOW)
        assert recorded.type == "IntegrityProblemsFound" and recorded.data["problem_count"] == 1
        assert recorded.data["problems"][0]["kind"] == "hash-mismatch"
        assert position_of(service, "integrity") == 4
        assert service.run_once("integrity").details["events_checked"] == 1  # the record itself

    def test_a_deleted_event_is_found(self, store: EventStore) -> None:
        service = Maintenance(store)
        append(store, "f", 2)
        service.run_once("integrity")
        append(store, "f", 2)
        tamper(store, "DELETE FROM flow_events WHERE position = 3")
        result = service.run_once("integrity")
        (recorded,) = store.read_flow(SYSTEM_INTEGRITY_FLOW)
        kinds = {p["kind"] for p in recorded.data["problems"]}
        assert result.status == "failed" and {"missing-events", "broken-link", "revision-gap"} <= kinds

    def test_positions_pruned_by_retention_are_accounted_for(self, store: EventStore) -> None:
        append(store, "f", 1)
        append(store, "gone", 2)
        append(store, "f", 1)
        pruned = [(e.position, e.flow_id, e.revision, bytes.fromhex(e.hash)) for e in store.read_flow("gone")]
        tamper(store, "DELETE FROM flow_events WHERE flow_id = 'gone'")
        with store.engine.begin() as conn:
            conn.execute(
                pruned_events.insert(),
                [{"position": p, "flow_id": f, "revision": r, "hash": h} for p, f, r, h in pruned],
            )
        assert Maintenance(store).run_once("integrity").details["events_checked"] == 2

    def test_a_log_shorter_than_last_verified_is_found(self, store: EventStore) -> None:
        service = Maintenance(store)
        append(store, "f", 3)
        service.run_once("integrity")
        tamper(store, "DELETE FROM flow_events WHERE position = 3")
        tamper(store, "UPDATE event_positions SET last_position = 2")  # the count adds up again
        result = service.run_once("integrity")
        assert result.status == "failed" and "positions were handed out up to 3" in (result.error or "")
        (recorded,) = store.read_flow(SYSTEM_INTEGRITY_FLOW)
        assert [p["kind"] for p in recorded.data["problems"]] == ["missing-events"]
        assert "1 integrity problem among positions 3 to 3" in (result.error or "")
        assert position_of(service, "integrity") == 2  # back to the log's end: the record is the evidence
        assert service.run_once("integrity").details["events_checked"] == 1  # the record itself

    def test_a_checkpoint_is_signed_after_a_clean_run(self, store: EventStore) -> None:
        append(store, "f", 3)
        details = Maintenance(store, signing_key=generate_key()).run_once("integrity").details
        assert details["checkpoint"]["tree_size"] == 3 and len(details["checkpoint"]["root_hash"]) == 64


class TestSnapshotJob:
    def test_long_flows_are_snapshotted_and_obsolete_snapshots_removed(self, flow_store: EventStore) -> None:
        service = FlowService(flow_store)
        service.start_flow("long", controller_id="c", goal="g", owner_session_key="s")
        for n in range(11):
            service.advance("long", state_patch={"n": n})
        service.start_flow("short", controller_id="c", goal="g", owner_session_key="s")
        maintenance = Maintenance(flow_store, MaintenanceConfig.parse({"snapshots": {"every": 5}}))
        assert maintenance.run_once("snapshots").details == {"snapshotted": 1, "removed": 0, "position": 13}
        with flow_store.engine.begin() as conn:
            assert conn.execute(sa.select(flow_snapshots.c.flow_id, flow_snapshots.c.revision)).all() == [
                ("long", 5),
                ("long", 10),
            ]
            old = {"flow_id": "short", "revision": 1, "event_hash": b"x" * 32, "state": "{}"}
            conn.execute(
                flow_snapshots.insert().values(
                    **old, fold_version=FOLD_VERSION - 1, state_hash=b"y" * 32, created_at="2030"
                )
            )
        assert maintenance.run_once("snapshots").details == {"snapshotted": 0, "removed": 1, "position": 13}

    def test_the_largest_numbers_the_config_takes_run(self, store: EventStore, tmp_path: Path) -> None:
        append(store, "f", 3)
        most = {"snapshots": {"every": 2**31 - 1}, "integrity": {"batch_size": 2**63 - 1}}
        retention = {"keep_days": {"finished": 0}, "archive_dir": str(tmp_path), "max_flows": 2**63 - 1}
        maintenance = Maintenance(store, MaintenanceConfig.parse({**most, "retention": retention}))
        for job in ("snapshots", "integrity", "retention"):
            assert maintenance.run_once(job).status == "ok", job

    def test_a_database_error_is_the_stores_error(self, store: EventStore) -> None:
        append(store, "f", 3)
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE flow_snapshots")
        result = Maintenance(store, MaintenanceConfig.parse({"snapshots": {"every": 2}})).run_once(
            "snapshots"
        )
        assert result.status == "failed" and (result.error or "").startswith("StorageError: ")


class TestRetentionJob:
    def test_it_keeps_the_configured_days_dir_and_flows_per_run(
        self, flow_store: EventStore, tmp_path: Path
    ) -> None:
        service = FlowService(flow_store)
        with freeze_time("2030-01-01") as clock:
            for flow_id in ("first", "second", "failed", "young"):
                service.start_flow(flow_id, controller_id="c", goal="g", owner_session_key="s")
            service.finish("first", result={})
            clock.tick(timedelta(days=1))
            service.finish("second", result={})
            service.fail("failed", error="no policy for failed flows: kept")
            clock.move_to("2030-02-15")
            service.finish("young", result={})  # 30 days have not passed by March
        archives = tmp_path / "archives"
        retention = {"keep_days": {"finished": 30}, "archive_dir": str(archives), "max_flows": 1}
        maintenance = Maintenance(flow_store, MaintenanceConfig.parse({"retention": retention}))
        runs = []
        with freeze_time("2030-03-01") as clock:
            for _ in range(3):
                runs.append(maintenance.run_once("retention").details)
                clock.tick(timedelta(hours=1))
        assert [run["pruned"] for run in runs] == [["first"], ["second"], []]
        written = [Path(run["archive_path"]) for run in runs[:2]]
        assert [(path.parent, path.is_file()) for path in written] == [(archives, True)] * 2
        assert [flow.flow_id for flow in FlowQueries(flow_store).flows().items] == ["failed", "young"]

    def test_a_long_run_renews_its_lease_from_the_progress_hook(
        self, flow_store: EventStore, tmp_path: Path
    ) -> None:
        """A real retention run that outlasts its lease keeps the job throughout, renewing from progress.

        The run reports progress five times (exporting, written, verifying,
        verified, pruned). Each time it writes its archive's row (written,
        verified, pruned) the frozen clock moves on half an hour, so the run
        lasts an hour and a half on a one-hour lease. At each of those moments
        the job's row must still be leased past it: without the renewal the
        lease runs out at the second.
        """
        service = FlowService(flow_store)
        with freeze_time("2030-01-01"):
            for flow_id in ("a", "b", "c", "open"):
                service.start_flow(flow_id, controller_id="c", goal="g", owner_session_key="s")
            for flow_id in ("a", "b", "c"):
                service.finish(flow_id, result={})
        config = MaintenanceConfig.parse(
            {
                "jobs": {"retention": {"lease_seconds": 3600}},
                "retention": {"keep_days": {"finished": 30}, "archive_dir": str(tmp_path)},
            }
        )
        maintenance = Maintenance(flow_store, config)
        held: list[bool] = []

        def half_an_hour_per_archive_step(_conn: Any, statement: Any, *_: Any) -> None:
            if isinstance(statement, sa.Insert | sa.Update) and statement.table is archives:
                clock.tick(timedelta(minutes=30))
                (row,) = [row for row in maintenance.status() if row.name == "retention"]
                held.append((row.lease_until or "") > format_time(flow_store.clock()))

        sa.event.listen(flow_store.engine, "after_execute", half_an_hour_per_archive_step)
        with freeze_time("2030-03-01") as clock:
            result = maintenance.run_once("retention")
        assert held == [True, True, True]
        assert (result.status, result.details["pruned"]) == ("ok", ["a", "b", "c"])
        assert Path(result.details["archive_path"]).is_file()
        assert [flow.flow_id for flow in FlowQueries(flow_store).flows().items] == ["open"]

    def test_old_flows_are_archived_and_pruned_with_their_read_models(
        self, flow_store: EventStore, tmp_path: Path
    ) -> None:
        service = FlowService(flow_store)
        with freeze_time("2030-01-01"):
            for flow_id in ("old", "open"):
                service.start_flow(flow_id, controller_id="c", goal="g", owner_session_key="s")
            service.finish("old", result={})
        config = MaintenanceConfig.parse(
            {"retention": {"keep_days": {"finished": 30}, "archive_dir": str(tmp_path)}}
        )
        with freeze_time("2030-03-01"):
            result = Maintenance(flow_store, config).run_once("retention")
        assert (result.status, result.details["pruned"], result.details["events_pruned"]) == (
            "ok",
            ["old"],
            2,
        )
        assert [flow.flow_id for flow in FlowQueries(flow_store).flows().items] == ["open"]
        assert_matches_rebuild(flow_store)

    def test_its_result_names_the_policy_it_ran_with(self, store: EventStore) -> None:
        """A run with no policy keeps everything: its `ok` says so, rather than pass for a pruning run."""
        assert Maintenance(store).run_once("retention").details["keep_days"] == {}
        config = MaintenanceConfig.parse({"retention": {"keep_days": {"finished": 30, "cancelled": 0.5}}})
        details = Maintenance(store, config).run_once("retention").details
        assert details["keep_days"] == {"finished": 30, "cancelled": 0.5}

    def test_without_the_retention_module_it_is_skipped(
        self, store: EventStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "eventstore.retention", None)
        result = Maintenance(store).run_once("retention")
        assert (result.status, result.details["reason"]) == (
            "skipped",
            "eventstore.retention is not available in this version",
        )
