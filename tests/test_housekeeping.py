"""SQLite housekeeping: online backups, WAL checkpoints, the database's own checks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time

from eventstore import (
    EventStore,
    InvalidInput,
    NewEvent,
    NotSupported,
    StorageError,
    StoreClosed,
    housekeeping,
    maintenance_jobs,
)
from eventstore.aio import AsyncEventStore
from eventstore.housekeeping import backup, check_database, wal_checkpoint
from eventstore.integrity import format_time
from eventstore.maintenance import Maintenance
from eventstore.maintenance_config import MaintenanceConfig
from projections import FlowProjection, FlowService

from .conftest import Target


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[EventStore]:
    """Housekeeping is SQLite's: these tests run on a SQLite file (PostgreSQL's answer is tested below)."""
    with EventStore.open(f"sqlite:///{tmp_path / 'live.db'}", projections=[FlowProjection()]) as store:
        yield store


def record_some(store: EventStore) -> None:
    service = FlowService(store)
    for n in range(3):
        service.start_flow(f"f{n}", controller_id="c", goal="g", owner_session_key="s")
        service.finish(f"f{n}", result={"n": n})
    store.append("notes", [NewEvent("Noted", {"text": "x" * 5000}) for _ in range(20)])


class TestBackup:
    def test_a_backup_is_a_valid_store_with_the_same_events(
        self, sqlite_store: EventStore, tmp_path: Path
    ) -> None:
        record_some(sqlite_store)
        done = backup(sqlite_store, tmp_path / "copy.db")
        assert done.path == tmp_path / "copy.db" and done.bytes > 100_000
        assert not list(tmp_path.glob("*.partial"))
        with EventStore.open(f"sqlite:///{done.path}", create=False) as copy:
            assert list(copy.read_all()) == list(sqlite_store.read_all())
            report = copy.verify()
            assert report.ok and report.events_checked == 26

    def test_an_existing_file_is_never_overwritten(self, sqlite_store: EventStore, tmp_path: Path) -> None:
        (tmp_path / "taken.db").write_text("precious")
        with pytest.raises(InvalidInput, match="exists; back up to a new file"):
            backup(sqlite_store, tmp_path / "taken.db")
        assert (tmp_path / "taken.db").read_text() == "precious"

    @pytest.mark.parametrize("path", ["", "/", ".", ".."])
    def test_a_path_without_a_file_name_is_refused(
        self, sqlite_store: EventStore, tmp_path: Path, path: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        before = sorted(tmp_path.iterdir())
        with pytest.raises(InvalidInput, match=f"a backup needs a file name, not {path!r}"):
            backup(sqlite_store, path)
        assert sorted(tmp_path.iterdir()) == before

    def test_a_progress_that_is_not_callable_is_refused_before_the_copy(
        self, sqlite_store: EventStore, tmp_path: Path
    ) -> None:
        with pytest.raises(InvalidInput, match="progress must be callable or None, not 5"):
            backup(sqlite_store, tmp_path / "copy.db", progress=5)  # type: ignore[arg-type]
        assert not list(tmp_path.glob("copy.db*"))

    def test_a_file_named_like_its_partial_copy_is_left_alone(
        self, sqlite_store: EventStore, tmp_path: Path
    ) -> None:
        (tmp_path / "copy.db.partial").write_text("my notes, not a backup")
        backup(sqlite_store, tmp_path / "copy.db")
        assert (tmp_path / "copy.db.partial").read_text() == "my notes, not a backup"
        assert sorted(p.name for p in tmp_path.glob("copy.db*")) == ["copy.db", "copy.db.partial"]

    def test_writers_carry_on_between_its_steps_and_are_not_in_the_copy(
        self, sqlite_store: EventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        record_some(sqlite_store)
        monkeypatch.setattr(housekeeping, "PAGES_PER_STEP", 5)
        remaining: list[int] = []

        def write_meanwhile(left: int, total: int) -> None:
            remaining.append(left)
            sqlite_store.append("meanwhile", [NewEvent("Noted", {})])

        done = backup(sqlite_store, tmp_path / "copy.db", progress=write_meanwhile)
        assert len(remaining) > 3 and remaining == sorted(remaining, reverse=True)  # never restarted
        with EventStore.open(f"sqlite:///{done.path}", create=False) as copy:
            assert copy.last_position() == 26 and copy.verify().ok

    def test_postgresql_is_pointed_to_pg_dump(self, pg_target: Target, tmp_path: Path) -> None:
        with pg_target.open() as store:
            with pytest.raises(NotSupported, match="backup is not supported on postgresql: use pg_dump"):
                backup(store, tmp_path / "copy.db")
            service = Maintenance(store)
            assert [service.run_once(job).status for job in ("wal-checkpoint", "quick-check")] == [
                "skipped",
                "skipped",
            ]

    def test_the_backup_job_keeps_the_newest_copies(self, sqlite_store: EventStore, tmp_path: Path) -> None:
        config = MaintenanceConfig.parse(
            {"jobs": {"backup": {"enabled": True}}, "backup": {"directory": str(tmp_path / "b"), "keep": 2}}
        )
        service = Maintenance(sqlite_store, config)
        for day in range(3):
            with freeze_time(datetime(2030, 1, 1 + day, 1, 0, tzinfo=UTC) + timedelta(seconds=day)):
                assert service.run_once("backup").status == "ok"
        assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
            "eventstore-20300102T010001000000Z.db",
            "eventstore-20300103T010002000000Z.db",
        ]

    @pytest.mark.parametrize("where", ["a-file", "a-file/below"])
    def test_a_backup_directory_that_cannot_be_made_fails_the_job_naming_it(
        self, sqlite_store: EventStore, tmp_path: Path, where: str
    ) -> None:
        (tmp_path / "a-file").write_text("")
        config = MaintenanceConfig.parse(
            {"jobs": {"backup": {"enabled": True}}, "backup": {"directory": str(tmp_path / where)}}
        )
        result = Maintenance(sqlite_store, config).run_once("backup")
        assert result.status == "failed"
        assert (result.error or "").startswith(
            f"StorageError: cannot create the backup directory {tmp_path / where}: "
        )

    def test_a_long_backup_job_renews_its_lease(
        self, sqlite_store: EventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        record_some(sqlite_store)
        monkeypatch.setattr(housekeeping, "PAGES_PER_STEP", 5)
        held: list[bool] = []

        def slow_backup(store: EventStore, path: Path, progress: Any = None) -> Any:
            def step_done(left: int, total: int) -> None:  # ten minutes a step: past the hour's lease
                clock.tick(timedelta(minutes=10))
                if progress is not None:
                    progress(left, total)
                (row,) = [row for row in Maintenance(store).status() if row.name == "backup"]
                held.append((row.lease_until or "") > format_time(store.clock()))

            return backup(store, path, progress=step_done)

        monkeypatch.setattr(maintenance_jobs, "backup", slow_backup)
        config = MaintenanceConfig.parse({"backup": {"directory": str(tmp_path / "b")}})
        with freeze_time("2030-01-01") as clock:
            assert Maintenance(sqlite_store, config).run_once("backup").status == "ok"
        assert len(held) > 6 and all(held)


class TestSqliteChecks:
    def test_a_wal_checkpoint_truncates_the_wal(self, sqlite_store: EventStore, tmp_path: Path) -> None:
        record_some(sqlite_store)
        wal = tmp_path / "live.db-wal"
        assert wal.stat().st_size > 100_000
        result = Maintenance(sqlite_store).run_once("wal-checkpoint")
        assert result.status == "ok" and result.details["busy"] is False
        assert wal.stat().st_size < 10_000  # emptied; then the job's row was written to it

    def test_quick_and_full_checks_pass_on_a_sound_file(self, sqlite_store: EventStore) -> None:
        record_some(sqlite_store)
        service = Maintenance(sqlite_store)
        assert service.run_once("quick-check").details == {"result": "ok"}
        assert service.run_once("integrity-check").details == {"result": "ok"}  # disabled, but runs on demand

    @pytest.mark.parametrize("quick", [True, False], ids=["quick", "full"])
    def test_a_check_ends_early_when_stop_says_so_and_the_connection_is_left_as_it_was(
        self, sqlite_store: EventStore, monkeypatch: pytest.MonkeyPatch, quick: bool
    ) -> None:
        record_some(sqlite_store)
        monkeypatch.setattr(housekeeping, "CHECK_STEPS", 100)
        asked: list[int] = []

        def stop() -> bool:
            asked.append(1)
            return len(asked) == 3

        assert check_database(sqlite_store, quick=quick, stop=stop) is None
        assert len(asked) == 3  # not asked again once it said stop
        assert check_database(sqlite_store, quick=quick, stop=lambda: False) == ["ok"]
        assert check_database(sqlite_store, quick=quick) == ["ok"]
        with sqlite_store.reading() as conn:  # the pooled connection has no handler left behind
            assert conn.exec_driver_sql("SELECT count(*) FROM flow_events").scalar_one() == 26
        with pytest.raises(InvalidInput, match="stop must be callable"):
            check_database(sqlite_store, stop=True)  # type: ignore[arg-type]  # what is refused

    def test_stop_ends_a_check_on_an_async_store_too(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """aiosqlite's set_progress_handler is a coroutine: called as pysqlite's, it set nothing."""
        monkeypatch.setattr(housekeeping, "CHECK_STEPS", 100)
        asked: list[int] = []

        def stop() -> bool:
            asked.append(1)
            return len(asked) == 3

        async def main() -> None:
            async with await AsyncEventStore.open(f"sqlite:///{tmp_path / 'async.db'}") as store:
                await store.append("notes", [NewEvent("Noted", {"text": "x" * 5000}) for _ in range(20)])
                assert await store.run(check_database, store.store, quick=False, stop=stop) is None
                assert len(asked) == 3
                assert await store.run(check_database, store.store, quick=False, stop=lambda: False) == ["ok"]

        asyncio.run(main())

    @pytest.mark.parametrize("check", [check_database, wal_checkpoint])
    def test_a_url_where_the_store_belongs_is_invalid_input(self, check: Callable[[Any], object]) -> None:
        with pytest.raises(InvalidInput, match=r"store must be an EventStore, not 'sqlite:///x\.db'"):
            check("sqlite:///x.db")

    def test_they_go_through_the_store(self, sqlite_store: EventStore, tmp_path: Path) -> None:
        sqlite_store.engine.dispose()  # the next check opens the file afresh
        for name in ("live.db-wal", "live.db-shm"):
            (tmp_path / name).unlink(missing_ok=True)
        (tmp_path / "live.db").write_bytes(b"not a database" * 1000)
        with pytest.raises(StorageError, match="not a database"):
            check_database(sqlite_store)
        sqlite_store.close()
        with pytest.raises(StoreClosed):
            wal_checkpoint(sqlite_store)
