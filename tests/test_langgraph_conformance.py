"""LangGraph's own conformance suite passes in full against EventStoreSaver, on SQLite and PostgreSQL.

``langgraph-checkpoint-conformance`` runs every capability, base and
extended, each on a fresh saver; a capability counts only if the saver
implements it, so the test also checks that all eight were detected.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES

from eventstore.integrations.langgraph import EventStoreSaver
from tests.conftest import Target, _pg_schema


@pytest.mark.parametrize("other_driver", [False, True], ids=["default-async", "other-async"])
def test_conformance_passes_every_capability(target: Target, other_driver: bool) -> None:
    """Async methods on the default path for the backend (PostgreSQL: psycopg async; SQLite: a worker
    thread per call) and on the other one (aiosqlite; a worker thread)."""
    fresh = itertools.count()
    async_driver = (target.dialect == "postgresql") != other_driver
    verified: list[bool] = []

    def finish(made: EventStoreSaver) -> None:
        verified.append(made.store.verify().ok)  # what the suite wrote is a sound log
        assert made.async_driver is async_driver
        made.close()

    async def saver() -> AsyncIterator[EventStoreSaver]:
        if target.dialect == "sqlite":
            made = EventStoreSaver.from_url(
                target.url.replace(".db", f"-{next(fresh)}.db"), async_driver=async_driver
            )
            yield made
            finish(made)
            return
        with _pg_schema(target.url) as place:
            made = EventStoreSaver.from_url(place.url, async_driver=async_driver, **place.options)
            yield made
            finish(made)

    report = asyncio.run(validate(checkpointer_test(name=f"EventStoreSaver on {target.dialect}")(saver)))

    failures = [failure for result in report.results.values() for failure in result.failures]
    assert report.passed_all(), failures
    detected = {name for name, result in report.results.items() if result.detected}
    assert detected == {capability.value for capability in ALL_CAPABILITIES}
    assert verified == [True] * len(ALL_CAPABILITIES)
