"""Following the log live: new events as they are committed, by polling.

Positions are handed out in commit order, so a follower that remembers the
last position it saw never misses an event (docs/design.md).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

from .checks import check_count
from .errors import InvalidInput
from .events import RecordedEvent
from .store import EventStore


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

    ``flow_id`` follows one flow, ``types`` some event types. Between polls
    that find nothing it waits ``poll_interval`` seconds; with
    ``stop_when_idle`` it returns at the first such poll instead. Setting
    ``stop`` (from another thread, or a signal handler) ends it at the next
    poll, or at once while it waits.
    """
    if not isinstance(poll_interval, int | float) or not 0 < poll_interval <= 3600:
        raise InvalidInput(f"poll_interval must be a number of seconds in (0, 3600], not {poll_interval!r}")
    if after_position is not None:
        check_count("after_position", after_position)
    wanted = None if types is None else frozenset([types] if isinstance(types, str) else types)
    return _follow(
        store, after_position, flow_id, wanted, poll_interval, stop_when_idle, stop or threading.Event()
    )


def _follow(
    store: EventStore,
    after: int | None,
    flow_id: str | None,
    wanted: frozenset[str] | None,
    interval: float,
    stop_when_idle: bool,
    stop: threading.Event,
) -> Iterator[RecordedEvent]:
    position = store.last_position() if after is None else after
    # One flow is read by revision (its own index); a revision's position only grows with it.
    revision = store.revision(flow_id) if flow_id is not None and after is None else 0
    while not stop.is_set():
        found = False
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
        if not found and (stop_when_idle or stop.wait(interval)):
            return
