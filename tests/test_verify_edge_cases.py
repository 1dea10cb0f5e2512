"""Edits verify must name, not crash on or miss: odd values in a row, a prune forged on a live flow."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from eventstore import EventStore, IntegrityViolation, NewEvent
from eventstore.backends.base import VERIFY_COLUMNS
from eventstore.checkpoints import generate_key, take_checkpoint, verify_checkpoints
from eventstore.exchange import export_events
from eventstore.integrity import chain_hash
from eventstore.schema import flow_events

from .conftest import Target
from .test_exchange import run
from .test_tamper import drop_guards, sql


@pytest.fixture
def filled(store: EventStore) -> EventStore:
    store.append("f1", [NewEvent("T", {"i": i}) for i in range(4)])
    store.append("f2", [NewEvent("T", {"i": i}) for i in range(3)])
    drop_guards(store)
    return store


def kinds(store: EventStore) -> list[tuple[str, int, int, str]]:
    return [(p.flow_id, p.revision, p.position, p.kind) for p in store.verify().problems]


class TestOddValues:
    @pytest.mark.parametrize(
        ("edit", "detail"),
        [
            ("prev_hash = 'x'", "prev_hash is str 'x', not 32 bytes"),
            ("data_hash = 'x'", "data_hash is str 'x', not 32 bytes"),
            ("hash = x'00'", "hash is 1 bytes, not 32 bytes"),
            ("event_id = 'abc'", "event_id is str 'abc', not a UUID"),
            ("recorded_at = x'00'", "recorded_at is 1 bytes, not a time a store writes"),
        ],
    )
    def test_a_value_of_another_type_is_a_problem_on_its_row(
        self, tmp_path: Path, edit: str, detail: str
    ) -> None:
        target = Target(f"sqlite:///{tmp_path / 'events.db'}")  # only SQLite keeps any type in any column
        with target.open() as store:
            store.append("f1", [NewEvent("T", {"i": i}) for i in range(3)])
            drop_guards(store)
            sql(store, f"UPDATE flow_events SET {edit} WHERE position = 2")
            problem = store.verify().problems[0]
            assert (problem.flow_id, problem.revision, problem.kind) == ("f1", 2, "malformed-row")
            assert problem.detail == detail
            with pytest.raises(IntegrityViolation, match=r"f1@2 .*malformed-row"):
                export_events(store, tmp_path / "x.jsonl")
        assert "BROKEN f1@2 (position 2): malformed-row" in run(target, "verify", code=2)
        assert "error: " in run(target, "export", str(tmp_path / "x.jsonl"), code=1)
        assert not (tmp_path / "x.jsonl").exists()

    def test_a_revision_that_is_no_integer_is_one_problem_not_gaps_around_it(self, tmp_path: Path) -> None:
        with Target(f"sqlite:///{tmp_path / 'events.db'}").open() as store:
            store.append("f1", [NewEvent("T", {"i": i}) for i in range(3)])
            drop_guards(store)
            sql(store, "UPDATE flow_events SET revision = 2.5 WHERE position = 2")
            assert [(p.position, p.kind, p.detail) for p in store.verify().problems] == [
                (2, "malformed-row", "revision is float 2.5, not an integer")
            ]

    @pytest.mark.parametrize(
        ("edit", "place"),
        [("recorded_at = 'noon'", ("f1", 2)), ("recorded_at = 'noon', revision = 2.5", ("f1", None))],
    )
    def test_a_row_sqlite_cannot_decode_is_named_on_the_error(
        self, tmp_path: Path, edit: str, place: tuple[str, int | None]
    ) -> None:
        with Target(f"sqlite:///{tmp_path / 'events.db'}").open() as store:
            store.append("f1", [NewEvent("T", {"i": i}) for i in range(3)])
            drop_guards(store)
            sql(store, f"UPDATE flow_events SET {edit} WHERE position = 2")
            with pytest.raises(IntegrityViolation, match="at position 2 cannot be read") as caught:
                list(store.read_all())
            assert (caught.value.flow_id, caught.value.revision, caught.value.position) == (*place, 2)
            with pytest.raises(IntegrityViolation, match="cannot be read") as caught:
                list(store.read_for_fold())
            assert (caught.value.flow_id, caught.value.revision, caught.value.position) == (*place, None)

    @pytest.mark.parametrize("moment", ["infinity", "-infinity", "12000-01-01", "0044-03-15 BC"])
    def test_a_time_python_cannot_hold_is_a_problem_on_its_row(
        self, pg_target: Target, tmp_path: Path, moment: str
    ) -> None:
        with pg_target.open() as store:
            store.append("f1", [NewEvent("T", {"i": i}) for i in range(3)])
            drop_guards(store)
            sql(store, f"UPDATE flow_events SET recorded_at = '{moment}' WHERE position = 2")
            (problem,) = store.verify().problems
            assert (problem.revision, problem.kind) == (2, "malformed-row")
            assert "not a time a store writes" in problem.detail
            with pytest.raises(IntegrityViolation, match=r"f1@2 .*malformed-row"):
                export_events(store, tmp_path / "x.jsonl")
            with pytest.raises(IntegrityViolation, match=r"cannot be read .*`eventstore verify` names it"):
                list(store.read_flow("f1"))
        assert "BROKEN f1@2 (position 2): malformed-row" in run(pg_target, "verify", code=2)
        assert "cannot be read" in run(pg_target, "history", "f1", code=1)


class TestForgedPrune:
    def copy_to_pruned(self, store: EventStore, where: str) -> None:
        sql(
            store,
            "INSERT INTO pruned_events (position, flow_id, revision, hash) "
            f"SELECT position, flow_id, revision, hash FROM flow_events WHERE {where}",
        )
        sql(store, f"DELETE FROM flow_events WHERE {where}")

    def test_a_live_flows_tail_recorded_as_pruned_is_reported(
        self, filled: EventStore, target: Target
    ) -> None:
        take_checkpoint(filled, generate_key())
        self.copy_to_pruned(filled, "flow_id = 'f1' AND revision = 4")
        assert kinds(filled) == [("f1", 4, 4, "pruned-without-tombstone")]
        assert verify_checkpoints(filled).ok  # the leaf is kept: only verify sees the deletion
        assert "BROKEN f1@4 (position 4): pruned-without-tombstone" in run(target, "verify", code=2)

    def test_a_tombstone_forged_over_a_live_flows_tail_is_reported(self, filled: EventStore) -> None:
        self.copy_to_pruned(filled, "flow_id = 'f1' AND revision = 4")
        sql(
            filled,
            "INSERT INTO flow_tombstones "
            "(flow_id, last_revision, last_hash, archive_id, archive_sha256, pruned_at) "
            "SELECT flow_id, revision, hash, 'forged', '', '' FROM pruned_events",
        )
        assert kinds(filled) == [
            ("f1", 4, 0, "tombstone-mismatch"),  # a prune takes whole flows: revisions 1 to 3 are not pruned
            ("f1", 1, 1, "tombstone-mismatch"),  # and a pruned flow's stored events must be the pruned ones
            ("f1", 2, 2, "tombstone-mismatch"),
            ("f1", 3, 3, "tombstone-mismatch"),
        ]

    def test_a_whole_flow_recorded_as_pruned_without_a_tombstone_is_still_reported(
        self, filled: EventStore
    ) -> None:
        self.copy_to_pruned(filled, "flow_id = 'f1'")
        assert kinds(filled) == [("f1", 4, 0, "pruned-without-tombstone")]


def test_take_checkpoint_reads_no_cached_block_again_and_verify_checkpoints_does(store: EventStore) -> None:
    """docs/integrity.md, "What a new checkpoint reads": the cost of an incremental checkpoint."""
    store.append("a", [NewEvent("T", {"i": i}) for i in range(200)])
    store.append("b", [NewEvent("T", {"i": i}) for i in range(100)])
    key = generate_key()
    take_checkpoint(store, key)  # caches the block of leaves 0..255
    drop_guards(store)
    rewrite_from(store, "a", 50)  # inside the cached block, hashes recomputed: a valid chain
    store.append("b", [NewEvent("T", {})])
    assert store.verify().ok
    take_checkpoint(store, key)  # signed over the block as cached
    problems = verify_checkpoints(store).problems
    assert [p.detail.split(":")[0] for p in problems] == [
        "checkpoint 300",
        "checkpoint 301",
        "the cached subtree of leaves 0..255 does not match the log",
    ]


def rewrite_from(store: EventStore, flow_id: str, revision: int) -> None:
    """What an attacker with the database does: change an event's type and rechain the rest of the flow."""
    events = list(store.read_flow(flow_id))
    rows = {
        row[0]: row for row in store.query(sa.select(*VERIFY_COLUMNS).where(flow_events.c.flow_id == flow_id))
    }
    prev = bytes.fromhex(events[revision - 2].hash)
    with store.engine.connect() as conn:
        for event in events[revision - 1 :]:
            stored = store._backend.stored_row(rows[event.position])
            kind = "Forged" if event.revision == revision else stored.type
            digest = chain_hash(
                prev, flow_id, event.revision, stored.event_id, kind, 1, stored.recorded_at,
                stored.data_hash, stored.metadata_hash,
            )  # fmt: skip
            conn.execute(
                flow_events.update()
                .where(flow_events.c.position == event.position)
                .values(type=kind, prev_hash=prev, hash=digest)
            )
            prev = digest
        conn.commit()
