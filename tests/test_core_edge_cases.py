"""Edge cases of the core API that once gave a wrong answer or a driver error instead of a clear one."""

from __future__ import annotations

import asyncio
import enum
import hashlib
from typing import Any, ClassVar

import psycopg
import pytest

from eventstore import Event, EventStore, InvalidEvent, InvalidInput, NewEvent, PositionPastEnd
from eventstore.follow import follow

from .conftest import Target


class TestTypedEventsAreChecked:
    @pytest.mark.parametrize(
        ("event_type", "version"),
        [("", 1), ("x" * 201, 1), ("a\x00b", 1), ("a\ud800", 1), ("Ok", 0), ("Ok", 2**31), ("Ok", True)],
    )
    def test_a_bad_type_name_or_version_is_refused_and_writes_nothing(
        self, store: EventStore, event_type: str, version: int
    ) -> None:
        class Odd(Event):
            event_type: ClassVar[str] = ""
            schema_version: ClassVar[int] = 1

        Odd.event_type, Odd.schema_version = event_type, version
        with pytest.raises(InvalidEvent, match=r"event type|schema_version"):
            store.append("f", [Odd()])
        assert store.revision("f") == 0 and store.last_position() == 0

    def test_a_class_changed_after_its_first_append_is_checked_again(self, store: EventStore) -> None:
        class Later(Event):
            pass

        store.append("f", [Later()])
        Later.schema_version = 0
        with pytest.raises(InvalidEvent, match="schema_version"):
            store.append("f", [Later()])
        assert store.revision("f") == 1


class TestEventMetadata:
    @pytest.mark.parametrize("metadata", ["", [], 0, ()])
    def test_metadata_that_is_not_a_mapping_is_refused_even_when_empty(
        self, store: EventStore, metadata: Any
    ) -> None:
        with pytest.raises(InvalidEvent, match="metadata must be a mapping"):
            store.append("f", [NewEvent("A", {}, metadata=metadata)])
        assert store.revision("f") == 0

    def test_empty_metadata_is_the_appends_own(self, store: EventStore) -> None:
        store.append("f", [NewEvent("A", {}, metadata={})], metadata={"actor": "agent:kate"})
        (event,) = store.read_flow("f")
        assert event.metadata == {"actor": "agent:kate"}


class TestTypeFilters:
    @pytest.mark.parametrize("types", [["a\ud800"], ["a\x00"], [""], ["x" * 201], "", [5], 5])
    def test_a_filter_no_event_type_could_match_is_refused_alike_on_every_backend(
        self, store: EventStore, types: Any
    ) -> None:
        store.append("f", [NewEvent("A", {})])
        with pytest.raises(InvalidInput, match="types must"):
            list(store.read_all(types=types))
        with pytest.raises(InvalidInput, match="types must"):
            follow(store, types=types, stop_when_idle=True)

    def test_follow_filters_by_type(self, store: EventStore) -> None:
        store.append("f", [NewEvent("A", {}), NewEvent("B", {}), NewEvent("A", {})])
        found = follow(store, after_position=0, types="A", stop_when_idle=True)
        assert [(e.type, e.revision) for e in found] == [("A", 1), ("A", 3)]


class TestFollowStartsWhenCalled:
    def test_the_end_of_the_log_is_read_when_follow_is_called(self, store: EventStore) -> None:
        store.append("f", [NewEvent("Before", {})])
        followed = follow(store, stop_when_idle=True)
        store.append("g", [NewEvent("After", {})])
        assert [e.type for e in followed] == ["After"]

    def test_a_flow_is_followed_from_its_revision_when_follow_is_called(self, store: EventStore) -> None:
        store.append("f", [NewEvent("Before", {})])
        followed = follow(store, flow_id="f", stop_when_idle=True)
        store.append("g", [NewEvent("Other", {})])
        store.append("f", [NewEvent("After", {})])
        assert [(e.type, e.revision) for e in followed] == [("After", 2)]

    def test_a_bad_flow_id_is_refused_at_the_call(self, store: EventStore) -> None:
        with pytest.raises(InvalidInput, match="flow id"):
            follow(store, flow_id="")

    @pytest.mark.parametrize("stop", ["x", asyncio.Event(), True])
    def test_a_stop_that_is_not_a_threading_event_is_refused_at_the_call(
        self, store: EventStore, stop: Any
    ) -> None:
        with pytest.raises(InvalidInput, match=r"stop must be a threading\.Event"):
            follow(store, stop=stop)

    @pytest.mark.parametrize("types", [[], (), iter([])])
    def test_a_type_filter_of_no_types_is_refused_as_it_would_follow_nothing(
        self, store: EventStore, types: Any
    ) -> None:
        with pytest.raises(InvalidInput, match="types must name at least one event type"):
            follow(store, after_position=0, types=types)

    @pytest.mark.parametrize("flow_id", [None, "f"])
    def test_a_start_past_the_end_of_the_log_is_refused_at_the_call(
        self, store: EventStore, flow_id: str | None
    ) -> None:
        store.append("f", [NewEvent("A", {}), NewEvent("B", {})])
        with pytest.raises(
            PositionPastEnd, match=r"after_position 3 is past the end of the log \(last position 2\)"
        ) as refused:
            follow(store, after_position=3, flow_id=flow_id, stop_when_idle=True)
        assert (refused.value.position, refused.value.last_position) == (3, 2)
        followed = follow(store, after_position=2, flow_id=flow_id, stop_when_idle=True)
        store.append("f", [NewEvent("C", {})])
        assert [e.position for e in followed] == [3]


class TestRevisionBoundsPastTheColumn:
    def test_bounds_beyond_any_revision_read_alike_on_every_backend(self, store: EventStore) -> None:
        store.append("f", [NewEvent("A", {}), NewEvent("B", {})])
        huge = 2**40
        assert list(store.read_flow("f", from_revision=huge)) == []
        assert list(store.read_flow("f", from_revision=huge, backwards=True)) == []
        assert [e.revision for e in store.read_flow("f", to_revision=huge)] == [1, 2]
        assert [e.revision for e in store.read_flow("f", to_revision=huge, backwards=True)] == [2, 1]
        assert list(store.read_for_fold(flow_id="f", from_revision=huge)) == []
        assert len(list(store.read_for_fold(flow_id="f", to_revision=huge))) == 2


class Reading(enum.Enum):
    MISSING = float("nan")
    NEGATIVE_ZERO = -0.0
    HUGE = 1e17
    NUL = "a\x00b"


class TestEnumValuesAreCheckedLikeTheirValues:
    @pytest.mark.parametrize("member", [Reading.MISSING, Reading.NUL])
    def test_an_enum_whose_value_json_cannot_hold_is_refused(
        self, store: EventStore, member: Reading
    ) -> None:
        with pytest.raises(InvalidEvent):
            store.append("f", [NewEvent("A", {"v": member})])
        with pytest.raises(InvalidEvent):
            store.append("f", [NewEvent("A", {})], metadata={"v": member})
        assert store.last_position() == 0

    def test_an_enum_float_is_normalised_and_verifies(self, store: EventStore) -> None:
        store.append("f", [NewEvent("A", {"z": Reading.NEGATIVE_ZERO, "big": [Reading.HUGE]})])
        (event,) = store.read_flow("f")
        assert event.data == {"z": 0.0, "big": [10**17]}
        assert store.verify().ok


LONG = "".join(hashlib.sha256(bytes([n])).hexdigest() for n in range(50))  # 3200 bytes, incompressible:
# past the 2704 bytes a PostgreSQL index entry holds, so these fields were a StorageError there only


class TestIndexedTextFields:
    @pytest.mark.parametrize(
        ("event", "metadata"),
        [
            (NewEvent("A", {}), {"correlation_id": LONG}),
            (NewEvent("A", {}, metadata={"causation_id": LONG}), None),
            (NewEvent("A", {}), {"actor": LONG}),
            (NewEvent("DecisionRecorded", {"actor": LONG}), None),
            (NewEvent("GateApproved", {"by": LONG}), None),
            (NewEvent("FlowStarted", {"owner_session_key": LONG}), None),
            (NewEvent("FlowForked", {"snapshot": {"flow": {"owner_session_key": LONG}}}), None),
        ],
    )
    def test_one_too_long_to_index_is_refused_alike_on_every_backend(
        self, store: EventStore, event: NewEvent, metadata: dict[str, str] | None
    ) -> None:
        with pytest.raises(InvalidEvent, match="at most 2000 bytes"):
            store.append("f", [event], metadata=metadata)
        assert store.last_position() == 0

    def test_the_same_text_elsewhere_is_stored(self, store: EventStore) -> None:
        store.append("f", [NewEvent("StepStarted", {"actor": LONG, "by": LONG, "owner_session_key": LONG})])
        store.append("f", [NewEvent("A", {})], metadata={"correlation_id": LONG[:2000], "note": LONG})
        assert store.last_position() == 2


class TestAWriteNestedInATransaction:
    def test_is_refused_at_once_on_every_backend_and_the_transaction_commits(self, store: EventStore) -> None:
        with store.transaction() as tx:
            tx.append("f", [NewEvent("A", {})])
            with pytest.raises(InvalidInput, match="already inside a write transaction"):
                store.append("g", [NewEvent("A", {})])  # PostgreSQL waited for its own lock: StoreBusy
            with pytest.raises(InvalidInput, match="already inside a write transaction"), store.transaction():
                pass
        assert (store.revision("f"), store.revision("g")) == (1, 0)
        assert store.append("g", [NewEvent("A", {})]).positions == (2,)


class TestReadsSurviveADroppedConnection:
    def test_revision_and_last_position_reconnect(self, pg_target: Target) -> None:
        with pg_target.open() as store:
            store.append("f", [NewEvent("A", {})])
            assert store.revision("f") == 1
            admin_kill(store.engine.url)
            assert store.revision("f") == 1, "the first read finds the dead connection"
            admin_kill(store.engine.url)
            assert store.last_position() == 1


def admin_kill(url: Any) -> None:
    """End every other connection to the store's database, as a server restart would."""
    with psycopg.connect(str(url.set(drivername="postgresql")), autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (url.database,),
        )
