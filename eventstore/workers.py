"""Worker threads for asyncio code that calls the synchronous store: the last thread to finish goes next.

``asyncio.to_thread`` hands each call to the loop's default executor, whose
threads all wait on one queue: a caller's successive calls go round them
(a worker says it is idle only after handing its result back, so the next
call often finds none idle and starts a spare one), and each hand-over
wakes a thread that has slept the longest. ``Workers`` gives a call to the
thread that finished last, idle before its result goes back: a caller
awaiting one call after another keeps one thread, as aiosqlite's thread per
connection does, often still awake, while concurrent calls still get a
thread each, up to ``max_threads``. The result goes straight to the caller's
loop (``call_soon_threadsafe``), with no ``concurrent.futures.Future`` between.

As with ``to_thread``: the call sees the caller's context variables; a call
cancelled before a thread takes it never runs, and one cancelled while it
runs ends in its thread, its outcome dropped. Unlike the default executor's,
the threads are daemons: the end of ``asyncio.run`` does not wait for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar, cast

T = TypeVar("T")

_Call = tuple["asyncio.Future[Any]", contextvars.Context, Callable[[], Any]]
_Inbox = queue.SimpleQueue[_Call | None]
_IDLE = cast(_Call, object())
"""What ``Workers._next`` gives a thread that is to wait in its inbox for a call."""


class Workers:
    """Threads that run calls for any event loop; ``close`` ends them, and later calls start new ones.

    A thread idle for ``idle_seconds`` ends: a pool no one closes keeps no
    thread alive for long.
    """

    def __init__(
        self, *, name: str = "eventstore-worker", max_threads: int | None = None, idle_seconds: float = 10.0
    ) -> None:
        self.name = name
        self.max_threads = max_threads or min(32, (os.cpu_count() or 1) + 4)
        self.idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._idle: list[_Inbox] = []
        """The idle threads' inboxes, the one idle the shortest last."""
        self._waiting: deque[_Call] = deque()
        """Calls that came when every thread was busy and no more could start."""
        self._threads = 0
        self._closed = False

    async def run(self, call: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``call(*args, **kwargs)`` in a worker thread."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        item: _Call = (future, contextvars.copy_context(), functools.partial(call, *args, **kwargs))
        with self._lock:
            start = not self._idle and self._threads < self.max_threads
            if self._idle:
                self._idle.pop().put(item)
            elif start:
                self._threads += 1
            else:
                self._waiting.append(item)
        if start:
            try:
                threading.Thread(target=self._work, args=(item,), name=self.name, daemon=True).start()
            except BaseException:
                with self._lock:
                    self._threads -= 1
                raise
        return await future

    def close(self) -> None:
        """End the idle threads now, and the busy ones once they are done (after the waiting calls)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._threads -= len(idle)
        for inbox in idle:
            inbox.put(None)

    def _work(self, item: _Call | None) -> None:
        inbox: _Inbox = queue.SimpleQueue()
        while item is not None:
            outcome = _call(item)
            # Idle (or on to the next call) before the caller hears back: its next call, made as soon
            # as it does, finds this thread, and no other starts for it.
            item = self._next(inbox)
            if outcome is not None:
                outcome()
            if item is _IDLE:
                item = self._wait(inbox)

    def _next(self, inbox: _Inbox) -> _Call | None:
        """A waiting call, or ``_IDLE`` once the thread is idle, or ``None`` when it is to end."""
        with self._lock:
            if self._waiting:
                return self._waiting.popleft()
            if self._closed:  # closed while busy; calls made after close get a thread each
                self._threads -= 1
                return None
            self._idle.append(inbox)
            return _IDLE

    def _wait(self, inbox: _Inbox) -> _Call | None:
        """The call an idle thread is handed, or ``None`` when it is to end."""
        try:
            return inbox.get(timeout=self.idle_seconds)
        except queue.Empty:
            with self._lock:
                if inbox in self._idle:  # not handed a call as the wait ended
                    self._idle.remove(inbox)
                    self._threads -= 1
                    return None
            return inbox.get()  # it was: the call is in the inbox already


def _call(item: _Call) -> Callable[[], None] | None:
    """Run the call; what then hands its outcome to the caller's loop (``None`` if it was cancelled)."""
    future, context, call = item
    if future.cancelled():  # before it started: it never runs
        return None
    try:
        result = context.run(call)
    except BaseException as exc:  # the caller's to handle, as to_thread hands it back
        return functools.partial(_settle, future, future.set_exception, exc)
    return functools.partial(_settle, future, future.set_result, result)


def _settle(future: asyncio.Future[Any], how: Callable[[Any], None], value: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the caller's loop has closed: no one awaits the outcome
        future.get_loop().call_soon_threadsafe(_set, future, how, value)


def _set(future: asyncio.Future[Any], how: Callable[[Any], None], value: Any) -> None:
    if not future.done():  # the caller was cancelled meanwhile
        how(value)
