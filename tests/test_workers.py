"""Worker threads for asyncio code: one thread for calls made one after another, more for concurrent ones."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from eventstore.workers import Workers

REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("request")


def started_threads(before: set[threading.Thread]) -> set[threading.Thread]:
    return set(threading.enumerate()) - before


class TestWorkers:
    def test_calls_one_after_another_run_on_one_thread(self) -> None:
        workers = Workers()

        async def main() -> set[int]:
            return {await workers.run(threading.get_ident) for _ in range(200)}

        try:
            seen = asyncio.run(main())
        finally:
            workers.close()
        assert len(seen) == 1 and threading.get_ident() not in seen

    def test_concurrent_calls_get_a_thread_each_up_to_the_limit(self) -> None:
        workers = Workers(max_threads=2)
        arrived, go = threading.Barrier(2, timeout=10), threading.Event()

        def meet() -> int:
            arrived.wait()  # two calls at once, or this breaks the barrier
            go.wait(10)
            return threading.get_ident()

        async def main() -> list[int]:
            calls = [asyncio.ensure_future(workers.run(meet)) for _ in range(2)]
            third = asyncio.ensure_future(workers.run(threading.get_ident))  # waits for a thread
            await asyncio.sleep(0.05)
            assert not third.done()
            go.set()
            return [*await asyncio.gather(*calls), await third]

        try:
            first, second, third = asyncio.run(main())
        finally:
            workers.close()
        assert first != second and third in (first, second)

    def test_a_call_sees_the_callers_context_and_raises_its_error(self) -> None:
        workers = Workers()

        def fail() -> None:
            raise KeyError(REQUEST.get())

        async def main() -> None:
            REQUEST.set("r-1")
            with pytest.raises(KeyError, match="r-1"):
                await workers.run(fail)

        try:
            asyncio.run(main())
        finally:
            workers.close()

    def test_a_call_cancelled_before_a_thread_takes_it_never_runs(self) -> None:
        workers = Workers(max_threads=1)
        go, ran = threading.Event(), []

        async def main() -> None:
            busy = asyncio.ensure_future(workers.run(go.wait, 10))
            waiting = asyncio.ensure_future(workers.run(ran.append, "ran"))
            await asyncio.sleep(0)
            waiting.cancel()
            go.set()
            await busy
            assert await workers.run(len, ran) == 0  # after the cancelled call's turn

        try:
            asyncio.run(main())
        finally:
            workers.close()
        assert ran == []

    def test_close_ends_the_threads_and_later_calls_still_run(self) -> None:
        before = set(threading.enumerate())
        workers = Workers()
        assert asyncio.run(workers.run(sum, [1, 2])) == 3
        threads = started_threads(before)
        assert len(threads) == 1
        workers.close()
        for thread in threads:
            thread.join(timeout=10)
            assert not thread.is_alive()
        assert asyncio.run(workers.run(sum, [3, 4])) == 7  # on a thread that ends after it
        for thread in started_threads(before):
            thread.join(timeout=10)
            assert not thread.is_alive()

    def test_a_thread_idle_for_idle_seconds_ends(self) -> None:
        before = set(threading.enumerate())
        workers = Workers(idle_seconds=0.01)
        asyncio.run(workers.run(int))
        for thread in started_threads(before):
            thread.join(timeout=10)
            assert not thread.is_alive()
        assert asyncio.run(workers.run(int, "5")) == 5
        workers.close()
