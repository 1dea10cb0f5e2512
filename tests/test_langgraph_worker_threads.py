"""EventStoreSaver's async methods off the async driver: in worker threads of the saver's own."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from langgraph.checkpoint.conformance.test_utils import generate_checkpoint

from eventstore.integrations.langgraph import EventStoreSaver
from projections.langgraph import LangGraphProjection
from tests.conftest import Target
from tests.test_langgraph_async import Threads, config, hold_appends, save


def test_successive_calls_run_on_one_thread_which_close_ends(target: Target) -> None:
    recorder = Threads()
    recorder.seen = []
    store = target.open(create=True, projections=[LangGraphProjection(), recorder])
    saver = EventStoreSaver(store, async_driver=False)
    before = set(threading.enumerate())
    asyncio.run(save(saver, "t", 20))
    workers = set(threading.enumerate()) - before
    saver.close()
    store.close()
    assert len(set(recorder.seen)) == 1 and len(workers) == 1
    for thread in workers:
        thread.join(timeout=10)
        assert not thread.is_alive()


def test_a_read_runs_while_a_put_waits_for_a_lock(target: Target) -> None:
    with EventStoreSaver.from_url(target.url, async_driver=False, **target.options) as saver:

        async def main() -> Any:
            parent = await save(saver, "t", 1)
            release = hold_appends(target)
            try:
                checkpoint = generate_checkpoint(channel_values={"n": 1}, channel_versions={"n": 2})
                putting = asyncio.ensure_future(saver.aput(config("t", parent), checkpoint, {}, {"n": 2}))
                read = await asyncio.wait_for(saver.aget_tuple(config("t")), timeout=30)
                assert not putting.done()
            finally:
                release()
            await asyncio.wait_for(putting, timeout=60)
            return read

        read = asyncio.run(main())
        assert read is not None and read.checkpoint["channel_values"] == {"n": 0}
