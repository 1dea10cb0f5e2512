"""Following the log live: new events as they are committed, by polling.

Positions are handed out in commit order, so a follower that remembers the
last position it saw never misses an event (docs/design.md).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

from .checks import check_count, check_type_names
from .errors import FlowArchived, InvalidInput, PositionPastEnd
from .events import RecordedEvent
from .preparation import check_flow_id
from .store import EventStore
from .tombstones import flow_not_found


def follow(
    store: EventStore,
    *,
    after_position: int | None = None,
    flow_id: str | None = None,
    types: Iterable[str] | None = None,
    poll_interval: float = 0.5,
    stop_when_idle: bool = False,
    stop: threading.Event | None = None,
) -> Iterator[RecordedEvent]:
    """Events after ``after_position`` (default: the end of the log now), then each new one as it commits.

    "Now" is when ``follow`` is called, not when the iterator is first
    read: an event committed in between is yielded. ``flow_id`` follows one
    flow (by default from its revision at the call), ``types`` some event types. Between polls
    that find nothing it waits ``poll_interval`` seconds; with
    ``stop_when_idle`` it returns at the first such poll instead. Setting
    ``stop``, a ``threading.Event`` (from another thread, or a signal handler), ends it at the next
    poll, or at once while it waits. A flow not started yet is waited for;
    one retention pruned is ``FlowArchived`` (at once, or at the first poll
    after the prune), as no event can come. An ``after_position`` past the
    end of the log is ``PositionPastEnd`` (a mistyped position, or a store
    restored from an older backup): it would wait silently, then skip the
    events up to it. So is an empty ``types`` (``InvalidInput``): nothing
    would ever come.
    """
    if (
        not isinstance(poll_interval, int | float)
        or isinstance(poll_interval, bool)
        or not 0 < poll_interval <= 3600
    ):
        raise InvalidInput(f"poll_interval must be a number of seconds in (0, 3600], not {poll_interval!r}")
    if type(stop_when_idle) is not bool:  # a truthy "no" would stop a follower meant to run on
        raise InvalidInput(f"stop_when_idle must be True or False, not {stop_when_idle!r}")
    if after_position is not None:
        check_count("after_position", after_position)
        last = store.last_position()
        if after_position > last:  # would wait silently, then skip the events up to it as they came
            raise PositionPastEnd("after_position", after_position, last)
    if flow_id is not None:
        check_flow_id(flow_id)
    wanted = None if types is None else frozenset(check_type_names("types", types))
    if wanted is not None and not wanted:  # read_all's "none of these" would be a wait for ever
        raise InvalidInput("types must name at least one event type: with none, nothing would ever come")
    if stop is not None and not isinstance(stop, threading.Event):  # asyncio.Event().wait() is never false
        raise InvalidInput(f"stop must be a threading.Event, not {type(stop).__name__}")
    # Where to start is read now, not at the first next(): "the end of the log now" means now.
    head = None if flow_id is None else store.revision(flow_id)
    if flow_id is not None and head == 0:
        missing = flow_not_found(store, flow_id)
        if isinstance(missing, FlowArchived):  # pruned: no event can come (appends are refused), so no wait
            raise missing
    if after_position is not None:
        position, revision = after_position, 0
    elif head is None:
        position, revision = store.last_position(), 0
    else:  # one read: a flow's revision alone says where it ends (a position read apart could race it)
        position, revision = 0, head
    return _follow(
        store, position, revision, flow_id, wanted, poll_interval, stop_when_idle, stop or threading.Event()
    )


def _follow(
    store: EventStore,
    position: int,
    revision: int,
    flow_id: str | None,
    wanted: frozenset[str] | None,
    interval: float,
    stop_when_idle: bool,
    stop: threading.Event,
) -> Iterator[RecordedEvent]:
    # One flow is read by revision (its own index); a revision's position only grows with it.
    while not stop.is_set():
        found = False
        seen = revision
        if flow_id is None:
            events = store.read_all(after_position=position, types=wanted)
        else:
            events = store.read_flow(flow_id, from_revision=revision + 1)
        for event in events:  # streamed in pages: a follower from position 0 holds one page
            revision = event.revision
            if event.position <= position or (wanted is not None and event.type not in wanted):
                continue
            position = event.position
            found = True
            yield event
        if flow_id is not None and revision == seen > 0 and store.revision(flow_id) == 0:
            raise flow_not_found(store, flow_id)  # pruned while followed: nothing more can come
        if not found and (stop_when_idle or stop.wait(interval)):
            return
