"""Audit trails: decisions, gates and failures in order, causation walked both ways, on both backends."""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from sqlalchemy.dialects import sqlite
from sqlalchemy.schema import CreateIndex

from eventstore import EventNotFound, EventStore, FlowNotFound, InvalidInput, NewEvent, SessionNotFound
from eventstore.audit import (
    DecisionEntry,
    FailureEntry,
    GateEntry,
    audit_trail,
    cause_id,
    caused_by,
    causes,
    correlated,
    effects,
    find_event,
    gate_opening,
    gate_openings,
    session_flows,
)
from eventstore.cli import main
from eventstore.flows import GateOption
from eventstore.schema import AUDIT_EVENT_TYPES, flow_events
from eventstore.statements import compiled_sql
from eventstore.timetravel import fork
from projections import FlowProjection, FlowService

from .conftest import Target

T0 = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)


@dataclasses.dataclass
class Story:
    """Two flows of session s1 (a refund approved then failing, a rejected gate), one of s2."""

    store: EventStore
    ids: dict[str, Any]


@pytest.fixture
def story(target: Target) -> Iterator[Story]:
    now = [T0]

    def tick() -> datetime:
        now[0] += timedelta(minutes=1)
        return now[0]

    with target.open(projections=[FlowProjection()], clock=lambda: now[0]) as store:
        flows, ids = FlowService(store), {}
        req = {"correlation_id": "req-1"}
        flows.start_flow("a", controller_id="bot", goal="refund", owner_session_key="s1", metadata=req)
        flows.schedule_step("a", step_id="lookup", name="lookup", run_id="a/1", metadata=req)
        flows.start_step("a", "lookup", metadata=req)
        tick()
        ids["looked_up"] = flows.complete_step("a", "lookup", result={"amount": 9}, metadata=req)
        ids["decided"] = flows.record_decision(
            "a", actor="agent:bot", decision="refund", rationale="damaged", inputs={"amount": 9},
            alternatives=["replace"], model="m-1", confidence=0.9, step_id="lookup",
            metadata=caused_by(ids["looked_up"], correlation_id="req-1"),
        )  # fmt: skip
        decision = find_event(store, ids["decided"].event_ids[0])
        ids["scheduled"] = flows.schedule_step(
            "a", step_id="pay", name="pay", run_id="a/2", metadata=caused_by(decision)
        )
        tick()
        ids["opened"] = flows.open_gate(
            "a", "pay", prompt="Pay $9?", options=[{"value": "yes", "label": "Yes"}],
            actor="agent:bot", metadata=caused_by(find_event(store, ids["scheduled"].event_ids[0])),
        )  # fmt: skip
        ids["approved"] = flows.approve_gate(
            "a", "pay", by="human:ann", selections=["yes"], feedback="ok",
            metadata=caused_by(find_event(store, ids["opened"].event_ids[0])),
        )  # fmt: skip
        flows.start_step("a", "pay")
        tick()
        ids["failed"] = flows.fail_step(
            "a", "pay", error="card declined", actor="worker",
            metadata=caused_by(find_event(store, ids["approved"].event_ids[0])),
        )  # fmt: skip
        flows.fail("a", error="refund failed", details={"step": "pay"}, actor="agent:bot")
        tick()
        flows.start_flow("b", controller_id="bot", goal="close", owner_session_key="s1")
        flows.schedule_step("b", step_id="ask", name="ask", run_id="b/1")
        flows.open_gate("b", "ask", prompt="Close the account?", actor="agent:bot")
        flows.reject_gate("b", "ask", by="human:bob", feedback="no")
        flows.time_out_step("b", "ask", reason="nobody answered")
        tick()
        flows.start_flow("c", controller_id="bot", goal="other", owner_session_key="s2")
        flows.record_decision("c", actor="human:ann", decision="escalate")
        yield Story(store, ids)


def kinds(entries: Any) -> list[tuple[str, str, str | None]]:
    return [(e.flow_id, e.type, e.actor) for e in entries]


class TestAuditTrail:
    def test_a_flow_lists_decisions_gates_and_failures_in_order(self, story: Story) -> None:
        assert kinds(audit_trail(story.store, flow_id="a")) == [
            ("a", "DecisionRecorded", "agent:bot"),
            ("a", "GateOpened", "agent:bot"),
            ("a", "GateApproved", "human:ann"),
            ("a", "StepFailed", "worker"),
            ("a", "FlowFailed", "agent:bot"),
        ]

    def test_a_decision_keeps_what_the_agent_recorded(self, story: Story) -> None:
        (decision,) = audit_trail(story.store, flow_id="a", types=["DecisionRecorded"])
        assert isinstance(decision, DecisionEntry)
        assert (decision.decision, decision.rationale, decision.inputs) == (
            "refund",
            "damaged",
            {"amount": 9},
        )
        assert (decision.alternatives, decision.model, decision.confidence) == (("replace",), "m-1", 0.9)
        assert (decision.step_id, decision.correlation_id) == ("lookup", "req-1")
        assert decision.causation_id == str(story.ids["looked_up"].event_ids[0])

    def test_an_approval_shows_what_the_approver_saw_and_chose(self, story: Story) -> None:
        (approval,) = audit_trail(story.store, flow_id="a", types=["GateApproved"])
        assert isinstance(approval, GateEntry) and approval.action == "approved"
        assert (approval.prompt, approval.options) == ("Pay $9?", (GateOption(value="yes", label="Yes"),))
        assert (approval.selections, approval.feedback, approval.actor) == (("yes",), "ok", "human:ann")
        assert (approval.opened_by, approval.opened_at) == ("agent:bot", T0 + timedelta(minutes=2))

    def test_failures_carry_their_error(self, story: Story) -> None:
        failures = list(
            audit_trail(story.store, session="s1", types=["StepFailed", "StepTimedOut", "FlowFailed"])
        )
        assert all(isinstance(f, FailureEntry) for f in failures)
        assert [(f.flow_id, f.step_id, f.error) for f in failures] == [  # type: ignore[attr-defined]
            ("a", "pay", "card declined"),
            ("a", None, "refund failed"),
            ("b", "ask", "nobody answered"),
        ]

    def test_a_session_covers_its_flows_only(self, story: Story) -> None:
        assert session_flows(story.store, "s1") == ["a", "b"]
        entries = list(audit_trail(story.store, session="s1"))
        assert {e.flow_id for e in entries} == {"a", "b"}
        assert [e.position for e in entries] == sorted(e.position for e in entries)
        rejected = [e for e in entries if e.type == "GateRejected"]
        assert [(e.actor, e.prompt) for e in rejected] == [("human:bob", "Close the account?")]  # type: ignore[attr-defined]

    def test_an_actor_across_flows(self, story: Story) -> None:
        assert kinds(audit_trail(story.store, actor="human:ann")) == [
            ("a", "GateApproved", "human:ann"),
            ("c", "DecisionRecorded", "human:ann"),
        ]
        assert kinds(audit_trail(story.store, actor="human:ann", session="s2")) == [
            ("c", "DecisionRecorded", "human:ann")
        ]

    def test_a_forked_flow_stays_in_its_session(self, story: Story) -> None:
        fork(story.store, "c", at_revision=1, new_flow_id="c2")
        assert session_flows(story.store, "s2") == ["c", "c2"]

    def test_time_range_and_paging(self, story: Story) -> None:
        window = audit_trail(story.store, since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=4))
        assert [e.type for e in window] == ["GateOpened", "GateApproved", "StepFailed", "FlowFailed"]
        minute = list(
            audit_trail(story.store, since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=3))
        )
        assert minute and {e.recorded_at for e in minute} == {T0 + timedelta(minutes=2)}  # until is left out
        first, second = audit_trail(story.store, limit=2)
        rest = list(audit_trail(story.store, after_position=second.position))
        assert [first, second, *rest] == list(audit_trail(story.store))

    def test_entries_are_frozen_and_become_json(self, story: Story) -> None:
        entry = next(audit_trail(story.store, flow_id="a", types="GateApproved"))
        with pytest.raises(dataclasses.FrozenInstanceError):
            entry.actor = "someone else"  # type: ignore[misc]
        plain = orjson.loads(orjson.dumps(entry.as_dict()))
        assert plain["kind"] == "gate" and plain["options"] == [{"value": "yes", "label": "Yes"}]
        assert plain["recorded_at"] == "2030-01-01T09:02:00.000000Z"


def approved_in_forks(store: EventStore) -> None:
    """Gate opened on o@3; o2 forks o there, o3 forks o2; o reopens it later; o2 and o3 approve."""
    start = NewEvent("FlowStarted", {"controller_id": "c", "goal": "g", "owner_session_key": "s"})
    store.append("o", [start, NewEvent("StepScheduled", {"step_id": "pay", "name": "pay", "run_id": "o/1"})])
    options = [{"value": "yes", "label": "Yes"}]
    opened = NewEvent("GateOpened", {"step_id": "pay", "prompt": "Pay $9?", "options": options})
    store.append("o", [opened], metadata={"actor": "agent:bot"})
    fork(store, "o", at_revision=3, new_flow_id="o2")
    fork(store, "o2", at_revision=1, new_flow_id="o3")
    store.append("o", [NewEvent("GateOpened", {"step_id": "pay", "prompt": "after the fork"})])
    for flow_id in ("o2", "o3"):
        store.append(
            flow_id, [NewEvent("GateApproved", {"step_id": "pay", "by": "ann", "selections": ["yes"]})]
        )


def test_a_flow_belongs_to_the_session_of_its_first_start_wherever_that_is(target: Target) -> None:
    """Only a writer bypassing FlowService logs a start after other events, or a second start."""
    with target.open() as store:
        start = {"controller_id": "c", "goal": "g"}
        store.append(
            "late", [NewEvent("Noted", {}), NewEvent("FlowStarted", {**start, "owner_session_key": "s"})]
        )
        store.append("late", [NewEvent("FlowStarted", {**start, "owner_session_key": "t"})])
        store.append("first", [NewEvent("FlowStarted", {**start, "owner_session_key": "t"})])
        store.append("first", [NewEvent("FlowStarted", {**start, "owner_session_key": "s"})])
        assert session_flows(store, "s") == ["late"]
        assert session_flows(store, "t") == ["first"]


def test_a_session_key_that_is_not_a_string_names_no_session_on_every_backend(target: Target) -> None:
    """Only a writer bypassing FlowService logs one; SQLite and PostgreSQL read it the same way."""
    with target.open() as store:
        for flow_id, key in (("n", 5), ("b", True), ("l", ["s"]), ("s", "5")):
            start = {"controller_id": "c", "goal": "g", "owner_session_key": key}
            store.append(flow_id, [NewEvent("FlowStarted", start)])
            store.append(flow_id, [NewEvent("FlowFailed", {"error": "x"})])
        fork(store, "n", at_revision=1, new_flow_id="n2")  # its snapshot holds the fold's owner: ""
        assert session_flows(store, "5") == ["s"]
        assert session_flows(store, "") == ["n", "b", "l", "n2"]  # as the read model files them
        assert [entry.flow_id for entry in audit_trail(store, session="5")] == ["s"]
        for text in ("true", "True", "1", '["s"]'):
            with pytest.raises(SessionNotFound):
                audit_trail(store, session=text)


class TestForks:
    def test_an_approval_in_a_fork_shows_what_was_seen_before_the_fork(self, store: EventStore) -> None:
        approved_in_forks(store)
        for flow_id in ("o2", "o3"):  # a fork, and a fork of a fork
            (approval,) = audit_trail(store, flow_id=flow_id)
            assert isinstance(approval, GateEntry) and approval.action == "approved"
            assert (approval.prompt, approval.options) == ("Pay $9?", (GateOption(value="yes", label="Yes"),))
            opened = (approval.opened_flow_id, approval.opened_revision, approval.opened_by)
            assert opened == ("o", 3, "agent:bot")

    def test_the_audit_command_shows_what_was_seen_in_the_origin(self, target: Target) -> None:
        with target.open() as store:
            approved_in_forks(store)
        schema = target.options.get("schema")
        prefix = ["--url", target.url, *(["--schema", schema] if schema else [])]
        result = CliRunner().invoke(main, [*prefix, "audit", "--flow", "o3"], color=False)
        assert result.exit_code == 0, result.output
        assert 'saw "Pay $9?" [yes], opened at o@3 by agent:bot' in result.output


class TestCausation:
    def test_causes_walk_back_nearest_first(self, story: Story) -> None:
        chain = causes(story.store, story.ids["failed"].event_ids[0])
        assert [e.type for e in chain] == [
            "GateApproved",
            "GateOpened",
            "StepScheduled",
            "DecisionRecorded",
            "StepCompleted",
        ]
        assert chain[-1].metadata == {"correlation_id": "req-1"}

    def test_effects_walk_forward_transitively(self, story: Story) -> None:
        found = effects(story.store, story.ids["decided"].event_ids[0])
        assert [(e.event.type, e.depth) for e in found] == [
            ("StepScheduled", 1),
            ("GateOpened", 2),
            ("GateApproved", 3),
            ("StepFailed", 4),
        ]
        assert found[1].cause == found[0].event.event_id
        assert len(effects(story.store, story.ids["decided"].event_ids[0], limit=2)) == 2

    def test_a_correlation_group_spans_the_chain(self, story: Story) -> None:
        group = list(correlated(story.store, "req-1"))
        assert [e.type for e in group] == [
            "FlowStarted",
            "StepScheduled",
            "StepStarted",
            "StepCompleted",
            "DecisionRecorded",
            "StepScheduled",
            "GateOpened",
            "GateApproved",
            "StepFailed",
        ]
        assert kinds(audit_trail(story.store, correlation_id="req-1", types=["DecisionRecorded"])) == [
            ("a", "DecisionRecorded", "agent:bot")
        ]

    def test_a_cause_outside_the_log_ends_the_chain(self, store: EventStore) -> None:
        store.append("f", [NewEvent("A", {})], metadata={"causation_id": "message-7"})
        (event,) = store.read_flow("f")
        assert causes(store, event.event_id) == ()
        assert caused_by(event) == {
            "causation_id": str(event.event_id),
            "correlation_id": str(event.event_id),
        }

    def test_a_causation_id_links_in_the_canonical_spelling_only_both_ways(self, store: EventStore) -> None:
        root = uuid.uuid4()
        spellings = [str(root), str(root).upper(), f"{{{root}}}", f"urn:uuid:{root}", root.hex]
        store.append("f", [NewEvent("Root", {}, event_id=root)])
        store.append("f", [NewEvent("Child", {"as": s}, metadata={"causation_id": s}) for s in spellings])
        (linked,) = effects(store, root)
        assert linked.event.data == {"as": str(root)} and linked.cause == root
        children = list(store.read_flow("f", from_revision=2))
        chains = [[e.event_id for e in causes(store, child.event_id)] for child in children]
        assert chains == [[root], [], [], [], []]
        assert [cause_id(child) for child in children] == [root, None, None, None, None]
        assert children[1].metadata == {"causation_id": str(root).upper()}  # kept as it was given
        assert caused_by(str(root).upper()) == {"causation_id": str(root)}  # writes the spelling that links


class TestErrors:
    def test_unknown_flow_session_and_event(self, story: Story) -> None:
        with pytest.raises(FlowNotFound):
            audit_trail(story.store, flow_id="nope")
        with pytest.raises(SessionNotFound):
            audit_trail(story.store, session="nope")
        with pytest.raises(EventNotFound, match="no event 01"):
            causes(story.store, "01a2016a-1229-7a96-a0c1-7cfef8fa0c1b")
        with pytest.raises(InvalidInput, match="not an event id"):
            effects(story.store, "not-a-uuid")

    def test_bad_filters(self, story: Story) -> None:
        with pytest.raises(InvalidInput, match="audited types are"):
            audit_trail(story.store, types=["FlowStarted"])
        with pytest.raises(InvalidInput, match="timezone-aware"):
            audit_trail(story.store, since=datetime(2030, 1, 1))  # naive
        with pytest.raises(InvalidInput, match="is after"):
            audit_trail(story.store, since=T0 + timedelta(days=1), until=T0)

    @pytest.mark.parametrize("text", ["a\ud800", "a\x00b"], ids=["lone-surrogate", "nul"])
    def test_text_a_backend_cannot_compare_is_invalid_input_on_every_backend(
        self, story: Story, text: str
    ) -> None:
        calls = {
            "actor": lambda: audit_trail(story.store, actor=text),
            "session": lambda: audit_trail(story.store, session=text),
            "correlation_id": lambda: audit_trail(story.store, correlation_id=text),
        }
        for name, call in calls.items():
            with pytest.raises(InvalidInput, match=f"^{name} must be valid UTF-8 text without NUL"):
                call()
        with pytest.raises(InvalidInput, match=r"^session must be valid UTF-8"):
            session_flows(story.store, text)
        with pytest.raises(InvalidInput, match=r"^correlation_id must be valid UTF-8"):
            correlated(story.store, text)

    def test_link_helpers_given_no_event_or_a_correlation_that_is_not_text_say_so(self, story: Story) -> None:
        event = next(iter(story.store.read_flow("a")))
        for call in (
            lambda: gate_opening(story.store, {"type": "GateApproved"}),  # type: ignore[arg-type]
            lambda: gate_openings(story.store, [event, "GateApproved"]),  # type: ignore[list-item]
            lambda: gate_openings(story.store, None),  # type: ignore[arg-type]
        ):
            with pytest.raises(InvalidInput, match="recorded event"):
                call()
        with pytest.raises(InvalidInput, match="correlation_id must be a string, not 5"):
            caused_by(event, correlation_id=5)  # type: ignore[arg-type]

    def test_times_outside_the_years_1_to_9999_are_refused_on_every_backend(self, story: Story) -> None:
        plus_14, minus_5 = timezone(timedelta(hours=14)), timezone(timedelta(hours=-5))
        with pytest.raises(InvalidInput, match="outside the years 1 to 9999"):
            audit_trail(story.store, until=datetime(1, 1, 1, tzinfo=plus_14))
        with pytest.raises(InvalidInput, match="outside the years 1 to 9999"):
            audit_trail(story.store, since=datetime(9999, 12, 31, 23, tzinfo=minus_5))

    def test_an_age_further_back_than_the_year_1_is_a_clear_error(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'audit.db'}"
        EventStore.open(url).close()
        result = CliRunner().invoke(main, ["--url", url, "audit", "--since", "9999999d"])
        assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output
        assert "further back than the year 1" in result.output
        assert "Traceback" not in result.output


INDEXED_QUERIES: dict[str, Any] = {
    "ix_flow_events_audit": lambda s: audit_trail(s, session="s1"),
    "ix_flow_events_audit_actor": lambda s: audit_trail(s, actor="human:ann"),
    "ix_flow_events_correlation": lambda s: correlated(s, "req-1"),
    "ix_flow_events_session": lambda s: session_flows(s, "s1"),
}


class TestIndexes:
    """The queries use the partial indexes of migration 0007, which match eventstore/schema.py."""

    def test_migration_creates_the_indexes_of_the_schema(self, tmp_path: Path) -> None:
        """SQLite keeps each index's DDL text; on PostgreSQL the plans below are the check."""
        with EventStore.open(f"sqlite:///{tmp_path / 'x.db'}") as store, store.engine.connect() as conn:
            stored = dict(
                conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'index'").all()
            )
        for index in flow_events.indexes:
            assert stored[index.name] == str(CreateIndex(index).compile(dialect=sqlite.dialect()))

    @pytest.mark.parametrize("index", sorted(INDEXED_QUERIES))
    def test_queries_use_the_index(self, story: Story, index: str, monkeypatch: pytest.MonkeyPatch) -> None:
        plans = explain(story.store, monkeypatch)
        list(INDEXED_QUERIES[index](story.store))
        assert any(index in indexes_used(plan) for plan in plans), plans

    def test_the_whole_log_is_read_type_by_type_not_sorted(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A page of every flow's audited events reads each type's range of the type index, in order,
        whether they are most of the log or a few among a flood of others: SQLite, with no
        statistics, read every audited row and sorted them for each page; a walk in the log's
        order reads every other event before the few. (PostgreSQL plans the one query from its
        statistics.)"""
        with EventStore.open(f"sqlite:///{tmp_path / 'log.db'}") as store:
            store.append("busy", [NewEvent("CheckpointSaved", {}) for _ in range(50)])
            for n in range(3):
                store.append(f"f{n}", [NewEvent("Noted", {}), NewEvent("StepFailed", {"error": "e"})])
            plans = explain(store, monkeypatch)
            assert len(list(audit_trail(store, types=list(AUDIT_EVENT_TYPES), limit=2))) == 2
        assert plans and all("ix_flow_events_type_position" in indexes_used(plan) for plan in plans), plans
        assert not any("TEMP B-TREE" in plan for plan in plans), plans

    def test_effects_use_the_causation_index(self, story: Story, monkeypatch: pytest.MonkeyPatch) -> None:
        plans = explain(story.store, monkeypatch)
        effects(story.store, story.ids["decided"].event_ids[0])
        assert any("ix_flow_events_causation" in indexes_used(plan) for plan in plans), plans


def indexes_used(plan: str) -> set[str]:
    """The whole index names a plan mentions: ``ix_a`` is not found in ``ix_a_b``."""
    return set(re.findall(r"\bix_\w+", plan))


def explain(store: EventStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Collect the plan of each read the store runs from now on (sequential scans off on PostgreSQL)."""
    from eventstore import store as store_module

    plans: list[str] = []
    read = store_module._fetch_raw
    prefix = "EXPLAIN QUERY PLAN " if store.dialect == "sqlite" else "EXPLAIN "

    def explained(conn: Any, query: Any, params: Any = None) -> list[Any]:
        sql, values = compiled_sql(conn.dialect, query, params)
        cursor = conn.connection.driver_connection.cursor()
        if store.dialect == "postgresql":
            cursor.execute("SET enable_seqscan = off")
        cursor.execute(prefix + sql, values)
        plans.append(" ".join(str(row) for row in cursor.fetchall()))
        if store.dialect == "postgresql":
            cursor.execute("RESET enable_seqscan")
        return read(conn, query, params)

    monkeypatch.setattr(store_module, "_fetch_raw", explained)
    return plans
