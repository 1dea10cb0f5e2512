"""The store and time travel against a tiny model of what docs/api.md and docs/timetravel.md promise.

A hypothesis state machine appends (alone and in transactions, with every kind
of expected revision), moves the injected clock both ways, forks, and after
each step compares the real store with a list-of-events model: revisions,
positions, ``read_flow`` ranges, ``read_all`` pages, ``state_at`` by revision
and by time (with and without snapshots), ``diff``, forks, and ``verify``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from eventstore import ANY, DuplicateEventId, EventStore, FlowExists, NewEvent, RevisionMismatch
from eventstore.events import FoldInput
from eventstore.flow_fold import FlowView, view_to_dict
from eventstore.timeline import StepSpan, timeline
from eventstore.timetravel import diff, diff_states, fork, replay, state_at, what_if

from .conftest import Target

FLOWS = ["a", "b", "c", "fork1", "fork2"]  # a fork goes to a new id, or to one taken: FlowExists
START = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
_runs = itertools.count()

new_event = st.one_of(
    st.builds(
        lambda goal, n: NewEvent(
            "FlowStarted", {"controller_id": "c", "goal": goal, "owner_session_key": "s", "state": {"n": n}}
        ),
        st.sampled_from(["g", "h"]),
        st.integers(0, 3),
    ),
    st.builds(
        lambda k, v: NewEvent("FlowAdvanced", {"current_step": k, "state_patch": {k: v}}),
        st.sampled_from("xyn"),
        st.one_of(st.none(), st.integers(0, 9)),
    ),
    st.builds(
        lambda kind, step: NewEvent(kind, {"step_id": step, "name": "t", "run_id": "r", "result": {"ok": 1}}),
        st.sampled_from(["StepScheduled", "StepStarted", "StepCompleted", "StepFailed", "StepRetried"]),
        st.sampled_from(["s0", "s1"]),
    ),
    st.builds(lambda kind: NewEvent(kind, {}), st.sampled_from(["Note", "FlowWaiting", "FlowResumed"])),
)
batch = st.lists(new_event, min_size=1, max_size=3)


@dataclass(frozen=True)
class Stored:
    """What the model knows of one event."""

    flow_id: str
    revision: int
    position: int
    type: str
    data: dict[str, Any]
    recorded_at: datetime


def _json(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value))


class StoreModel(RuleBasedStateMachine):
    """One example's flows (under a fresh prefix) on a store shared by the examples."""

    def __init__(self, store: EventStore, now: list[datetime]) -> None:
        super().__init__()
        self.store, self.now = store, now
        self.prefix = f"m{next(_runs)}-"
        self.base = store.last_position()  # earlier examples' events come before ours
        self.log: list[Stored] = []
        self.flows: dict[str, list[Stored]] = {}
        self.appended: list[tuple[str, list[NewEvent], Any, Any]] = []  # what a retry sends again

    # -- the model -------------------------------------------------------------

    def fid(self, name: str) -> str:
        return self.prefix + name

    def head(self, flow_id: str) -> int:
        return len(self.flows.get(flow_id, []))

    def record(self, flow_id: str, events: list[NewEvent], at: datetime) -> None:
        for event in events:
            revision = self.head(flow_id) + 1
            stored = Stored(
                flow_id, revision, self.base + len(self.log) + 1, event.type, _json(event.data), at
            )
            self.log.append(stored)
            self.flows.setdefault(flow_id, []).append(stored)

    def expected(self, names: list[str], pick: int) -> tuple[str, Any]:
        flow_id = self.fid(names[0]) if names else self.fid("a")
        head = self.head(flow_id)
        choices: list[Any] = [ANY, 0, head, head + 1, max(head - 1, 0)]
        return flow_id, choices[pick]

    def model_state(self, flow_id: str, revision: int) -> FlowView:
        view = FlowView()
        for e in self.flows[flow_id][:revision]:
            view.apply(FoldInput(e.flow_id, e.revision, e.type, e.data, e.recorded_at))
        return view

    def known(self) -> st.SearchStrategy[str]:
        return st.sampled_from(sorted(self.flows))

    # -- writes ----------------------------------------------------------------

    @rule(name=st.sampled_from(FLOWS), events=batch, pick=st.integers(0, 4))
    def append(self, name: str, events: list[NewEvent], pick: int) -> None:
        flow_id, expected = self.expected([name], pick)
        head, last = self.head(flow_id), self.store.last_position()
        ok = expected is ANY or expected == head
        if not ok:
            with pytest.raises(RevisionMismatch) as stale:
                self.store.append(flow_id, events, expected_revision=expected)
            assert (stale.value.expected, stale.value.actual) == (expected, head)
            assert self.store.last_position() == last
            return
        result = self.store.append(flow_id, events, expected_revision=expected)
        self.record(flow_id, events, self.now[0])
        self.appended.append((flow_id, events, expected, result))
        assert result.revision == head + len(events) and result.first_revision == head + 1
        assert result.positions == tuple(range(last + 1, last + 1 + len(events)))
        assert result.event_ids == tuple(e.event_id for e in events)

    @rule(
        parts=st.lists(
            st.tuples(st.sampled_from(FLOWS), batch, st.sampled_from([0, 1, 2, 4])), min_size=1, max_size=3
        )
    )
    def transaction(self, parts: list[tuple[str, list[NewEvent], int]]) -> None:
        last = self.store.last_position()
        heads = {f: self.head(f) for f in self.flows}
        planned: list[tuple[str, list[NewEvent], Any]] = []
        stale = False
        for name, events, pick in parts:
            flow_id = self.fid(name)
            head = heads.get(flow_id, 0)
            expected = [ANY, 0, head, max(head - 1, 0), head + 1][pick]
            stale = stale or not (expected is ANY or expected == head)
            planned.append((flow_id, events, expected))
            heads[flow_id] = head + len(events) if not stale else head
        if stale:
            with pytest.raises(RevisionMismatch), self.store.transaction() as tx:
                for flow_id, events, expected in planned:
                    tx.append(flow_id, events, expected_revision=expected)
            assert self.store.last_position() == last
            return
        with self.store.transaction() as tx:
            for flow_id, events, expected in planned:
                tx.append(flow_id, events, expected_revision=expected)
                self.record(flow_id, events, self.now[0])
                assert tx.revision(flow_id) == self.head(flow_id)

    @precondition(lambda self: bool(self.appended))
    @rule(data=st.data(), any_revision=st.booleans())
    def retry(self, data: st.DataObject, any_revision: bool) -> None:
        """An append sent again (a lost reply) is answered from the log and writes nothing."""
        flow_id, events, expected, first = data.draw(st.sampled_from(self.appended))
        last = self.store.last_position()
        again = self.store.append(flow_id, events, expected_revision=ANY if any_revision else expected)
        assert again == first and self.store.last_position() == last

    @rule(
        seconds=st.sampled_from([-90, -1, 0, 1, 30, 3600]),
        micros=st.sampled_from([0, 1, 999_999]),
        zone=st.sampled_from([0, 5, -11, 14]),
    )
    def tick(self, seconds: int, micros: int, zone: int) -> None:
        """The clock moves on, or steps back as an NTP correction does, in any zone."""
        moved = self.now[0] + timedelta(seconds=seconds, microseconds=micros)
        self.now[0] = moved.astimezone(timezone(timedelta(hours=zone)))

    @rule(size=st.sampled_from([1, 2, 3, 1000]))
    def page_size(self, size: int) -> None:
        """Streaming reads fetch this many rows a query; no answer may depend on it."""
        self.store.page_size = size

    @precondition(lambda self: bool(self.appended))
    @rule(data=st.data(), name=st.sampled_from(FLOWS))
    def reuse_an_event_id(self, data: st.DataObject, name: str) -> None:
        """An id stored already, in another append: DuplicateEventId or a retry's answer, never a write."""
        _, events, _, _ = data.draw(st.sampled_from(self.appended))
        last = self.store.last_position()
        reused = NewEvent("Note", {"other": True}, event_id=events[0].event_id)
        with pytest.raises((DuplicateEventId, RevisionMismatch)):
            self.store.append(self.fid(name), [reused], expected_revision=self.head(self.fid(name)))
        assert self.store.last_position() == last

    @precondition(lambda self: any(self.model_state(f, len(e)).flow for f, e in self.flows.items()))
    @rule(data=st.data(), name=st.sampled_from(FLOWS[3:]))
    def fork(self, data: st.DataObject, name: str) -> None:
        """Fork a started flow (a fork too) at a revision where it had started."""
        flow_id = data.draw(
            st.sampled_from(sorted(f for f in self.flows if self.model_state(f, 1 << 30).flow))
        )
        first = next(e.revision for e in self.flows[flow_id] if self.model_state(flow_id, e.revision).flow)
        at = data.draw(st.integers(first, self.head(flow_id)))
        new_id, last = self.fid(name), self.store.last_position()
        if new_id in self.flows:
            with pytest.raises(FlowExists):
                fork(self.store, flow_id, at_revision=at, new_flow_id=new_id)
            assert self.store.last_position() == last
            return
        fork(self.store, flow_id, at_revision=at, new_flow_id=new_id)
        (forked,) = self.store.read_flow(new_id)
        assert (forked.type, forked.position, forked.recorded_at) == ("FlowForked", last + 1, self.now[0])
        assert forked.data["origin_flow_id"] == flow_id and forked.data["origin_revision"] == at
        (origin,) = self.store.read_flow(flow_id, from_revision=at, to_revision=at)
        assert forked.data["origin_hash"] == origin.hash
        assert forked.data["snapshot"] == _json(view_to_dict(self.model_state(flow_id, at)))
        self.record(new_id, [NewEvent("FlowForked", forked.data)], self.now[0])

    # -- reads -----------------------------------------------------------------

    @precondition(lambda self: bool(self.flows))
    @rule(
        data=st.data(),
        low=st.one_of(st.integers(1, 12), st.sampled_from([2**31 - 1, 2**31, 2**63 - 1])),
        span=st.one_of(st.none(), st.integers(0, 12), st.sampled_from([2**31, 2**63 - 1])),
        backwards=st.booleans(),
        limit=st.one_of(st.none(), st.integers(0, 5)),
    )
    def read_flow(
        self, data: st.DataObject, low: int, span: int | None, backwards: bool, limit: int | None
    ) -> None:
        flow_id = data.draw(self.known())
        high = None if span is None else min(low + span - 1, 2**63 - 1)
        want = [e for e in self.flows[flow_id] if low <= e.revision and (high is None or e.revision <= high)]
        want = want[::-1] if backwards else want
        want = want if limit is None else want[:limit]
        got = self.store.read_flow(
            flow_id, from_revision=low, to_revision=high, backwards=backwards, limit=limit
        )
        assert [(e.revision, e.position, e.type, e.data) for e in got] == [
            (e.revision, e.position, e.type, e.data) for e in want
        ]

    @rule(
        page=st.integers(1, 4),
        types=st.one_of(
            st.none(),
            st.lists(
                st.sampled_from(["Note", "StepStarted", "FlowStarted", "FlowForked"]), min_size=1, max_size=2
            ),
        ),
    )
    def read_all_in_pages(self, page: int, types: list[str] | None) -> None:
        after, seen = self.base, []
        while True:
            chunk = list(self.store.read_all(after_position=after, limit=page, types=types))
            assert len(chunk) <= page
            if not chunk:
                break
            seen.extend(chunk)
            after = chunk[-1].position
        want = [e for e in self.log if types is None or e.type in types]
        assert [(e.position, e.flow_id, e.revision, e.type) for e in seen] == [
            (e.position, e.flow_id, e.revision, e.type) for e in want
        ]

    @precondition(lambda self: bool(self.flows))
    @rule(data=st.data(), every=st.sampled_from([0, 1, 2, 3, 1000]))
    def state_at_revision(self, data: st.DataObject, every: int) -> None:
        flow_id = data.draw(self.known())
        revision = data.draw(st.integers(0, self.head(flow_id)))
        got = state_at(self.store, flow_id, revision=revision, snapshot_every=every)
        assert view_to_dict(got) == view_to_dict(self.model_state(flow_id, revision))

    @precondition(lambda self: bool(self.flows))
    @rule(
        data=st.data(),
        offset=st.integers(-120, 4000),
        micros=st.sampled_from([0, 1, -1]),
        zone=st.sampled_from([0, 3, -8]),
        every=st.sampled_from([0, 2]),
    )
    def state_at_time(self, data: st.DataObject, offset: int, micros: int, zone: int, every: int) -> None:
        flow_id = data.draw(self.known())
        at = (self.now[0] - timedelta(seconds=offset, microseconds=micros)).astimezone(
            timezone(timedelta(hours=zone))
        )
        revision = self.revision_at(flow_id, at)
        got = state_at(self.store, flow_id, at=at, snapshot_every=every)
        assert view_to_dict(got) == view_to_dict(self.model_state(flow_id, revision))

    @precondition(lambda self: bool(self.flows))
    @rule(data=st.data(), low=st.integers(1, 6), span=st.one_of(st.none(), st.integers(0, 6)))
    def read_for_fold(self, data: st.DataObject, low: int, span: int | None) -> None:
        flow_id = data.draw(self.known())
        high = None if span is None else low + span - 1
        got = self.store.read_for_fold(flow_id=flow_id, from_revision=low, to_revision=high)
        want = [e for e in self.flows[flow_id] if low <= e.revision and (high is None or e.revision <= high)]
        assert [(e.revision, e.type, e.data, e.recorded_at) for e in got] == [
            (e.revision, e.type, e.data, e.recorded_at) for e in want
        ]

    @rule(after=st.sampled_from([None, "", "a", "b", "fork1"]), limit=st.one_of(st.none(), st.integers(0, 3)))
    def flows_in_order(self, after: str | None, limit: int | None) -> None:
        start = self.prefix if after is None or after == "" else self.fid(after)
        got = list(self.store.flows(after=start, limit=12))  # later examples' flows sort after ours
        mine = [f for f in got if f.startswith(self.prefix)]
        assert mine == sorted(f for f in self.flows if f > start)
        assert list(self.store.flows(after=start, limit=limit))[:12] == (
            got if limit is None else got[:limit]
        )

    @rule(past=st.integers(0, 3), single=st.sampled_from(["Note", "FlowForked"]))
    def read_all_from_the_end(self, past: int, single: str) -> None:
        end = self.base + len(self.log)
        assert list(self.store.read_all(after_position=end + past)) == []
        got = [e.position for e in self.store.read_all(after_position=self.base, types=single)]
        assert got == [e.position for e in self.log if e.type == single]

    @precondition(lambda self: bool(self.flows))
    @rule(data=st.data())
    def replay_from(self, data: st.DataObject) -> None:
        flow_id = data.draw(self.known())
        start = data.draw(st.integers(1, self.head(flow_id) + 1))
        for event, view in replay(self.store, flow_id, from_revision=start):
            assert view_to_dict(view) == view_to_dict(self.model_state(flow_id, event.revision))

    @precondition(lambda self: bool(self.flows))
    @rule(
        data=st.data(), types=st.lists(st.sampled_from(["FlowAdvanced", "StepStarted", "Note"]), max_size=2)
    )
    def what_if_without(self, data: st.DataObject, types: list[str]) -> None:
        flow_id = data.draw(self.known())
        head = self.head(flow_id)
        skip = data.draw(st.lists(st.integers(1, head), max_size=2))
        until = data.draw(st.one_of(st.none(), st.integers(0, head)))
        want = FlowView()
        for e in self.flows[flow_id][:until]:
            if e.revision not in skip and e.type not in types:
                want.apply(FoldInput(e.flow_id, e.revision, e.type, e.data, e.recorded_at))
        got = what_if(self.store, flow_id, without_revisions=skip, without_types=types, until=until)
        assert view_to_dict(got) == view_to_dict(want)

    @precondition(lambda self: bool(self.flows))
    @rule(data=st.data())
    def timeline_covers_the_history(self, data: st.DataObject) -> None:
        flow_id = data.draw(self.known())
        line = timeline(self.store.read_flow(flow_id))
        revisions = [e.revision for i in line.items for e in (i.events if isinstance(i, StepSpan) else [i])]
        assert sorted(revisions) == list(range(1, self.head(flow_id) + 1))
        assert view_to_dict(FlowView(flow=line.flow)) == view_to_dict(
            FlowView(flow=self.model_state(flow_id, self.head(flow_id)).flow)
        )

    @precondition(lambda self: bool(self.flows))
    @rule(data=st.data(), by_time=st.booleans())
    def diff_revisions(self, data: st.DataObject, by_time: bool) -> None:
        flow_id = data.draw(self.known())
        a = data.draw(st.integers(0, self.head(flow_id)))
        b = data.draw(st.integers(0, self.head(flow_id)))
        if by_time:  # the time of the event at a revision names the last revision recorded by then
            times = [self.time_of(flow_id, point) for point in (a, b)]
            a, b = (self.revision_at(flow_id, at) for at in times)
            result = diff(self.store, flow_id, *times)
        else:
            result = diff(self.store, flow_id, a, b)
        low, high = sorted((a, b))
        assert [e.revision for e in result.events] == list(range(low + 1, high + 1))
        want = diff_states(self.model_state(flow_id, a), self.model_state(flow_id, b))
        key = lambda c: (c.path, c.op)  # noqa: E731 - a sort key
        assert sorted(result.changes, key=key) == sorted(want, key=key)

    def time_of(self, flow_id: str, revision: int) -> datetime:
        events = self.flows[flow_id]
        return events[revision - 1].recorded_at if revision else events[0].recorded_at - timedelta(seconds=1)

    def revision_at(self, flow_id: str, at: datetime) -> int:
        """The events up to the first one recorded after ``at`` (timetravel.md)."""
        later = [e.revision for e in self.flows[flow_id] if e.recorded_at > at]
        return later[0] - 1 if later else len(self.flows[flow_id])

    # -- after every step --------------------------------------------------------

    @invariant()
    def revisions_and_positions(self) -> None:
        assert self.store.last_position() == self.base + len(self.log)
        for flow_id, events in self.flows.items():
            assert self.store.revision(flow_id) == len(events)

    @invariant()
    def verifies(self) -> None:
        """Each of this example's chains (the whole log once the test is over)."""
        for flow_id in self.flows:
            assert self.store.verify(flow_id).ok


@pytest.fixture
def clocked(target: Target) -> Iterator[tuple[EventStore, list[datetime]]]:
    now = [START]
    with target.open(clock=lambda: now[0]) as store:
        yield store, now


def _run(clocked: tuple[EventStore, list[datetime]], examples: int, steps: int) -> None:
    store, now = clocked

    def machine() -> StoreModel:
        now[0] = START + timedelta(days=next(_runs))  # each example's times after the last one's
        store.page_size = 1000
        return StoreModel(store, now)

    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
    assert store.verify().ok


def test_the_store_keeps_the_promises_of_its_docs(clocked: tuple[EventStore, list[datetime]]) -> None:
    _run(clocked, examples=40, steps=25)


@pytest.mark.slow
def test_the_store_keeps_the_promises_of_its_docs_at_length(
    clocked: tuple[EventStore, list[datetime]],
) -> None:
    _run(clocked, examples=200, steps=40)
