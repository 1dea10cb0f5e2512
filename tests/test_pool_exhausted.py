"""More threads than the store's pool holds: the one left waiting gets StoreBusy, not a pool error."""

from __future__ import annotations

import threading

import pytest

from eventstore import StoreBusy
from tests.conftest import Target


def test_a_call_that_finds_no_free_pooled_connection_is_store_busy(pg_target: Target) -> None:
    with pg_target.open(pool_size=1) as store:
        store.engine.pool._timeout = 0.5  # type: ignore[attr-defined]  # the test's patience, not 30 s
        held, release = threading.Event(), threading.Event()
        readers = []

        def hold_one() -> None:
            with store.reading():
                held.set()
                release.wait(10)

        for _ in range(5):  # pool_size 1 and 4 overflow: every connection held
            reader = threading.Thread(target=hold_one)
            reader.start()
            readers.append(reader)
            assert held.wait(10)
            held.clear()
        try:
            with pytest.raises(StoreBusy, match=r"pool stayed in use .*larger pool_size") as caught:
                store.revision("anything")
            assert "PostgreSQL error" not in str(caught.value)
            assert "sqlalche.me" not in str(caught.value)
        finally:
            release.set()
            for reader in readers:
                reader.join()
