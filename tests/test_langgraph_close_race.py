"""``close()`` from one thread while another thread's event loop is mid-``aput``.

The call under way ends first (the saver waits for it on its loop, as ``aclose``
does), and later calls raise ``StoreClosed``: no driver traceback, no hang, and
the last checkpoint the loop was told was saved is there.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from typing import Any

import pytest
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint

from eventstore import StoreClosed
from eventstore.integrations.langgraph import EventStoreSaver
from tests.conftest import Target
from tests.test_langgraph_async import config


def put_until_closed(saver: EventStoreSaver, putting: threading.Event, outcome: list[Any]) -> None:
    async def puts() -> None:
        parent = None
        for n in range(1_000_000):
            checkpoint = generate_checkpoint(channel_values={"n": n}, channel_versions={"n": n + 1})
            parent = await saver.aput(config("t", parent), checkpoint, {"step": n}, {"n": n + 1})
            outcome[:] = [parent]
            putting.set()

    try:
        asyncio.run(puts())
    except BaseException as exc:  # the outcome under test
        outcome.append(exc)


@pytest.mark.parametrize("async_driver", [True, False], ids=["async-driver", "worker-thread"])
def test_close_while_another_loop_puts_ends_its_call_cleanly(
    target: Target, async_driver: bool, caplog: pytest.LogCaptureFixture
) -> None:
    unraisable: list[Any] = []
    hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(3):
                saver = EventStoreSaver.from_url(target.url, async_driver=async_driver, **target.options)
                putting, outcome = threading.Event(), []
                loop = threading.Thread(target=put_until_closed, args=(saver, putting, outcome), daemon=True)
                loop.start()
                assert putting.wait(30), outcome
                closer = threading.Thread(target=saver.close, daemon=True)
                closer.start()
                closer.join(timeout=60)  # a hang is a failure too
                loop.join(timeout=60)
                assert not closer.is_alive() and not loop.is_alive(), "close or the loop hung"
                saved, ended = outcome
                assert isinstance(ended, StoreClosed), ended
                with EventStoreSaver.from_url(target.url, **target.options) as check:
                    assert check.get_tuple(saved) is not None
    finally:
        sys.unraisablehook = hook
    assert [r.getMessage() for r in caplog.records] == []
    assert unraisable == []
