"""The append contract: revisions, atomicity, multi-flow transactions."""

from __future__ import annotations

import pytest

from eventstore import ANY, AppendResult, EventStore, NewEvent, RevisionMismatch


def events(*types: str) -> list[NewEvent]:
    return [NewEvent(t, {"n": i}) for i, t in enumerate(types)]


class TestAppend:
    def test_first_event_of_a_flow_is_revision_1(self, store: EventStore) -> None:
        result = store.append("f", events("A"), expected_revision=0)
        assert result.revision == 1
        assert result.first_revision == 1
        assert store.revision("f") == 1

    def test_batch_gets_consecutive_revisions_and_positions(self, store: EventStore) -> None:
        store.append("other", events("X"))
        result = store.append("f", events("A", "B", "C"), expected_revision=0)
        assert result.revision == 3
        assert result.positions == (2, 3, 4)
        assert [(e.revision, e.position) for e in store.read_flow("f")] == [(1, 2), (2, 3), (3, 4)]

    def test_returns_the_ids_it_wrote(self, store: EventStore) -> None:
        batch = events("A", "B")
        result = store.append("f", batch)
        assert result.event_ids == tuple(e.event_id for e in batch)
        assert [e.event_id for e in store.read_flow("f")] == list(result.event_ids)

    def test_any_appends_whatever_the_revision(self, store: EventStore) -> None:
        store.append("f", events("A"))
        assert store.append("f", events("B"), expected_revision=ANY).revision == 2

    def test_stale_expected_revision_raises_and_writes_nothing(self, store: EventStore) -> None:
        store.append("f", events("A", "B"), expected_revision=0)
        with pytest.raises(RevisionMismatch, match="at revision 2, expected 1") as caught:
            store.append("f", events("C"), expected_revision=1)
        assert (caught.value.flow_id, caught.value.expected, caught.value.actual) == ("f", 1, 2)
        assert store.revision("f") == 2
        assert store.last_position() == 2

    def test_expected_zero_refuses_an_existing_flow(self, store: EventStore) -> None:
        store.append("f", events("A"))
        with pytest.raises(RevisionMismatch):
            store.append("f", events("B"), expected_revision=0)

    def test_expected_revision_ahead_of_the_flow_is_a_mismatch(self, store: EventStore) -> None:
        with pytest.raises(RevisionMismatch, match="at revision 0, expected 5"):
            store.append("f", events("A"), expected_revision=5)

    def test_metadata_is_stored_per_event_over_the_append_metadata(self, store: EventStore) -> None:
        batch = [NewEvent("A", {}), NewEvent("B", {}, metadata={"actor": "human:ann", "extra": 1})]
        store.append("f", batch, metadata={"actor": "agent:kate", "correlation_id": "c1"})
        first, second = store.read_flow("f")
        assert first.metadata == {"actor": "agent:kate", "correlation_id": "c1"}
        assert second.metadata == {"actor": "human:ann", "correlation_id": "c1", "extra": 1}


class TestTransaction:
    def test_appends_to_several_flows_commit_together(self, store: EventStore) -> None:
        with store.transaction() as tx:
            tx.append("parent", events("Spawned"), expected_revision=0)
            tx.append("child-1", events("Started"), expected_revision=0)
            tx.append("child-2", events("Started"), expected_revision=0)
            tx.append("parent", events("Waiting"), expected_revision=1)
        assert [store.revision(f) for f in ("parent", "child-1", "child-2")] == [2, 1, 1]

    def test_one_stale_revision_rolls_back_every_flow(self, store: EventStore) -> None:
        store.append("child", events("Started"))
        with pytest.raises(RevisionMismatch), store.transaction() as tx:
            tx.append("parent", events("Spawned"), expected_revision=0)
            tx.append("child", events("Again"), expected_revision=0)
        assert store.revision("parent") == 0
        assert store.last_position() == 1

    def test_an_exception_in_the_block_rolls_back(self, store: EventStore) -> None:
        with pytest.raises(KeyError), store.transaction() as tx:
            tx.append("f", events("A"))
            raise KeyError("caller's own bug")
        assert store.revision("f") == 0
        assert list(store.read_all()) == []

    def test_sees_its_own_appends(self, store: EventStore) -> None:
        with store.transaction() as tx:
            tx.append("f", events("A"))
            assert tx.revision("f") == 1
            assert tx.append("f", events("B"), expected_revision=1).revision == 2

    def test_positions_continue_after_a_rolled_back_transaction(self, store: EventStore) -> None:
        store.append("f", events("A"))
        with pytest.raises(RevisionMismatch), store.transaction() as tx:
            tx.append("g", events("B"))
            tx.append("f", events("C"), expected_revision=0)
        result: AppendResult = store.append("g", events("D"))
        assert result.positions == (2,)


class TestReconnect:
    def test_appends_and_reads_survive_a_dropped_connection(self, pg_target) -> None:  # type: ignore[no-untyped-def]
        import psycopg

        with pg_target.open() as store:
            store.append("f", events("A"), expected_revision=0)
            assert [e.type for e in store.read_flow("f")] == ["A"]
            database = store.engine.url.database
            with psycopg.connect(
                str(store.engine.url.set(drivername="postgresql")), autocommit=True
            ) as admin:
                killed = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (database,),
                ).fetchone()
            assert killed is not None and killed[0] >= 1
            assert [e.type for e in store.read_flow("f")] == ["A"], "a read finds the dead connection first"
            assert store.append("f", events("B"), expected_revision=1).revision == 2
            assert [e.type for e in store.read_flow("f")] == ["A", "B"]


class TestFailedUnitOfWork:
    def test_a_caught_failure_still_rolls_everything_back(self, store: EventStore) -> None:
        from eventstore import DuplicateEventId, TransactionAborted

        taken = NewEvent("Taken", {})
        store.append("x", [taken])
        with pytest.raises(TransactionAborted, match="nothing was committed"), store.transaction() as tx:
            tx.append("a", events("A"), expected_revision=0)
            with pytest.raises(DuplicateEventId):
                tx.append("b", [NewEvent("B", {}), taken])
            with pytest.raises(TransactionAborted, match="earlier append"):
                tx.append("c", events("C"))
        assert (store.revision("a"), store.revision("b"), store.revision("c")) == (0, 0, 0)
        assert store.last_position() == 1
        assert store.verify().ok

    def test_a_transaction_cannot_be_used_after_its_block(self, store: EventStore) -> None:
        from eventstore import InvalidInput

        with store.transaction() as tx:
            tx.append("a", events("A"))
        with pytest.raises(InvalidInput, match="has ended"):
            tx.append("a", events("B"))
        assert store.revision("a") == 1
