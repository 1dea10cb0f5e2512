"""Bad input gets a clear EventStoreError and writes nothing."""

from __future__ import annotations

import copy
import multiprocessing
import pickle
import re
import uuid
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from eventstore import (
    Event,
    EventRegistry,
    EventStore,
    EventStoreError,
    IntegrityViolation,
    InvalidEvent,
    InvalidInput,
    InvalidProof,
    NewEvent,
    PayloadTooLarge,
    StorageError,
    StoreClosed,
    errors,
)
from eventstore.audit import audit_trail
from eventstore.integrity import Problem
from eventstore.schema import flow_events
from eventstore.timetravel import diff, state_at, what_if
from eventstore.tombstones import PrunedFlows
from projections import FlowProjection, FlowQueries, FlowService
from tests.conftest import Target


class Approval(Event):
    by: str
    score: float


def assert_nothing_written(store: EventStore) -> None:
    assert store.last_position() == 0
    assert list(store.read_all()) == []


BAD_DATA: list[tuple[Any, str]] = [
    ({"when": object()}, "not JSON-serialisable"),
    ({"x": float("nan")}, "NaN or Infinity"),
    ({"x": [1, float("inf")]}, r"\$\.x\[1\]"),
    ({"x": -float("inf")}, "NaN or Infinity"),
    ({"x": 2**64}, "not JSON-serialisable"),
    ({"x": "nul\x00"}, "NUL character"),
    ({1: "int key"}, "not JSON-serialisable"),
    ({"x": 1e300}, "too large to store exactly"),
]


class TestBadEvents:
    @pytest.mark.parametrize(("data", "message"), BAD_DATA)
    def test_unstorable_data(self, store: EventStore, data: Any, message: str) -> None:
        with pytest.raises(InvalidEvent, match=message):
            store.append("f", [NewEvent("A", {"ok": 1}), NewEvent("B", data)])
        assert_nothing_written(store)

    def test_data_must_be_an_object(self, store: EventStore) -> None:
        with pytest.raises(InvalidEvent, match="JSON object"):
            store.append("f", [NewEvent("A", [1, 2])])  # type: ignore[arg-type]
        assert_nothing_written(store)

    def test_typed_model_validation(self, store: EventStore) -> None:
        with pytest.raises(Exception, match="finite number"):
            Approval(by="ann", score=float("nan"))
        store.registry.register(Approval)
        with pytest.raises(InvalidEvent, match="Approval data fails validation"):
            store.append("f", [NewEvent("Approval", {"by": "ann", "score": "high"})])
        assert_nothing_written(store)

    def test_payload_over_the_limit(self, target) -> None:  # type: ignore[no-untyped-def]
        with target.open(max_payload_bytes=1000) as store:
            with pytest.raises(PayloadTooLarge, match="over the limit of 1000 bytes") as caught:
                store.append("f", [NewEvent("A", {"blob": "x" * 2000})])
            assert caught.value.limit == 1000
            with pytest.raises(PayloadTooLarge, match="metadata"):
                store.append("f", [NewEvent("A", {})], metadata={"blob": "x" * 2000})
            assert_nothing_written(store)

    def test_default_limit_is_one_mebibyte(self, store: EventStore) -> None:
        store.append("f", [NewEvent("A", {"blob": "x" * 1_000_000})])
        with pytest.raises(PayloadTooLarge):
            store.append("f", [NewEvent("A", {"blob": "x" * 1_100_000})])
        assert store.revision("f") == 1

    @pytest.mark.parametrize(
        ("event_type", "message"),
        [("", "1 to 200 characters"), ("T" * 201, "1 to 200 characters"), (5, "string")],
    )
    def test_bad_type_names(self, store: EventStore, event_type: Any, message: str) -> None:
        with pytest.raises(InvalidEvent, match=message):
            store.append("f", [NewEvent(event_type, {})])
        assert_nothing_written(store)

    def test_bad_event_id_and_version(self, store: EventStore) -> None:
        with pytest.raises(InvalidEvent, match="UUID"):
            store.append("f", [NewEvent("A", {}, event_id="not-a-uuid")])  # type: ignore[arg-type]
        with pytest.raises(InvalidEvent, match="schema_version"):
            store.append("f", [NewEvent("A", {}, schema_version=0)])
        assert_nothing_written(store)


class TestBadArguments:
    def test_empty_event_list(self, store: EventStore) -> None:
        with pytest.raises(InvalidInput, match="at least one event"):
            store.append("f", [])
        assert_nothing_written(store)

    @pytest.mark.parametrize("events", [NewEvent("A", {}), "A", {"type": "A"}, [object()]])
    def test_events_must_be_a_list_of_events(self, store: EventStore, events: Any) -> None:
        with pytest.raises(InvalidInput):
            store.append("f", events)
        assert_nothing_written(store)

    @pytest.mark.parametrize("flow_id", ["", "x" * 201, None, 42, "a\x00b"])
    def test_bad_flow_ids(self, store: EventStore, flow_id: Any) -> None:
        with pytest.raises(InvalidInput, match="flow id"):
            store.append(flow_id, [NewEvent("A", {})])
        with pytest.raises(InvalidInput, match="flow id"):
            list(store.read_flow(flow_id))
        assert_nothing_written(store)

    def test_longest_flow_id_is_accepted(self, store: EventStore) -> None:
        assert store.append("x" * 200, [NewEvent("A", {})]).revision == 1

    @pytest.mark.parametrize("expected", [-1, 1.0, "1", True, None])
    def test_bad_expected_revision(self, store: EventStore, expected: Any) -> None:
        with pytest.raises(InvalidInput, match="expected_revision"):
            store.append("f", [NewEvent("A", {})], expected_revision=expected)
        assert_nothing_written(store)

    def test_counts_beyond_64_bits_are_refused_not_overflowed(self, flow_store: EventStore) -> None:
        """A count the database cannot hold is the caller's InvalidInput on both backends (on
        SQLite it was an OverflowError, on PostgreSQL a StorageError)."""
        FlowService(flow_store).start_flow("f", controller_id="c", goal="g", owner_session_key="s")
        queries, huge = FlowQueries(flow_store), 2**70
        for read in (
            lambda: list(flow_store.read_flow("f", from_revision=huge)),
            lambda: list(flow_store.read_all(after_position=huge)),
            lambda: queries.flows(offset=huge),
        ):
            with pytest.raises(InvalidInput, match=r"must be at most 2\*\*63 - 1"):
                read()
        with pytest.raises(InvalidInput, match=r"from_position must be None or an int"):
            queries.step_history("f", from_position=huge)

    def test_numbers_the_read_models_cannot_hold_are_refused_on_both_backends(
        self, flow_store: EventStore
    ) -> None:
        service = FlowService(flow_store)
        service.start_flow("f", controller_id="c", goal="g", owner_session_key="s")
        before = flow_store.last_position()
        with pytest.raises(InvalidInput, match="less than or equal to 2147483647"):
            service.schedule_step("f", step_id="s", name="n", run_id="r", position=2**40)
        with pytest.raises(InvalidEvent, match="schema_version must be an int from 1 to 2\\*\\*31 - 1"):
            flow_store.append("g", [NewEvent("A", {}, schema_version=2**31)])
        with pytest.raises(InvalidEvent, match="event type must be a string"):
            flow_store.append("g", [NewEvent(["A"], {})])  # type: ignore[arg-type]
        assert flow_store.last_position() == before

    def test_names_revisions_and_times_of_the_wrong_shape_are_refused(self, flow_store: EventStore) -> None:
        service, queries = FlowService(flow_store), FlowQueries(flow_store)
        service.start_flow("f", controller_id="c", goal="g", owner_session_key="s")
        service.advance("f", state_patch={"n": 1})
        for call, message in [
            (lambda: list(flow_store.read_all(types=1)), "types must be a name or a list of names, not 1"),
            (lambda: audit_trail(flow_store, flow_id="f", types=5), "types must be a name or a list"),
            (lambda: what_if(flow_store, "f", without_revisions=5), "without_revisions must be a list"),
            (lambda: what_if(flow_store, "f", without_revisions=[[1]]), "without_revisions must be an int"),
            (lambda: state_at(flow_store, "f", snapshot_every="5"), "snapshot_every must be an int"),
            (lambda: diff(flow_store, "f", None, 2), "give a revision or a time to compare, not None"),
            (lambda: queries.interrupted(now="x"), "now must be a timezone-aware datetime"),
            (lambda: queries.expired_steps(after="x"), "after must be a (flow_id, step_id) pair"),
        ]:
            with pytest.raises(InvalidInput, match=re.escape(message)):
                call()

    def test_query_helpers_take_sqlalchemy_selects_and_conditions(self, store: EventStore) -> None:
        for call, message in [
            (lambda: store.query("select 1"), "query takes a SQLAlchemy Core select(...)"),
            (lambda: store.query_events(sa.select(flow_events.c.type)), "query_events needs select("),
            (lambda: list(store.read_where("type = 'A'")), "read_where takes SQLAlchemy conditions"),
            (lambda: store.verify(progress=1), "progress must be a function"),
        ]:
            with pytest.raises(InvalidInput, match=re.escape(message)):
                call()

    def test_registry_arguments_are_checked(self) -> None:
        registry = EventRegistry()
        for call, message in [
            (lambda: EventRegistry(5), "models must be a list of Event subclasses, not 5"),
            (lambda: registry.add_upcaster("T", "1", dict), "from_version must be an int >= 1, not '1'"),
            (lambda: registry.add_upcaster("T", 1, None), "upcaster must be a function of the old data"),
            (lambda: registry.add_upcaster("", 1, dict), "event_type must be a type name"),
        ]:
            with pytest.raises(InvalidInput, match=re.escape(message)):
                call()

    def test_one_type_name_is_one_name_not_its_letters(self, flow_store: EventStore) -> None:
        service = FlowService(flow_store)
        service.start_flow("f", controller_id="c", goal="g", owner_session_key="s")
        service.advance("f", state_patch={"n": 1})
        assert what_if(flow_store, "f", without_types="FlowAdvanced").flow.state == {}
        assert what_if(flow_store, "f", without_types=["FlowAdvanced"]).flow.state == {}

    def test_page_size_must_be_a_positive_int(self, store: EventStore) -> None:
        with pytest.raises(InvalidInput, match="page_size must be an int >= 1, not 0"):
            store.page_size = 0
        assert store.page_size == 1000

    def test_bad_read_arguments(self, store: EventStore) -> None:
        with pytest.raises(InvalidInput, match="from_revision"):
            store.read_flow("f", from_revision=0)
        with pytest.raises(InvalidInput, match="limit"):
            store.read_all(limit=-1)
        with pytest.raises(InvalidInput, match="after_position"):
            store.read_all(after_position="0")  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="types"):
            store.read_all(types=[1])  # type: ignore[list-item]
        with pytest.raises(InvalidInput, match="up_to_position"):
            store.read_for_fold(up_to_position=-1)  # when called, not at the first event
        with pytest.raises(InvalidInput, match="from_revision"):
            store.read_for_fold(flow_id="f", from_revision=0)

    def test_closed_store(self, target) -> None:  # type: ignore[no-untyped-def]
        store = target.open()
        store.close()
        with pytest.raises(StoreClosed):
            store.append("f", [NewEvent("A", {})])
        with pytest.raises(StoreClosed):
            store.revision("f")
        with pytest.raises(StoreClosed):
            list(store.read_all())


class TestOpen:
    @pytest.mark.parametrize(
        ("url", "message"),
        [
            ("nonsense", "not a database URL"),
            ("mysql://localhost/x", "unsupported database"),
            ("sqlite://", "SQLite file"),
            ("sqlite:///:memory:", "SQLite file"),
        ],
    )
    def test_bad_urls(self, url: str, message: str) -> None:
        with pytest.raises(InvalidInput, match=message):
            EventStore.open(url)

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"lock_timeout": "x"}, "lock_timeout must be a number of seconds, 0 or more, got 'x'"),
            ({"lock_timeout": -1}, "lock_timeout must be a number of seconds"),
            ({"busy_timeout": float("nan")}, "busy_timeout must be a number of seconds"),
            ({"idle_in_transaction_timeout": True}, "idle_in_transaction_timeout must be a number"),
            ({"pool_size": 0}, "pool_size must be a whole number, 1 or more, got 0"),
            ({"pool_size": "5"}, "pool_size must be a whole number"),
            ({"max_payload_bytes": "1"}, "max_payload_bytes must be an int >= 1, not '1'"),
            ({"max_payload_bytes": 0}, "max_payload_bytes must be an int >= 1, not 0"),
            ({"clock": "now"}, "clock must be a function returning the current time"),
            ({"registry": 5}, "registry must be an EventRegistry, not 5"),
            ({"projections": 5}, "projections must be a list of projections, not 5"),
            ({"projections": [5]}, "not a projection (it needs prepare and apply): 5"),
            ({"projections": [FlowProjection]}, "not the class FlowProjection: pass an instance"),
            (
                {"projections": [FlowProjection(), FlowProjection()]},
                "projections names the projection 'flows' twice",
            ),
            ({"asynchronous": "x"}, "asynchronous must be True or False"),
        ],
    )
    def test_bad_options_are_refused_before_anything_is_written(
        self, target: Target, options: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(InvalidInput, match=re.escape(message)):
            EventStore.open(target.url, **{**target.options, "create": True, **options})
        with target.open(**{"create": True, **target.options}) as store:
            assert store.last_position() == 0  # nothing was written

    def test_bad_backend_options_are_refused(self, tmp_path: Path, pg_target: Target) -> None:
        with pytest.raises(InvalidInput, match="synchronous must be NORMAL, FULL or EXTRA"):
            EventStore.open(f"sqlite:///{tmp_path / 'audit.db'}", synchronous=1)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="not a plain schema name: 3"):
            EventStore.open(pg_target.url, schema=3)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        "spoil",
        [
            lambda url: url + "\x00other",  # libpq would read the database name up to the NUL
            lambda url: url + "\udcff",
            lambda url: url.replace("root@", "ro\x00ot@"),
            lambda url: url + "?application_name=a\udcff",
        ],
    )
    def test_a_postgresql_url_with_a_nul_or_a_lone_surrogate_is_refused_before_connecting(
        self, pg_database: str, spoil: Any
    ) -> None:
        with pytest.raises(InvalidInput, match="valid UTF-8 text without NUL characters"):
            EventStore.open(spoil(pg_database), create=True)
        with closing(psycopg.connect(pg_database)) as conn:  # nothing was created where the NUL cut it off
            assert conn.execute("SELECT to_regclass('public.flow_events')").fetchone() == (None,)

    def test_unreachable_postgres_is_a_clean_error(self) -> None:
        with pytest.raises(EventStoreError, match="PostgreSQL error"):
            EventStore.open("postgresql://root@127.0.0.1:1/none", create=True)

    def test_a_database_error_is_one_line_naming_the_problem(self, store: EventStore) -> None:
        with pytest.raises(StorageError) as raised:
            store.query(sa.select(sa.column("x")).select_from(sa.table("no_such_table")))
        message = str(raised.value)
        assert "no_such_table" in message and "\n" not in message
        assert "LINE 1" not in message  # psycopg's caret under the SQL is for a terminal, not a user

    def test_every_error_is_an_event_store_error(self) -> None:
        assert issubclass(InvalidEvent, EventStoreError) and issubclass(StoreClosed, EventStoreError)


class TestIntegrityViolation:
    def test_its_attributes_survive_pickling_and_copying(self) -> None:
        problem = Problem("f", 7, 2, "hash-mismatch", "the envelope was altered")
        error = IntegrityViolation("f@2 is broken", flow_id="f", revision=2, position=7, problems=[problem])
        for copied in (pickle.loads(pickle.dumps(error)), copy.copy(error)):
            assert type(copied) is IntegrityViolation and str(copied) == "f@2 is broken"
            assert (copied.flow_id, copied.revision, copied.position, copied.problems) == (
                "f",
                2,
                7,
                [problem],
            )

    def test_without_them_each_is_none_and_problems_empty(self) -> None:
        error = InvalidProof("the proof does not verify")
        assert (error.flow_id, error.revision, error.position, error.problems) == (None, None, None, [])


def _raise_stale_append(url: str) -> None:
    """In a worker process: an append with a revision the flow has moved past."""
    with EventStore.open(url) as store:
        store.append("f", [NewEvent("Noted", {})], expected_revision=0)


def _every_error() -> list[EventStoreError]:
    """One of each error in the tree, made as the library makes it."""
    when = datetime(2030, 1, 1, tzinfo=UTC)
    made = [
        errors.PositionPastEnd("after_position", 9, 3),
        errors.PayloadTooLarge("data", 10, 5),
        errors.RevisionMismatch("f", 1, 2),
        errors.DuplicateEventId(uuid.UUID(int=1), "it is stored already"),
        errors.FlowNotFound("f", hint="try g"),
        errors.ThreadNotAFlow("langgraph/t", "t"),
        errors.FlowArchived("f", "a1", last_revision=4),
        errors.IntegrityViolation("broken", flow_id="f", revision=2, position=7, problems=["x"]),
        errors.SchemaError("old", current="0001", required="0002"),
        errors.FlowPruned("f", "a1"),
        errors.SelectionNotAllowed("f", "s", ["maybe"], ["yes", "no"]),
        errors.LeaseLost("f", owner="w1", generation=1, holder="w2", current=2),
        errors.StepNotFound("f", "s"),
        errors.SessionNotFound("s", pruned=PrunedFlows(flows=1, events=2, archives=1)),
        errors.EventNotFound("e"),
        errors.ProjectionFailed("p", "fold", (1, 2), "boom"),
        errors.InvalidProof("bad proof", position=3),
        errors.RebuildInProgress("prune", ["flows"], when),
        errors.JobLeaseLost("verify", "me", "you"),
        errors.NotSupported("vacuum", "postgresql", "use VACUUM"),
        errors.ExportInvalid("x.jsonl", ["sha256 differs"]),
        errors.ImportConflict("f", "differs"),
        errors.ImportUnfinished("x.jsonl", "ab" * 32, 3, 9, "2030-01-01T00:00:00Z"),
        errors.ArchiveNotFound("a1"),
        errors.ProjectionNotFound("p", ["q"]),
        errors.ProjectionInUse("flows", "retire", "it is built in"),
        errors.RetiredProjection("p", when, " by 'ann'"),
        errors.ReadModelCorrupt(
            "flows", "flows", {"flow_id": "f"}, "state", "holds 'x'", "eventstore rebuild flows"
        ),
    ]
    made += [kind("f", "no", step_id="s", status="done") for kind in _TRANSITION_ERRORS]
    custom = {type(error) for error in made}
    plain = [
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, EventStoreError) and cls not in custom
    ]
    assert all("__init__" not in vars(cls) for cls in plain), "an error with its own __init__ is missing"
    return made + [cls("a message") for cls in plain]


_TRANSITION_ERRORS = [
    errors.InvalidTransition,
    errors.FlowClosed,
    errors.FlowExists,
    errors.StepClosed,
    errors.GateNotOpen,
    errors.LeaseHeld,
]


class TestPickling:
    """Errors cross process boundaries (``multiprocessing``, ``ProcessPoolExecutor``) by pickle."""

    @pytest.mark.parametrize("error", _every_error(), ids=lambda error: type(error).__name__)
    def test_every_error_keeps_its_type_message_and_data(self, error: EventStoreError) -> None:
        error.add_note("a note")
        for copied in (pickle.loads(pickle.dumps(error)), copy.copy(error), copy.deepcopy(error)):
            assert type(copied) is type(error) and str(copied) == str(error)
            assert vars(copied) == vars(error) and copied.args == error.args

    def test_a_conflict_in_a_worker_process_reaches_the_parent_whole(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'store.db'}"
        with EventStore.open(url) as store:
            store.append("f", [NewEvent("Noted", {})])
        with (
            ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool,
            pytest.raises(errors.RevisionMismatch) as raised,
        ):
            pool.submit(_raise_stale_append, url).result(timeout=120)
        assert (raised.value.flow_id, raised.value.expected, raised.value.actual) == ("f", 0, 1)


class TestUnusualInput:
    def test_nan_inside_a_dataclass_is_refused(self, store: EventStore) -> None:
        from dataclasses import dataclass

        @dataclass
        class Reading:
            value: float

        with pytest.raises(InvalidEvent, match="NaN or Infinity"):
            store.append("f", [NewEvent("A", {"reading": Reading(float("nan"))})])
        store.append("f", [NewEvent("A", {"reading": Reading(-0.0)})])
        assert next(store.read_flow("f")).data == {"reading": {"value": 0.0}}
        assert store.verify().ok

    def test_naive_clock_is_a_clear_error(self, target) -> None:  # type: ignore[no-untyped-def]
        from datetime import datetime

        with target.open(clock=datetime.now) as store:
            with pytest.raises(InvalidInput, match="timezone-aware"):
                store.append("f", [NewEvent("A", {})])
            assert_nothing_written(store)

    @pytest.mark.parametrize("text", ["lone\ud800surrogate", "nul\x00"])
    def test_unencodable_names(self, store: EventStore, text: str) -> None:
        with pytest.raises(InvalidInput, match="valid UTF-8"):
            store.append(text, [NewEvent("A", {})])
        with pytest.raises(InvalidEvent, match="valid UTF-8"):
            store.append("f", [NewEvent(text, {})])
        assert_nothing_written(store)
