"""The database refuses edits, and verify finds the ones made anyway."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from eventstore import EventStore, FlowArchived, FlowNotFound, IntegrityViolation, NewEvent
from eventstore.timetravel import fork
from projections import FlowService

from .conftest import Target


def sql(store: EventStore, statement: str) -> None:
    with store.engine.connect() as conn:
        conn.exec_driver_sql(statement)
        conn.commit()


def drop_guards(store: EventStore) -> None:
    """What an attacker with database access does first."""
    if store.dialect == "postgresql":
        sql(store, "DROP TRIGGER flow_events_no_update_delete ON flow_events")
    else:
        sql(store, "DROP TRIGGER flow_events_no_update")
        sql(store, "DROP TRIGGER flow_events_no_delete")


@pytest.fixture
def filled(store: EventStore) -> EventStore:
    store.append("a", [NewEvent("T", {"i": i}) for i in range(5)], metadata={"actor": "agent:x"})
    store.append("b", [NewEvent("T", {"i": i}) for i in range(3)])
    assert store.verify().ok
    return store


class TestAppendOnlyGuard:
    @pytest.mark.parametrize(
        "statement",
        [
            "UPDATE flow_events SET type = 'X' WHERE position = 1",
            "DELETE FROM flow_events WHERE position = 1",
            "DELETE FROM flow_events",
        ],
    )
    def test_database_refuses_updates_and_deletes(self, filled: EventStore, statement: str) -> None:
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):
            sql(filled, statement)
        assert filled.last_position() == 8
        assert filled.verify().ok

    def test_postgres_refuses_truncate(self, pg_target: Target) -> None:
        with pg_target.open() as store:
            store.append("a", [NewEvent("T", {})])
            with pytest.raises(sa.exc.DatabaseError, match="append-only"):
                sql(store, "TRUNCATE flow_events")
            assert store.last_position() == 1


class TestVerifyFindsTampering:
    def kinds(self, store: EventStore) -> list[tuple[str, int, str]]:
        report = store.verify()
        assert not report.ok
        return [(p.flow_id, p.revision, p.kind) for p in report.problems]

    def test_edited_data(self, filled: EventStore) -> None:
        drop_guards(filled)
        new = "'{\"i\": 99}'" if filled.dialect == "postgresql" else "'{\"i\":99}'"
        sql(filled, f"UPDATE flow_events SET data = {new} WHERE flow_id = 'a' AND revision = 3")
        assert self.kinds(filled) == [("a", 3, "data-edited")]
        problem = filled.verify().problems[0]
        assert problem.position == 3

    def test_edited_metadata(self, filled: EventStore) -> None:
        drop_guards(filled)
        new = '\'{"actor": "human:eve"}\''
        sql(filled, f"UPDATE flow_events SET metadata = {new} WHERE flow_id = 'a' AND revision = 2")
        assert self.kinds(filled) == [("a", 2, "metadata-edited")]

    def test_edited_envelope_field(self, filled: EventStore) -> None:
        drop_guards(filled)
        sql(filled, "UPDATE flow_events SET type = 'Approved' WHERE flow_id = 'b' AND revision = 1")
        assert self.kinds(filled) == [("b", 1, "hash-mismatch")]

    def test_deleted_row(self, filled: EventStore) -> None:
        drop_guards(filled)
        sql(filled, "DELETE FROM flow_events WHERE flow_id = 'a' AND revision = 2")
        assert self.kinds(filled) == [
            ("a", 3, "revision-gap"),
            ("a", 3, "broken-link"),
            ("", 0, "missing-events"),
        ]

    def test_deleted_first_row(self, filled: EventStore) -> None:
        drop_guards(filled)
        sql(filled, "DELETE FROM flow_events WHERE flow_id = 'b' AND revision = 1")
        assert self.kinds(filled) == [
            ("b", 2, "revision-gap"),
            ("b", 2, "broken-link"),
            ("", 0, "missing-events"),
        ]

    def test_inserted_row(self, filled: EventStore) -> None:
        drop_guards(filled)
        sql(filled, "UPDATE flow_events SET revision = revision + 100 WHERE flow_id = 'a' AND revision > 2")
        sql(filled, "UPDATE flow_events SET revision = revision - 99 WHERE flow_id = 'a' AND revision > 100")
        forged = NewEvent("T", {"i": "forged"})
        with filled.transaction() as tx:
            tx.append("forged-source", [forged])
        sql(
            filled,
            "UPDATE flow_events SET flow_id = 'a', revision = 3 WHERE flow_id = 'forged-source'",
        )
        kinds = self.kinds(filled)
        assert ("a", 3, "hash-mismatch") in kinds
        assert ("a", 3, "broken-link") in kinds
        assert all(flow == "a" for flow, _, _ in kinds)

    def test_reordered_rows(self, filled: EventStore) -> None:
        drop_guards(filled)
        sql(filled, "UPDATE flow_events SET revision = 100 WHERE flow_id = 'a' AND revision = 2")
        sql(filled, "UPDATE flow_events SET revision = 2 WHERE flow_id = 'a' AND revision = 3")
        sql(filled, "UPDATE flow_events SET revision = 3 WHERE flow_id = 'a' AND revision = 100")
        kinds = self.kinds(filled)
        assert ("a", 2, "hash-mismatch") in kinds and ("a", 3, "hash-mismatch") in kinds
        assert ("a", 2, "broken-link") in kinds

    def test_verify_one_flow_only_reads_that_flow(self, filled: EventStore) -> None:
        drop_guards(filled)
        sql(filled, "UPDATE flow_events SET type = 'X' WHERE flow_id = 'b' AND revision = 2")
        assert filled.verify("a").ok
        report = filled.verify("b")
        assert (report.events_checked, report.flows_checked, len(report.problems)) == (3, 1, 1)

    def test_verify_streams_in_pages(self, filled: EventStore) -> None:
        filled.page_size = 2
        seen: list[int] = []
        report = filled.verify(progress=seen.append)
        assert report.ok and report.events_checked == 8 and report.flows_checked == 2
        assert seen == [2, 4, 6, 8]


class TestVerifyCountsEvents:
    def test_a_deleted_flow_is_missing_events(self, filled: EventStore) -> None:
        drop_guards(filled)
        sql(filled, "DELETE FROM flow_events WHERE flow_id = 'b'")
        report = filled.verify()
        assert [(p.kind, p.detail) for p in report.problems] == [
            ("missing-events", "5 events are stored, but positions were handed out up to 8")
        ]

    def test_a_deleted_tail_is_missing_events(self, filled: EventStore) -> None:
        drop_guards(filled)
        sql(filled, "DELETE FROM flow_events WHERE flow_id = 'b' AND revision = 3")
        assert [p.kind for p in filled.verify().problems] == ["missing-events"]
        assert filled.verify("b").ok, "one flow's chain alone cannot see its own lost tail"


class TestVerifyOneFlowThatIsNotThere:
    """``verify(flow_id)`` of a flow without events is an error, as ``eventstore verify FLOW``: never OK."""

    def test_a_flow_that_never_existed_is_not_found(self, filled: EventStore) -> None:
        with pytest.raises(FlowNotFound, match="'no-such-flow' does not exist") as missing:
            filled.verify("no-such-flow")
        assert not isinstance(missing.value, FlowArchived) and missing.value.flow_id == "no-such-flow"

    def test_a_flow_whose_events_were_all_deleted_is_not_found(self, filled: EventStore) -> None:
        drop_guards(filled)
        sql(filled, "DELETE FROM flow_events WHERE flow_id = 'b'")
        with pytest.raises(FlowNotFound, match="'b' does not exist"):
            filled.verify("b")
        assert filled.verify("a").ok and not filled.verify().ok


def test_an_unencodable_edit_is_reported_not_raised(pg_target: Target) -> None:
    with pg_target.open() as store:
        store.append("f", [NewEvent("Refund", {"amount": 100})])
        drop_guards(store)
        sql(store, """UPDATE flow_events SET data = '{"amount": 100000000000000000000}'""")
        assert [p.kind for p in store.verify().problems] == ["data-edited"]


class TestForkOfATamperedLog:
    def test_a_fork_at_a_deleted_revision_is_an_integrity_violation(self, flow_store: EventStore) -> None:
        service = FlowService(flow_store)
        service.start_flow("f", controller_id="c", goal="g", owner_session_key="s", state={"n": 0})
        for n in range(1, 4):
            service.advance("f", state_patch={"n": n})
        drop_guards(flow_store)
        sql(flow_store, "DELETE FROM flow_events WHERE flow_id = 'f' AND revision = 3")
        with pytest.raises(
            IntegrityViolation, match=r"no event at revision 3 .*`eventstore verify`"
        ) as caught:
            fork(flow_store, "f", at_revision=3, new_flow_id="g")
        assert (caught.value.flow_id, caught.value.revision) == ("f", 3)
        assert flow_store.revision("g") == 0
