"""The read side against a naive reference: plain Python folding the raw ``flow_events`` rows.

The reference below reads the rows in position order with SQL, decodes them
with orjson and folds them with its own few lines per event type, written
from docs/flows.md, docs/timetravel.md and docs/audit.md rather than from
``eventstore.flow_fold``. Each test records a random history (commands
through ``FlowService``, forks, leases changing owner, re-opened gates,
retries) on an injected clock, then holds a public read call to the
reference: ``state_at`` at every revision (through snapshots too), ``diff``
of any two revisions, forks, ``audit_trail``, ``step_history`` pages, and
the command line's ``state``, ``history`` and ``audit`` with ``--json``.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from eventstore import EventStore, EventStoreError, NewEvent
from eventstore.audit import audit_trail
from eventstore.cli import main
from eventstore.flow_fold import FlowView, view_to_dict
from eventstore.snapshots import Steps
from eventstore.timetravel import diff, fork, state_at
from projections import FlowProjection, FlowQueries, FlowService

from .conftest import Target

T0 = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
STEPS = 3
AUDITED = {
    "DecisionRecorded",
    "GateOpened",
    "GateApproved",
    "GateRejected",
    "StepFailed",
    "StepTimedOut",
    "FlowFailed",
}
_runs = itertools.count()


# -- the reference ---------------------------------------------------------------------


@dataclass
class Row:
    position: int
    flow_id: str
    revision: int
    type: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    recorded_at: datetime


def raw_rows(store: EventStore) -> list[Row]:
    """Every row of the log, position order, decoded by hand."""
    query = sa.text(
        "SELECT position, flow_id, revision, type, CAST(data AS TEXT), CAST(metadata AS TEXT), recorded_at "
        "FROM flow_events ORDER BY position"
    )
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    out = []
    for position, flow_id, revision, kind, data, metadata, recorded in rows:
        at = recorded if isinstance(recorded, datetime) else datetime.fromisoformat(recorded)
        out.append(Row(position, flow_id, revision, kind, orjson.loads(data), orjson.loads(metadata), at))
    return out


def flow_rows(rows: list[Row], flow_id: str) -> list[Row]:
    return sorted((r for r in rows if r.flow_id == flow_id), key=lambda r: r.revision)


@dataclass
class Ref:
    """A flow's state as the docs describe it, in plain dicts."""

    flow: dict[str, Any] | None = None
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)


def ref_fold(rows: list[Row], flow_id: str, upto: int | None = None) -> Ref:
    """The flow's state after its events up to revision ``upto`` (all of them if None)."""
    ref = Ref()
    for row in flow_rows(rows, flow_id):
        if upto is not None and row.revision > upto:
            break
        ref_apply(ref, row, rows)
    return ref


def ref_apply(ref: Ref, row: Row, rows: list[Row]) -> None:
    d, at = row.data, row.recorded_at
    if ref.flow is None:
        if row.type == "FlowStarted":
            ref.flow = {
                "controller_id": d["controller_id"],
                "goal": d["goal"],
                "owner_session_key": d["owner_session_key"],
                "parent_flow_id": None,
                "state": dict(d.get("state") or {}),
                "status": "running",
                "current_step": None,
                "wait": None,
                "cancel_requested": False,
                "result": None,
                "error": None,
                "lease_owner": None,
                "lease_generation": 0,
                "created_at": at,
                "finished_at": None,
            }
        elif row.type == "FlowForked":  # the origin's state at that revision, by our own fold
            origin = ref_fold(rows, d["origin_flow_id"], d["origin_revision"])
            assert origin.flow is not None
            ref.flow = {
                **orjson.loads(orjson.dumps(origin.flow, default=str)),
                "parent_flow_id": d["origin_flow_id"],
                "lease_owner": None,
                "lease_generation": 0,
                "created_at": at,
                "finished_at": origin.flow["finished_at"],
            }
            ref.steps = {k: {**v, "revision": row.revision} for k, v in origin.steps.items()}
            ref.flow.pop("event_count", None)
        else:
            return
    flow = ref.flow
    flow["revision"] = row.revision
    flow["event_count"] = flow.get("event_count", 0) + 1
    flow["updated_at"] = at
    kind = row.type
    if kind == "FlowAdvanced":
        if d.get("current_step") is not None:
            flow["current_step"] = d["current_step"]
        for key, value in (d.get("state_patch") or {}).items():
            if value is None:
                flow["state"].pop(key, None)
            else:
                flow["state"][key] = value
    elif kind == "FlowWaiting":
        flow["status"] = "waiting"
        flow["wait"] = {"waiting_for": d.get("waiting_for", ""), "details": d.get("details") or {}}
    elif kind == "FlowResumed":
        flow["status"], flow["wait"] = "running", None
    elif kind == "FlowCancelRequested":
        flow["cancel_requested"] = True
    elif kind in ("FlowFinished", "FlowFailed", "FlowCancelled"):
        flow["status"] = {"FlowFinished": "finished", "FlowFailed": "failed", "FlowCancelled": "cancelled"}[
            kind
        ]
        flow["wait"], flow["finished_at"] = None, at
        if kind == "FlowFinished":
            flow["result"] = d.get("result") or {}
        elif kind == "FlowFailed":
            flow["error"] = {"error": d.get("error", ""), "details": d.get("details") or {}}
        else:
            flow["error"] = {"error": "cancelled", "details": {"reason": d.get("reason", "")}}
    elif kind == "LeaseAcquired":
        flow["lease_owner"], flow["lease_generation"] = d["owner_token"], d["generation"]
    elif kind == "LeaseReleased":
        flow["lease_owner"] = None
    elif kind.startswith(("Step", "Gate")):
        sid = d["step_id"]
        if kind == "StepScheduled":
            ref.steps[sid] = {
                "name": d["name"],
                "run_id": d["run_id"],
                "position": d.get("position", 0),
                "status": "scheduled",
                "attempts": 0,
                "retry_count": 0,
                "result": None,
                "error": None,
                "reason": None,
                "gate_status": None,
                "gate_prompt": None,
                "gate_by": None,
                "gate_feedback": None,
                "gate_selections": None,
                "scheduled_at": at,
                "started_at": None,
                "finished_at": None,
                "scheduled_revision": row.revision,
            }
        if sid not in ref.steps:
            return  # an event of a step never scheduled (what_if left it out) changes no step
        step = ref.steps[sid]
        step["revision"], step["updated_at"] = row.revision, at
        if kind == "StepStarted":
            step["status"], step["started_at"] = "running", at
            step["attempts"] += 1
        elif kind in ("StepCompleted", "StepFailed", "StepSkipped", "StepTimedOut"):
            step["status"] = {
                "StepCompleted": "completed",
                "StepFailed": "failed",
                "StepSkipped": "skipped",
                "StepTimedOut": "timed_out",
            }[kind]
            step["finished_at"] = at
            if kind == "StepCompleted":
                step["result"] = d.get("result") or {}
            elif kind == "StepFailed":
                step["error"] = d.get("error", "")
            else:
                step["reason"] = d.get("reason", "")
            if step["gate_status"] == "open":
                step["gate_status"] = "closed"
        elif kind == "StepRetried":
            step["status"] = "scheduled"
            step["retry_count"] = d.get("retry_count", step["retry_count"] + 1)
            step["error"] = d.get("error") or None
        elif kind == "GateOpened":
            step.update(gate_status="open", gate_prompt=d["prompt"], gate_by=None, gate_feedback=None)
            step["gate_selections"] = None
        elif kind in ("GateApproved", "GateRejected"):
            step["gate_status"] = "approved" if kind == "GateApproved" else "rejected"
            step["gate_by"], step["gate_feedback"] = d.get("by", ""), d.get("feedback", "")
            step["gate_selections"] = list(d.get("selections") or [])


FLOW_FIELDS = ["controller_id", "goal", "owner_session_key", "parent_flow_id", "state", "status"]
FLOW_FIELDS += ["current_step", "wait", "cancel_requested", "result", "error", "lease_owner"]
FLOW_FIELDS += ["lease_generation", "revision", "event_count", "created_at", "updated_at", "finished_at"]


def _time(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    if isinstance(value, str) and value[:2].isdigit() and ("T" in value or " " in value):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value).astimezone(UTC)
    return value


def plain(ref: Ref) -> dict[str, Any]:
    """The reference as comparable values (times in UTC)."""
    if ref.flow is None:
        return {"flow": None, "steps": {}}
    flow = {k: _time(ref.flow.get(k)) for k in FLOW_FIELDS}
    steps = {sid: {k: _time(v) for k, v in s.items()} for sid, s in sorted(ref.steps.items())}
    return {"flow": flow, "steps": steps}


def library(view: FlowView) -> dict[str, Any]:
    """A library view in the reference's shape."""
    data = view_to_dict(view)
    if data["flow"] is None:
        return {"flow": None, "steps": {}}
    flow = {k: _time(data["flow"][k]) for k in FLOW_FIELDS}
    keys = plain_step_keys()
    steps = {sid: {k: _time(s[k]) for k in keys} for sid, s in data["steps"].items()}
    return {"flow": flow, "steps": steps}


def plain_step_keys() -> list[str]:
    ref = Ref()
    row = Row(0, "x", 1, "StepScheduled", {"step_id": "s", "name": "n", "run_id": "r"}, {}, T0)
    ref.flow = {}
    ref_apply(ref, row, [])
    return sorted(ref.steps["s"])


def ref_diff(before: dict[str, Any], after: dict[str, Any], path: str = "") -> set[tuple[str, str]]:
    """(op, path) of every leaf that differs, JSON-Patch style."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: set[tuple[str, str]] = set()
        for key in before.keys() | after.keys():
            sub = f"{path}/{key}"
            if key not in before:
                out.add(("add", sub))
            elif key not in after:
                out.add(("remove", sub))
            else:
                out |= ref_diff(before[key], after[key], sub)
        return out
    return set() if before == after else {("replace", path)}


# -- recording a history -----------------------------------------------------------------

_schedule = st.tuples(st.just("schedule"), st.integers(0, STEPS - 1))
_step = st.tuples(
    st.sampled_from(
        ["start_step", "complete", "fail", "retry", "skip", "time_out", "gate", "approve", "reject"]
    ),
    st.integers(0, STEPS - 1),
)
command = st.one_of(  # step commands most often, ends of the flow seldom: a closed flow refuses the rest
    _schedule,
    _step,
    _step,
    _step,
    st.tuples(
        st.just("advance"), st.dictionaries(st.sampled_from("xyz"), st.one_of(st.none(), st.integers(0, 9)))
    ),
    st.tuples(st.sampled_from(["lease", "release"]), st.sampled_from(["w1", "w2"])),
    st.tuples(st.sampled_from(["wait", "resume", "decide", "request_cancel"]), st.just(0)),
    st.tuples(st.just("tick"), st.integers(-2, 3)),  # the clock moves, also back (an NTP step)
)
STEP_OPS = {
    "schedule",
    "start_step",
    "complete",
    "fail",
    "retry",
    "skip",
    "time_out",
    "gate",
    "approve",
    "reject",
}
ending = st.tuples(st.sampled_from(["finish", "fail_flow"]), st.just(0))


class Recorder:
    def __init__(self, store: EventStore, now: list[datetime]) -> None:
        self.store, self.now, self.service = store, now, FlowService(store)
        self.leases: dict[tuple[str, str], Any] = {}
        self.scheduled: set[tuple[str, str]] = set()

    def run(self, flow: str, op: str, arg: Any) -> None:
        s, step = self.service, f"step-{arg}"
        if op == "tick":
            self.now[0] += timedelta(minutes=arg)
            return
        self.now[0] += timedelta(seconds=1)
        if op != "schedule" and op in STEP_OPS and (flow, step) not in self.scheduled:
            self.run(flow, "schedule", arg)  # a step command on a step never scheduled would only be refused
        actions = {
            "advance": lambda: s.advance(flow, current_step="x", state_patch=arg, actor="agent:a"),
            "schedule": lambda: (
                self.scheduled.add((flow, step))
                or s.schedule_step(
                    flow, step_id=step, name=f"tool-{arg % 2}", run_id=f"r{next(_runs)}", position=arg % 2
                )
            ),
            "start_step": lambda: s.start_step(flow, step, actor="worker"),
            "complete": lambda: s.complete_step(flow, step, result={"v": arg}),
            "fail": lambda: s.fail_step(flow, step, error=f"boom {arg}", actor="worker"),
            "retry": lambda: s.retry_step(flow, step),
            "skip": lambda: s.skip_step(flow, step, reason="not needed"),
            "time_out": lambda: s.time_out_step(flow, step, reason="slow"),
            "gate": lambda: s.open_gate(
                flow,
                step,
                prompt=f"ok {next(_runs)}?",
                options=[{"value": "y", "label": "Yes"}],
                actor="agent:a",
            ),
            "approve": lambda: s.approve_gate(flow, step, by="human:ann", selections=["y"], feedback="fine"),
            "reject": lambda: s.reject_gate(flow, step, by="human:bob", feedback="no"),
            "lease": lambda: self.leases.__setitem__(
                (flow, arg), s.acquire_lease(flow, owner_token=arg, ttl_seconds=30)
            ),
            "release": lambda: s.release_lease(flow, self.leases[(flow, arg)]),
            "wait": lambda: s.wait(flow, waiting_for="human"),
            "resume": lambda: s.resume(flow, by="human:ann"),
            "decide": lambda: s.record_decision(
                flow, actor="agent:a", decision=f"d{next(_runs)}", rationale="because", confidence=0.5
            ),
            "request_cancel": lambda: s.request_cancel(flow, by="human:ann"),
            "finish": lambda: s.finish(flow, result={"ok": True}),
            "fail_flow": lambda: s.fail(flow, error="flow boom", actor="agent:a"),
        }
        with contextlib.suppress(EventStoreError, KeyError):  # refused commands write nothing
            actions[op]()


_examples = itertools.count()


@pytest.fixture
def clocked(target: Target) -> Iterator[tuple[EventStore, list[datetime], Target]]:
    now = [T0]
    with target.open(projections=[FlowProjection()], clock=lambda: now[0]) as store:
        yield store, now, target


def record(store: EventStore, now: list[datetime], commands: list[tuple[str, Any]], flow: str) -> None:
    recorder = Recorder(store, now)
    now[0] += timedelta(seconds=1)
    recorder.service.start_flow(flow, controller_id="c", goal="g", owner_session_key="sess", state={"n": 0})
    for op, arg in commands:
        recorder.run(flow, op, arg)


SETTINGS = settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
QUICK = settings(
    SETTINGS, phases=[Phase.explicit, Phase.generate]
)  # an example is slow: shrinking takes minutes
history = st.builds(
    lambda body, end: body + end, st.lists(command, min_size=3, max_size=20), st.lists(ending, max_size=1)
)


# -- the properties ----------------------------------------------------------------------


@SETTINGS
@given(commands=history, every=st.sampled_from([0, 2, 3, 1000]))
def test_state_at_every_revision_is_the_reference_fold(
    clocked: tuple[EventStore, list[datetime], Target], commands: list[tuple[str, Any]], every: int
) -> None:
    store, now, _ = clocked
    flow = f"state{next(_examples)}"
    record(store, now, commands, flow)
    rows = raw_rows(store)
    head = store.revision(flow)
    for revision in range(head + 1):
        assert library(state_at(store, flow, revision=revision, snapshot_every=every)) == plain(
            ref_fold(rows, flow, revision)
        ), revision
    # the head, by default, and once more now that snapshots exist
    assert library(state_at(store, flow)) == plain(ref_fold(rows, flow))
    for revision in range(head + 1):
        assert library(state_at(store, flow, revision=revision, snapshot_every=every)) == plain(
            ref_fold(rows, flow, revision)
        ), revision
    # the read models say the same as the reference's head
    queries = FlowQueries(store)
    head_state = plain(ref_fold(rows, flow))
    assert library(FlowView(queries.flow(flow), _steps(queries.steps(flow)))) == head_state


def _steps(steps: list[Any]) -> Steps:
    return Steps(steps)


@SETTINGS
@given(commands=history, data=st.data())
def test_state_at_a_time_is_the_prefix_recorded_up_to_it(
    clocked: tuple[EventStore, list[datetime], Target], commands: list[tuple[str, Any]], data: st.DataObject
) -> None:
    store, now, _ = clocked
    flow = f"at{next(_examples)}"
    record(store, now, commands, flow)
    rows = flow_rows(raw_rows(store), flow)
    times = sorted({r.recorded_at for r in rows})
    moments = [times[0] - timedelta(seconds=1), *times, *(t + timedelta(milliseconds=500) for t in times)]
    for moment in data.draw(st.lists(st.sampled_from(moments), min_size=1, max_size=6)):
        prefix = 0
        for row in rows:
            if row.recorded_at > moment:
                break
            prefix = row.revision
        expected = plain(ref_fold(rows, flow, prefix))
        assert library(state_at(store, flow, at=moment)) == expected, moment


@SETTINGS
@given(commands=history, data=st.data())
def test_diff_of_two_revisions_is_the_difference_of_the_reference_states(
    clocked: tuple[EventStore, list[datetime], Target], commands: list[tuple[str, Any]], data: st.DataObject
) -> None:
    store, now, _ = clocked
    flow = f"diff{next(_examples)}"
    record(store, now, commands, flow)
    rows = raw_rows(store)
    head = store.revision(flow)
    for _ in range(4):
        a = data.draw(st.integers(0, head))
        b = data.draw(st.integers(0, head))
        result = diff(store, flow, a, b)
        low, high = sorted((a, b))
        assert [e.revision for e in result.events] == list(range(low + 1, high + 1))
        before, after = _comparable(ref_fold(rows, flow, a)), _comparable(ref_fold(rows, flow, b))
        expected = ref_diff(before, after)
        got = {(c.op, c.path) for c in result.changes}
        assert {p for p in got if _compared(p[1])} == expected, (a, b)
        for change in result.changes:  # each change's old and new are the reference's values
            if _compared(change.path) and not isinstance(change.old or change.new, dict):
                assert _time(_at(before, change.path)) == _time(change.old)
                assert _time(_at(after, change.path)) == _time(change.new)


def _comparable(ref: Ref) -> dict[str, Any]:
    out = plain(ref)
    return (
        {"flow": out["flow"], "steps": out["steps"]}
        if out["flow"] is not None
        else {"flow": None, "steps": {}}
    )


def _compared(path: str) -> bool:
    """Paths the reference models (the library has a few more fields, which the reference ignores)."""
    parts = path.split("/")[1:]
    if parts[0] == "flow":
        return len(parts) == 1 or parts[1] in FLOW_FIELDS
    return len(parts) <= 2 or parts[2] in plain_step_keys()


def _at(value: Any, path: str) -> Any:
    for part in path.split("/")[1:]:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


@SETTINGS
@given(commands=history, more=history, data=st.data())
def test_a_fork_starts_from_the_reference_state_and_leaves_its_origin_alone(
    clocked: tuple[EventStore, list[datetime], Target],
    commands: list[tuple[str, Any]],
    more: list[tuple[str, Any]],
    data: st.DataObject,
) -> None:
    store, now, _ = clocked
    flow = f"fork{next(_examples)}"
    record(store, now, commands, flow)
    head = store.revision(flow)
    at = data.draw(st.integers(1, head))
    before = raw_rows(store)
    fork(store, flow, at_revision=at, new_flow_id=f"{flow}-b", metadata={"actor": "human:ann"})
    recorder = Recorder(store, now)
    for op, arg in more:
        recorder.run(f"{flow}-b" if data.draw(st.booleans()) else flow, op, arg)
    rows = raw_rows(store)
    assert [(r.flow_id, r.revision, r.data) for r in rows if r.position <= before[-1].position] == [
        (r.flow_id, r.revision, r.data) for r in before
    ]
    for name in (flow, f"{flow}-b"):
        for revision in range(store.revision(name) + 1):
            assert library(state_at(store, name, revision=revision)) == plain(
                ref_fold(rows, name, revision)
            ), (
                name,
                revision,
            )
    forked = ref_fold(rows, f"{flow}-b", 1)
    origin = ref_fold(rows, flow, at)
    assert forked.flow is not None and origin.flow is not None
    assert forked.flow["state"] == origin.flow["state"] and forked.steps.keys() == origin.steps.keys()
    _check_audit(store, rows, f"{flow}-b")
    _check_audit(store, rows, flow)


def ref_actor(row: Row) -> str | None:
    for value in (row.data.get("actor"), row.data.get("by"), row.metadata.get("actor")):
        if isinstance(value, str):
            return value
    return None


def ref_opening(rows: list[Row], row: Row) -> Row | None:
    """The GateOpened an approver saw: the last of the step before it, else the origin's up to the fork."""
    flow, upto = row.flow_id, row.revision - 1
    while True:
        found = [
            r
            for r in flow_rows(rows, flow)
            if r.revision <= upto and r.type == "GateOpened" and r.data.get("step_id") == row.data["step_id"]
        ]
        if found:
            return found[-1]
        first = flow_rows(rows, flow)[0]
        if first.type != "FlowForked":
            return None
        flow, upto = first.data["origin_flow_id"], first.data["origin_revision"]


def _check_audit(store: EventStore, rows: list[Row], flow: str) -> None:
    expected = [r for r in flow_rows(rows, flow) if r.type in AUDITED]
    trail = list(audit_trail(store, flow_id=flow))
    assert [(e.revision, e.type, e.actor) for e in trail] == [
        (r.revision, r.type, ref_actor(r)) for r in expected
    ]
    for entry, row in zip(trail, expected, strict=True):
        assert entry.recorded_at == row.recorded_at and entry.step_id == row.data.get("step_id")
        if row.type == "DecisionRecorded":
            assert (entry.decision, entry.rationale, entry.confidence) == (
                row.data["decision"],
                row.data["rationale"],
                row.data["confidence"],
            )
        elif row.type in ("GateApproved", "GateRejected"):
            opened = ref_opening(rows, row)
            if opened is None:  # a decision no opening precedes (appended by hand): nothing seen
                assert (entry.prompt, entry.options, entry.opened_flow_id, entry.opened_revision) == (
                    None,
                    (),
                    None,
                    None,
                )
                continue
            assert (entry.opened_flow_id, entry.opened_revision, entry.opened_by) == (
                opened.flow_id,
                opened.revision,
                ref_actor(opened),
            )
            assert (entry.prompt, entry.feedback, list(entry.selections)) == (
                opened.data["prompt"],
                row.data.get("feedback", ""),
                row.data.get("selections", []),
            )
        elif row.type in ("StepFailed", "FlowFailed", "StepTimedOut"):
            assert entry.error == (
                row.data.get("reason") if row.type == "StepTimedOut" else row.data["error"]
            )
    # pages of the trail are slices of it
    for after in {0, *(e.position for e in trail)}:
        page = list(audit_trail(store, flow_id=flow, after_position=after, limit=2))
        assert [e.position for e in page] == [e.position for e in trail if e.position > after][:2]
    for actor in {ref_actor(r) for r in expected} - {None}:
        assert [e.position for e in audit_trail(store, flow_id=flow, actor=actor)] == [
            r.position for r in expected if ref_actor(r) == actor
        ]


@SETTINGS
@given(commands=history)
def test_audit_trail_is_the_reference_list(
    clocked: tuple[EventStore, list[datetime], Target], commands: list[tuple[str, Any]]
) -> None:
    store, now, _ = clocked
    flow = f"audit{next(_examples)}"
    record(store, now, commands, flow)
    _check_audit(store, raw_rows(store), flow)


@SETTINGS
@given(commands=history, data=st.data())
def test_step_history_pages_are_slices_of_the_filtered_reference(
    clocked: tuple[EventStore, list[datetime], Target], commands: list[tuple[str, Any]], data: st.DataObject
) -> None:
    store, now, _ = clocked
    flow = f"steps{next(_examples)}"
    record(store, now, commands, flow)
    steps = ref_fold(raw_rows(store), flow).steps
    queries = FlowQueries(store)
    for _ in range(5):
        low = data.draw(st.one_of(st.none(), st.integers(-1, 2)))
        high = data.draw(st.one_of(st.none(), st.integers(-1, 2)))
        status = data.draw(
            st.one_of(st.none(), st.sampled_from(["scheduled", "running", "completed", "failed"]))
        )
        name = data.draw(st.one_of(st.none(), st.sampled_from(["tool-0", "tool-1", "other"])))
        offset, limit = data.draw(st.integers(0, 4)), data.draw(st.integers(1, 3))
        wanted = sorted(
            (s["position"], sid)
            for sid, s in steps.items()
            if (low is None or s["position"] >= low)
            and (high is None or s["position"] <= high)
            and (status is None or s["status"] == status)
            and (name is None or s["name"] == name)
        )
        page = queries.step_history(
            flow, from_position=low, to_position=high, status=status, name=name, offset=offset, limit=limit
        )
        assert [s.step_id for s in page.items] == [sid for _, sid in wanted[offset : offset + limit]]
        assert page.total == len(wanted)
        assert page.has_next == (offset + limit < len(wanted))


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(commands=history, data=st.data())
def test_the_command_line_says_what_the_reference_says(
    clocked: tuple[EventStore, list[datetime], Target], commands: list[tuple[str, Any]], data: st.DataObject
) -> None:
    store, now, target = clocked
    flow = f"cli{next(_examples)}"
    record(store, now, commands, flow)
    rows = raw_rows(store)
    mine = flow_rows(rows, flow)
    url = [
        "--url",
        target.url,
        *(["--schema", target.options["schema"]] if "schema" in target.options else []),
    ]
    runner = CliRunner()
    out = runner.invoke(main, [*url, "history", flow, "--json"])
    assert out.exit_code == 0, out.output
    lines = [orjson.loads(line) for line in out.output.splitlines()]
    assert [(x["revision"], x["type"], x["data"], x["actor"]) for x in lines] == [
        (r.revision, r.type, r.data, r.metadata.get("actor")) for r in mine
    ]
    revision = data.draw(st.integers(0, len(mine)))
    out = runner.invoke(main, [*url, "state", flow, "--at", str(revision), "--json"])
    assert out.exit_code == 0, out.output
    shown = orjson.loads(out.output)
    expected = plain(ref_fold(rows, flow, revision))
    if expected["flow"] is None:
        assert shown["flow"] is None
    else:
        assert {k: _time(shown["flow"][k]) for k in FLOW_FIELDS} == expected["flow"]
        keys = plain_step_keys()
        assert {sid: {k: _time(s[k]) for k in keys} for sid, s in shown["steps"].items()} == expected["steps"]
    a, b = data.draw(st.integers(0, len(mine))), data.draw(st.integers(0, len(mine)))
    out = runner.invoke(main, [*url, "diff", flow, str(a), str(b), "--json"])
    assert out.exit_code == 0, out.output
    shown = orjson.loads(out.output)
    assert [e["revision"] for e in shown["events"]] == list(range(min(a, b) + 1, max(a, b) + 1))
    before, after = _comparable(ref_fold(rows, flow, a)), _comparable(ref_fold(rows, flow, b))
    assert {(c["op"], c["path"]) for c in shown["changes"] if _compared(c["path"])} == ref_diff(before, after)
    out = runner.invoke(main, [*url, "audit", "--flow", flow, "--json"])
    audited = [r for r in mine if r.type in AUDITED]
    assert out.exit_code == 0, out.output
    entries = [orjson.loads(line) for line in out.output.splitlines()]
    assert [(x["revision"], x["type"], x["actor"]) for x in entries] == [
        (r.revision, r.type, ref_actor(r)) for r in audited
    ]
    assert entries == [orjson.loads(orjson.dumps(e.as_dict())) for e in audit_trail(store, flow_id=flow)]


def _check_flow(store: EventStore, rows: list[Row], flow: str) -> None:
    """Every revision's state, the audit trail and the steps of ``flow`` are the reference's."""
    owner, generation = None, 0  # docs/flows.md: a renewal keeps the generation, anyone else takes the next
    for row in flow_rows(rows, flow):
        if row.type == "LeaseAcquired":
            generation += 0 if row.data["owner_token"] == owner else 1
            owner = row.data["owner_token"]
            assert row.data["generation"] == generation, row
        elif row.type == "LeaseReleased":
            owner = None
    for revision in range(store.revision(flow) + 1):
        assert library(state_at(store, flow, revision=revision, snapshot_every=2)) == plain(
            ref_fold(rows, flow, revision)
        ), (flow, revision)
    _check_audit(store, rows, flow)
    steps = ref_fold(rows, flow).steps
    page = FlowQueries(store).step_history(flow, limit=1000)
    assert [s.step_id for s in page.items] == [
        sid for _, sid in sorted((s["position"], k) for k, s in steps.items())
    ]


def _logged(rows: list[Row]) -> list[tuple[Any, ...]]:
    """The log as a reader of one flow sees it: positions may change, nothing else."""
    return sorted((r.flow_id, r.revision, r.type, r.data, r.metadata, r.recorded_at) for r in rows)


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.generate],  # an example is slow: shrinking one would take minutes
)
@given(commands=history, more=history, data=st.data())
def test_reads_after_prune_restore_and_export_import_are_the_reference(
    clocked: tuple[EventStore, list[datetime], Target],
    tmp_path_factory: pytest.TempPathFactory,
    commands: list[tuple[str, Any]],
    more: list[tuple[str, Any]],
    data: st.DataObject,
) -> None:
    from eventstore.exchange import export_events, import_events
    from eventstore.retention import RetentionPolicy, restore, run_retention

    store, now, _ = clocked
    flow = f"kept{next(_examples)}"
    record(store, now, [*commands, ("finish", 0)], flow)
    fork(store, flow, at_revision=data.draw(st.integers(1, store.revision(flow))), new_flow_id=f"{flow}-b")
    recorder = Recorder(store, now)
    for op, arg in more:
        recorder.run(f"{flow}-b", op, arg)
    flows = [flow, f"{flow}-b"]
    state_at(store, flow, snapshot_every=2)  # snapshots and parts that retention must take along
    before = raw_rows(store)
    for name in flows:
        _check_flow(store, before, name)

    now[0] += timedelta(days=400)
    folder = tmp_path_factory.mktemp("archives")
    report = run_retention(
        store, RetentionPolicy(finished=timedelta(days=30), failed=timedelta(days=30)), folder
    )
    assert flow in report.pruned and report.archive_id is not None
    for name in flows:
        if name not in report.pruned:  # the fork, still running: folded from the rows it had
            for revision in range(store.revision(name) + 1):
                assert library(state_at(store, name, revision=revision)) == plain(
                    ref_fold(before, name, revision)
                )
    restore(store, report.archive_id)
    after = raw_rows(store)
    assert _logged(after) == _logged(
        [r for r in before if r.flow_id in flows] + [r for r in before if r.flow_id not in flows]
    )
    for name in flows:
        _check_flow(store, after, name)

    exported = tmp_path_factory.mktemp("export") / "all.jsonl"
    export_events(store, exported)
    with EventStore.open(
        f"sqlite:///{exported.parent / 'fresh.db'}", projections=[FlowProjection()]
    ) as fresh:
        import_events(fresh, exported)
        copied = raw_rows(fresh)
        assert _logged(copied) == _logged(after)
        for name in flows:
            _check_flow(fresh, copied, name)


@QUICK
@given(commands=history, more=history, again=history, data=st.data())
def test_forks_of_forks_replay_what_if_and_scoped_audits_are_the_reference(
    clocked: tuple[EventStore, list[datetime], Target],
    commands: list[tuple[str, Any]],
    more: list[tuple[str, Any]],
    again: list[tuple[str, Any]],
    data: st.DataObject,
) -> None:
    from eventstore.timetravel import replay, what_if

    store, now, _ = clocked
    flow = f"tree{next(_examples)}"
    session = f"sess-{flow}"
    recorder = Recorder(store, now)
    recorder.service.start_flow(flow, controller_id="c", goal="g", owner_session_key=session)
    names = [flow]
    for batch in (commands, more, again):
        for op, arg in batch:
            recorder.run(data.draw(st.sampled_from(names)), op, arg)
        origin = data.draw(st.sampled_from(names))
        child = f"{flow}-{len(names)}"
        now[0] += timedelta(seconds=1)
        fork(store, origin, at_revision=data.draw(st.integers(1, store.revision(origin))), new_flow_id=child)
        names.append(child)
    rows = raw_rows(store)
    for name in names:
        _check_flow(store, rows, name)
        mine = flow_rows(rows, name)
        start = data.draw(st.integers(1, len(mine) + 1))
        replayed = [
            (event.revision, library(view)) for event, view in replay(store, name, from_revision=start)
        ]
        assert replayed == [(r.revision, plain(ref_fold(rows, name, r.revision))) for r in mine[start - 1 :]]
        skipped_type = data.draw(
            st.sampled_from(sorted({r.type for r in mine if r.revision > 1} | {"Nothing"}))
        )
        kept = [r for r in rows if r.flow_id != name or r.type != skipped_type]
        assert library(what_if(store, name, without_types=[skipped_type])) == plain(ref_fold(kept, name))
    # the session's audit is every flow of the tree (a fork is owned by its origin's session)
    expected = [r for r in rows if r.flow_id in names and r.type in AUDITED]
    assert [(e.flow_id, e.revision) for e in audit_trail(store, session=session)] if expected else True
    if expected:
        assert [(e.flow_id, e.revision) for e in audit_trail(store, session=session)] == [
            (r.flow_id, r.revision) for r in expected
        ]
        times = sorted({r.recorded_at for r in expected})
        since, until = sorted((data.draw(st.sampled_from(times)), data.draw(st.sampled_from(times))))
        assert [
            (e.flow_id, e.revision) for e in audit_trail(store, session=session, since=since, until=until)
        ] == [(r.flow_id, r.revision) for r in expected if since <= r.recorded_at < until]
    # diff by times reads times as state_at does
    name = data.draw(st.sampled_from(names))
    mine = flow_rows(rows, name)
    moment = data.draw(st.sampled_from([r.recorded_at for r in mine]))
    prefix = next((r.revision - 1 for r in mine if r.recorded_at > moment), len(mine))
    result = diff(store, name, 0, moment)
    assert [e.revision for e in result.events] == list(range(1, prefix + 1))


def test_a_forks_gate_decision_names_no_opening_while_its_origin_is_pruned(
    clocked: tuple[EventStore, list[datetime], Target], tmp_path: Any
) -> None:
    """docs/audit.md: what the approver saw lives in the origin; pruned, it is not shown, restored it is."""
    from eventstore.retention import RetentionPolicy, restore, run_retention

    store, now, _ = clocked
    flows = FlowService(store)
    flows.start_flow("o", controller_id="c", goal="g", owner_session_key="s")
    flows.schedule_step("o", step_id="pay", name="pay", run_id="r")
    flows.open_gate("o", "pay", prompt="Pay $5?", options=[{"value": "y", "label": "Yes"}], actor="agent")
    fork(store, "o", at_revision=3, new_flow_id="b")
    flows.approve_gate("b", "pay", by="human:ann", selections=["y"])
    flows.cancel("o")

    def seen() -> tuple[Any, ...]:
        (entry,) = audit_trail(store, flow_id="b")
        return entry.actor, entry.prompt, len(entry.options), entry.opened_flow_id, entry.opened_revision

    assert seen() == ("human:ann", "Pay $5?", 1, "o", 3)
    now[0] += timedelta(days=60)
    report = run_retention(store, RetentionPolicy(cancelled=timedelta(days=30)), tmp_path / "archives")
    assert report.pruned == ("o",) and report.archive_id is not None
    assert seen() == ("human:ann", None, 0, None, None)
    restore(store, report.archive_id)
    assert seen() == ("human:ann", "Pay $5?", 1, "o", 3)


@SETTINGS
@given(commands=history, more=history, data=st.data())
def test_a_sessions_counts_and_activity_are_the_reference(
    clocked: tuple[EventStore, list[datetime], Target],
    commands: list[tuple[str, Any]],
    more: list[tuple[str, Any]],
    data: st.DataObject,
) -> None:
    store, now, _ = clocked
    flow = f"sess{next(_examples)}"
    session = f"s-{flow}"
    recorder = Recorder(store, now)
    for name, batch in ((flow, commands), (f"{flow}-2", more)):
        now[0] += timedelta(seconds=1)
        recorder.service.start_flow(name, controller_id="c", goal="g", owner_session_key=session)
        for op, arg in batch:
            recorder.run(name, op, arg)
    fork(store, flow, at_revision=data.draw(st.integers(1, store.revision(flow))), new_flow_id=f"{flow}-f")
    rows = [r for r in raw_rows(store) if r.flow_id in (flow, f"{flow}-2", f"{flow}-f")]
    got = FlowQueries(store).session(session)
    statuses = [ref_fold(rows, name).flow["status"] for name in (flow, f"{flow}-2", f"{flow}-f")]  # type: ignore[index]
    assert {s: getattr(got, s) for s in ("running", "waiting", "finished", "failed", "cancelled")} == {
        s: statuses.count(s) for s in ("running", "waiting", "finished", "failed", "cancelled")
    }
    assert got.event_count == len(rows)
    times = [r.recorded_at for r in rows]
    assert (got.first_activity_at, got.last_activity_at) == (min(times), max(times))
    owned = FlowQueries(store).flows(owner=session, limit=10)
    assert (
        sorted(f.flow_id for f in owned.items) == sorted({flow, f"{flow}-2", f"{flow}-f"})
        and owned.total == 3
    )


RAW = [  # (type, data) pairs; a NewEvent is made per append, each with its own id.
    # what a writer without the flow projection may append: the service's checks are skipped
    ("FlowStarted", {"controller_id": "c", "goal": "again", "owner_session_key": "other"}),
    ("Note", {"text": "outside the vocabulary"}),
    ("StepStarted", {"step_id": "step-9"}),
    ("StepScheduled", {"step_id": "step-0", "name": "tool-0", "run_id": "raw", "position": 1}),
    ("StepCompleted", {"step_id": "step-0", "result": {"raw": True}}),
    ("GateApproved", {"step_id": "step-1", "by": "human:eve", "selections": []}),
    ("FlowAdvanced", {"state_patch": {"x": {"deep": 1}}}),
]


@QUICK
@given(
    commands=st.lists(
        st.one_of(command, st.lists(st.sampled_from(RAW), min_size=1, max_size=2)), min_size=3, max_size=20
    ),
    early=st.lists(st.sampled_from(RAW[1:3]), max_size=2),
)
def test_what_a_writer_without_the_projection_appended_is_read_as_the_reference(
    target: Target, commands: list[Any], early: list[tuple[str, dict[str, Any]]]
) -> None:
    now = [T0]
    flow = f"bare{next(_examples)}"
    with target.open(projections=[FlowProjection()], clock=lambda: now[0]) as store, target.open() as bare:
        if early:  # events before the flow's start change nothing
            bare.append(flow, [NewEvent(*e) for e in early])
        recorder = Recorder(store, now)
        recorder.service.start_flow(flow, controller_id="c", goal="g", owner_session_key="s")
        for item in commands:
            if isinstance(item, list):
                bare.append(flow, [NewEvent(*e) for e in item])
            else:
                recorder.run(flow, *item)
        rows = raw_rows(store)
        head = store.revision(flow)
        for revision in range(head + 1):
            assert library(state_at(store, flow, revision=revision, snapshot_every=3)) == plain(
                ref_fold(rows, flow, revision)
            ), revision
        result = diff(store, flow, 0, head)
        assert {(c.op, c.path) for c in result.changes if _compared(c.path)} == ref_diff(
            _comparable(Ref()), _comparable(ref_fold(rows, flow))
        )
        _check_audit(store, rows, flow)
