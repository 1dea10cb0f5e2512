"""``EventStoreSaver``: opening and closing the saver, and its async methods.

The sync methods are ``SyncSaver``'s (``sync``) and ``RetentionSaver``'s
(``retention``); the async ones run them natively on the event loop
(``eventstore.aio``), or in a worker thread of the saver's own
(``eventstore.workers``).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import copy
import inspect
import threading
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata, CheckpointTuple
from langgraph.checkpoint.serde.base import SerializerProtocol

from ...aio import AsyncEventStore, LoopLock
from ...aio import run as aio_run
from ...errors import InvalidInput, ProjectionError, StoreClosed
from ...store import EventStore
from ...workers import Workers
from .retention import RetentionSaver

if TYPE_CHECKING:
    from projections.flow_queries import Page
    from projections.langgraph import LangGraphProjection
    from projections.langgraph_queries import LangGraphQueries, ThreadInfo

DEFAULT_ACTOR = "langgraph"
DEFAULT_MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
T = TypeVar("T")


class Done:
    """What ``EventStoreSaver.setup`` returns: its work is done, and awaiting it waits for nothing."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return
        yield  # a generator that ends at once: `await` gives None without suspending


class EventStoreSaver(RetentionSaver):
    """A LangGraph checkpointer on an ``EventStore`` (SQLite or PostgreSQL), sync and async.

    ``store`` must have been opened with ``projections=[LangGraphProjection()]``
    (``from_url`` does that). ``actor`` is who the events name when a call's
    config does not: ``config["configurable"]["actor"]``, else
    ``config["metadata"]["actor"]``, else this.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        actor: str = DEFAULT_ACTOR,
        serde: SerializerProtocol | None = None,
        async_driver: bool | None = None,
    ) -> None:
        super().__init__(serde=serde)
        from projections.langgraph import LangGraphProjection
        from projections.langgraph_queries import LangGraphQueries

        if not any(isinstance(p, LangGraphProjection) for p in store.projections):
            raise ProjectionError(
                "the store must be opened with projections=[LangGraphProjection()] "
                "(from projections.langgraph), or use EventStoreSaver.from_url"
            )
        if not isinstance(actor, str) or not actor:
            raise InvalidInput("actor must be a non-empty string")
        self.store = store
        self.actor = actor
        self._queries: LangGraphQueries = LangGraphQueries()
        self._owns_store = False
        self._flow_locks: builtins.list[threading.Lock | LoopLock] = [threading.Lock() for _ in range(64)]
        self._views: dict[asyncio.AbstractEventLoop, asyncio.Task[EventStoreSaver]] = {}
        """This saver on each loop that has used it, opened or still opening (``_on_loop``)."""
        self._opened: dict[asyncio.AbstractEventLoop, EventStoreSaver] = {}
        """The views whose connections are open: the ones ``close`` must close."""
        self._views_lock = threading.Lock()
        self._closed = False
        self._calls = 0
        """A view's calls under way on its loop (``_calling``): ``aclose`` waits for them."""
        self._idle = asyncio.Event()
        self._idle.set()
        self._closes_itself = False
        """Closed while calls were under way on this view: the last of them closes its connections."""
        if async_driver not in (None, True, False):
            raise InvalidInput("async_driver must be True, False or None")
        self.async_driver = store.dialect == "postgresql" if async_driver is None else async_driver
        """The async methods run on the async driver (``eventstore.aio``), or else in a worker thread."""
        self._workers = Workers(name="EventStoreSaver worker")
        """The worker threads, without the async driver: a caller's successive calls keep one thread."""

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        actor: str = DEFAULT_ACTOR,
        serde: SerializerProtocol | None = None,
        async_driver: bool | None = None,
        create: bool = True,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        projections: Sequence[LangGraphProjection] = (),
        **options: Any,
    ) -> EventStoreSaver:
        """Open a store by URL with the LangGraph read model; closing the saver closes it.

        ``create`` creates or upgrades the schema (on PostgreSQL too, unlike
        ``EventStore.open``). ``max_payload_bytes`` bounds one event: the
        values that changed in one step. Other ``options`` go to
        ``EventStore.open`` (``schema``, ``pool_size``, ``synchronous``...).
        """
        from projections.langgraph import LangGraphProjection

        if isinstance(projections, str) or not isinstance(projections, Sequence):
            raise InvalidInput(f"projections must be a list of projections, not {projections!r:.60}")
        known = [name for name in inspect.signature(EventStore.open).parameters if name != "url"]
        if unknown := sorted(set(options) - set(known)):
            raise InvalidInput(
                f"unknown option {', '.join(map(repr, unknown))} for EventStoreSaver.from_url; "
                f"besides its own, it takes EventStore.open's: {', '.join(known)}"
            )
        store = EventStore.open(
            url,
            create=create,
            max_payload_bytes=max_payload_bytes,
            projections=[*projections, LangGraphProjection()],
            **options,
        )
        try:
            saver = cls(store, actor=actor, serde=serde, async_driver=async_driver)
        except BaseException:
            store.close()
            raise
        saver._owns_store = True
        return saver

    def setup(self) -> Done:
        """Create or upgrade the schema (what ``PostgresSaver.setup`` does; ``from_url`` already did).

        Done when it returns, and awaitable as well: the async savers' ``setup`` is a
        coroutine, so code moved from them keeps its ``await saver.setup()``.
        """
        self.store.upgrade()
        return Done()

    def close(self) -> None:
        """Close the store if this saver opened it (``from_url``), any async connections, its worker threads.

        From then on its async methods raise ``StoreClosed``. Calls under
        way on a loop (in another thread, say) are not cut short: they end on
        their connections, and the last of them closes that loop's
        connections. The others are closed on an event loop of their own (in
        a short-lived thread); from async code, ``await aclose()`` (or
        ``async with``) closes them on its loop after its calls.
        """
        with self._views_lock:
            self._closed = True
            opened, self._opened, self._views = list(self._opened.values()), {}, {}
            views = [view for view in opened if not view._calls]
            for view in opened:
                view._closes_itself = view._calls > 0
        if views:
            closing = threading.Thread(target=asyncio.run, args=(self._close_views(views),))
            closing.start()
            closing.join()
        self._workers.close()
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- async: the same methods, natively on the event loop -----------------------------
    async def _on_loop(self) -> EventStoreSaver:
        """This saver on the async driver, for the running loop (``eventstore.aio``).

        Opened on first use in a loop: its connections belong to that loop,
        and each running loop has its own. The views of loops closed since are
        closed when a new loop opens one. Appends to one flow take turns on a
        ``LoopLock``.
        """
        loop = asyncio.get_running_loop()
        with self._views_lock:
            if self._closed:
                raise StoreClosed("this saver is closed; open a new one")
            task = self._views.get(loop)
            if task is None:
                ended = [self._opened.pop(old) for old in list(self._opened) if old.is_closed()]
                for old in [old for old in self._views if old.is_closed()]:
                    del self._views[old]
                task = self._views[loop] = loop.create_task(self._open_on_loop(ended))
        # Shielded: a caller cancelled while the connections open must not cancel the others' wait.
        return await asyncio.shield(task)

    async def _open_on_loop(self, ended: Sequence[EventStoreSaver]) -> EventStoreSaver:
        loop = asyncio.get_running_loop()
        try:
            await self._close_views(ended)
            opened = await AsyncEventStore.like(self.store)
        except BaseException:
            with self._views_lock:
                if self._views.get(loop) is asyncio.current_task():
                    del self._views[loop]  # the next call tries again
            raise
        view = copy.copy(self)
        view.store = opened.store
        view._flow_locks = [LoopLock() for _ in range(len(self._flow_locks))]
        view._owns_store = False
        view._views, view._opened = {}, {}
        view._calls, view._idle, view._closes_itself = 0, asyncio.Event(), False
        view._idle.set()
        with self._views_lock:
            orphan = self._closed  # closed while these connections opened: no one else will close them
            if not orphan:
                self._opened[loop] = view
        if orphan:
            await self._close_views([view])
            raise StoreClosed("this saver is closed; open a new one")
        return view

    @staticmethod
    async def _close_views(views: Sequence[EventStoreSaver]) -> None:
        for view in views:
            with contextlib.suppress(Exception):  # a connection of a closed loop may fail to say goodbye
                await aio_run(view.store.close)

    async def _run(self, method: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """A sync method of this class, natively on the loop's async driver or in a worker thread."""
        if not self.async_driver:
            return await self._workers.run(method, self, *args, **kwargs)
        view = await self._on_loop()
        async with self._calling(view):
            return await aio_run(method, view, *args, **kwargs)

    @contextlib.asynccontextmanager
    async def _calling(self, view: EventStoreSaver) -> AsyncIterator[None]:
        """Count a call on ``view`` while it runs, so that no one closes its store under it.

        ``aclose`` waits for the loop's calls; ``close``, from any thread,
        leaves a view with calls under way to the last of them to close.
        """
        with self._views_lock:  # close() reads the count under it: it sees this call, or refuses it
            if self._closed:  # closed while the call waited for its view: its connections may be closing
                raise StoreClosed("this saver is closed; open a new one")
            view._calls += 1
        view._idle.clear()
        try:
            yield
        finally:
            with self._views_lock:
                view._calls -= 1
                last = not view._calls
                closing = last and view._closes_itself
            if last:
                view._idle.set()
            if closing:
                await self._close_views([view])

    async def aclose(self) -> None:
        """Close the async connections, and the store if this saver opened it (``from_url``).

        The loop's calls under way end first (later ones raise ``StoreClosed``):
        a connection one of them holds is closed, not left to the garbage collector.
        """
        loop = asyncio.get_running_loop()
        with self._views_lock:
            self._closed = True
            self._views.pop(loop, None)
            mine = self._opened.pop(loop, None)
        if mine is not None:
            try:
                await mine._idle.wait()
            finally:  # even if cancelled meanwhile: no one else would close them
                await self._close_views([mine])
        self.close()

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._run(EventStoreSaver.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        if not self.async_driver:
            pages = self._pages(config, filter, before, limit)
            while (page := await self._workers.run(next, pages, None)) is not None:
                for item in page:
                    yield item
            return
        view = await self._on_loop()
        pages = view._pages(config, filter, before, limit)
        while True:
            async with self._calling(view):  # a page at a time: no connection is held between them
                page = await aio_run(next, pages, None)
            if page is None:
                return
            for item in page:
                yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await self._run(EventStoreSaver.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await self._run(EventStoreSaver.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str, *, actor: str | None = None) -> None:
        await self._run(EventStoreSaver.delete_thread, thread_id, actor=actor)

    async def adelete_for_runs(self, run_ids: Sequence[str], *, actor: str | None = None) -> None:
        await self._run(EventStoreSaver.delete_for_runs, run_ids, actor=actor)

    async def acopy_thread(
        self, source_thread_id: str, target_thread_id: str, *, actor: str | None = None
    ) -> None:
        await self._run(EventStoreSaver.copy_thread, source_thread_id, target_thread_id, actor=actor)

    async def aprune(
        self, thread_ids: Sequence[str], *, strategy: str = "keep_latest", actor: str | None = None
    ) -> None:
        await self._run(EventStoreSaver.prune, thread_ids, strategy=strategy, actor=actor)

    async def athreads(
        self, *, offset: int = 0, limit: int = 50, include_deleted: bool = False
    ) -> Page[ThreadInfo]:
        return await self._run(
            EventStoreSaver.threads, offset=offset, limit=limit, include_deleted=include_deleted
        )
