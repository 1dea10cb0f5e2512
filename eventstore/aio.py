"""The store on asyncio: the same code, run natively over aiosqlite or psycopg's async connections.

    from eventstore.aio import AsyncEventStore

    async with await AsyncEventStore.open("postgresql+psycopg://...") as store:
        await store.append("flow-1", [NewEvent("FlowStarted", {...})])
        events = await store.read_flow("flow-1")

The store's code is written once, synchronously, on SQLAlchemy. An
``AsyncEventStore`` opens it on the sync face of an ``AsyncEngine``
(``create_async_engine(...).sync_engine``) and runs each call in
SQLAlchemy's greenlet bridge (what ``AsyncConnection.run_sync`` does): every
driver call inside awaits on the event loop, so a call never blocks the loop
and no worker thread is involved. Where the synchronous store takes a thread
lock across I/O (SQLite's one writer), the async one takes a ``LoopLock``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

from sqlalchemy.util import await_only, greenlet_spawn
from sqlalchemy.util.concurrency import in_greenlet

from .errors import InvalidInput, StorageError, StoreClosed
from .events import ANY, AppendResult, Event, ExpectedRevision, NewEvent, RecordedEvent

T = TypeVar("T")
_GREENLET = importlib.util.find_spec("greenlet") is not None

__all__ = ["AsyncEventStore", "LoopLock", "current_task", "pause", "run", "shielded"]


async def run(call: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run synchronous store code whose engine is an async engine's sync face, on this loop.

    A call that returns an iterator (``read_all``, ``audit_trail``, ...) is
    refused (``InvalidInput``): it would read the database as it is iterated,
    after ``run`` returned, where no database call can await. Consume it
    inside instead: ``run(lambda: list(store.read_all()))``.
    """
    if not callable(call):
        raise InvalidInput(f"run needs a function to call, not {call!r:.60}")
    if not _GREENLET:
        raise StorageError("eventstore.aio needs greenlet: pip install 'agent-eventstore[asyncio]'")
    result: T = await greenlet_spawn(_not_lazy, call, *args, **kwargs)
    return result


def _not_lazy(call: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``call(*args, **kwargs)``, unless it returns an iterator: that is closed unread, and refused."""
    result = call(*args, **kwargs)
    if inspect.iscoroutine(result):  # run is for synchronous code: left unawaited, it would do nothing
        result.close()
        name = getattr(call, "__qualname__", type(call).__name__)
        raise InvalidInput(
            f"{name} returned a coroutine: await it yourself; run is for synchronous store code"
        )
    if isinstance(result, Iterator):
        close = getattr(result, "close", None)
        if callable(close):  # a started generator's clean-up (say, of its connection) can await here
            close()
        name = getattr(call, "__qualname__", type(call).__name__)
        raise InvalidInput(
            f"{name} returned an iterator, which would read the database outside run (it reads as it is "
            "iterated): consume it inside, as in run(lambda: list(store.read_all()))"
        )
    return result


def pause(seconds: float) -> None:
    """Wait ``seconds`` in synchronous store code: under ``run`` the loop runs on meanwhile.

    A ``time.sleep`` there would stall every task on the loop (say, while a
    store opening on it waits for another process's rebuild).
    """
    if _GREENLET and in_greenlet():
        await_only(asyncio.sleep(seconds))
    else:
        time.sleep(seconds)


def shielded(call: Callable[[], T]) -> T:
    """``call()`` run to its end even if the task is cancelled meanwhile (under ``run``; else just called).

    For the clean-up after an interruption, such as rolling back and closing a
    connection a cancellation cut into: a second cancellation must not leave
    that half done. Under ``run`` the call runs as a task of its own, which
    this one waits for, whatever it is told; the caller then raises the
    interruption it is cleaning up after, so no cancellation is lost.
    """
    return to_the_end(call)[0]


def to_the_end(call: Callable[[], T]) -> tuple[T, bool]:
    """``call()`` run to its end as ``shielded`` does, and whether the task was cancelled meanwhile.

    The cancellation is the caller's to raise once the call is done (say, a
    read connection given back to the pool: its rollback-on-return awaits,
    and cut there SQLAlchemy would log an ERROR with a traceback).
    """
    if not (_GREENLET and in_greenlet()):
        return call(), False
    task = asyncio.ensure_future(greenlet_spawn(call))
    cancelled = False
    while not task.done():
        try:
            await_only(asyncio.wait([task]))
        except asyncio.CancelledError:
            cancelled = True  # the call still finishes first
    result: T = task.result()
    return result, cancelled


def current_task() -> object:
    """Who holds a ``LoopLock``: the asyncio task (inside ``run``, the task that awaits it)."""
    return asyncio.current_task()


class LoopLock:
    """A lock for synchronous code under ``run``: waiting for it awaits, so the loop runs on.

    A ``threading.Lock`` held across I/O there would stall the whole loop
    when a second task asked for it; this one queues the task instead.
    """

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    def __enter__(self) -> Self:
        await_only(self._lock.acquire())
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._lock.release()


class AsyncEventStore:
    """An ``EventStore`` for asyncio code (``store`` is the synchronous object, on the async driver).

    ``run(store.method, ...)`` runs any of its methods natively; ``append``,
    ``read_flow`` and ``close`` are here for convenience. Open one per event
    loop: its connections belong to the loop that made them, and another
    loop's calls are refused (``InvalidInput``).
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # made outside a loop: it belongs to the first one that uses it
            self._loop = None

    def _check_loop(self, *, closing: bool = False) -> None:
        """Refuse (``InvalidInput``) a call on another loop than this store's; ``close`` may be, once
        that loop has closed. A closed store is ``StoreClosed`` on any loop (``close`` a no-op).
        Its connections and SQLite's writer lock work on its loop only: used from another,
        appends failed with asyncio's RuntimeError, or waited for ever."""
        loop = asyncio.get_running_loop()
        if self._loop is None or (closing and self._loop.is_closed()):
            self._loop = loop
        if self._loop is not loop:
            if getattr(self.store, "_closed", False):  # closed is the whole answer, on any loop
                if closing:
                    return  # close stays idempotent
                raise StoreClosed("the store is closed")
            raise InvalidInput(
                "this AsyncEventStore belongs to the event loop that opened it, and this is another one: "
                "open one per loop (AsyncEventStore.open, or AsyncEventStore.like(store))"
            )

    @classmethod
    async def open(cls, url: str, **options: Any) -> AsyncEventStore:
        """``EventStore.open`` on the async driver (aiosqlite for SQLite, psycopg's async for PostgreSQL)."""
        from .store import EventStore

        if options.pop("asynchronous", True) is not True:
            raise InvalidInput(
                "AsyncEventStore.open is on the async driver: asynchronous must be True or left out"
            )
        return cls(await run(EventStore.open, url, asynchronous=True, **options))

    @classmethod
    async def like(cls, store: Any) -> AsyncEventStore:
        """The database ``store`` (an ``EventStore.open``-ed one, or an ``AsyncEventStore``) is on, with its
        options and projections."""
        from .store import EventStore

        if isinstance(store, AsyncEventStore):
            store = store.store
        if not isinstance(store, EventStore):
            raise InvalidInput(
                f"AsyncEventStore.like needs an EventStore or AsyncEventStore, not {type(store).__name__}"
            )
        options = {**store.opened_with(), "create": False, "asynchronous": True}
        return cls(await run(type(store).open, **options))

    async def run(self, call: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``call(*args, **kwargs)``, a method of ``store`` or code using it, on this loop.

        An iterator it returns is refused (``InvalidInput``, see ``run``):
        ``run(lambda: list(store.read_all()))`` reads it all on the loop.
        """
        self._check_loop()
        return await run(call, *args, **kwargs)

    async def append(
        self,
        flow_id: str,
        events: Sequence[Event | NewEvent],
        *,
        expected_revision: ExpectedRevision = ANY,
        metadata: Mapping[str, Any] | None = None,
    ) -> AppendResult:
        """``EventStore.append``."""
        return await self.run(
            self.store.append, flow_id, events, expected_revision=expected_revision, metadata=metadata
        )

    async def read_flow(self, flow_id: str, **options: Any) -> list[RecordedEvent]:
        """``EventStore.read_flow``, all of it."""
        return await self.run(lambda: list(self.store.read_flow(flow_id, **options)))

    async def close(self) -> None:
        """``EventStore.close``; on this store's loop, or any once that one has closed."""
        self._check_loop(closing=True)
        await run(self.store.close)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
