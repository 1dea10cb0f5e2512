"""Fixtures: every contract test runs on a SQLite file and on PostgreSQL.

PostgreSQL is never skipped silently: if it cannot be reached the tests error,
unless EVENTSTORE_TEST_SKIP_PG=1 says to leave it out. Each test session gets
its own database (dropped at the end) and each test its own schema.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from eventstore import EventStore

PG_ADMIN_URL = os.environ.get("EVENTSTORE_TEST_PG_URL", "postgresql://root@127.0.0.1:5432/test")
SKIP_PG = os.environ.get("EVENTSTORE_TEST_SKIP_PG") == "1"
BACKENDS = ["sqlite"] if SKIP_PG else ["sqlite", "postgresql"]


@dataclass(frozen=True)
class Target:
    """Where a test's store lives; `open` gives another store on the same data."""

    url: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def dialect(self) -> str:
        return "postgresql" if self.url.startswith("postgresql") else "sqlite"

    def open(self, **kwargs: Any) -> EventStore:
        return EventStore.open(self.url, **{**self.options, **kwargs})


def _admin_connect(url: str) -> Any:
    import psycopg

    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A database of our own for this test session (one per xdist worker)."""
    if SKIP_PG:
        pytest.skip("PostgreSQL tests disabled by EVENTSTORE_TEST_SKIP_PG=1")
    try:
        admin = _admin_connect(PG_ADMIN_URL)
    except Exception as exc:  # any failure to connect must stop the run loudly
        pytest.fail(
            f"PostgreSQL is unreachable at {PG_ADMIN_URL} ({exc}). Start it, point "
            "EVENTSTORE_TEST_PG_URL at one, or set EVENTSTORE_TEST_SKIP_PG=1 to leave it out.",
            pytrace=False,
        )
    name = f"es_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with _admin_connect(PG_ADMIN_URL) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def _pg_schema(url: str) -> Iterator[Target]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with _admin_connect(url) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield Target(url, {"schema": schema, "create": True})
    finally:
        with _admin_connect(url) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def pg_alone_target(pg_database: str) -> Iterator[Target]:
    """A PostgreSQL database of its own, for a test that reads database-wide statistics.

    A backend reports its counters (``pg_stat_database.deadlocks``...) when
    it goes idle, seconds later, so an earlier test's deadlock could land in
    the middle of the next test's count in a shared database.
    """
    name = f"es_alone_{uuid.uuid4().hex[:12]}"
    with _admin_connect(PG_ADMIN_URL) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with _pg_schema(f"{pg_database.rsplit('/', 1)[0]}/{name}") as pg:
            yield pg
    finally:
        with _admin_connect(PG_ADMIN_URL) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """A fresh, empty place for a store: a SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        yield Target(f"sqlite:///{tmp_path / 'events.db'}")
    else:
        with _pg_schema(request.getfixturevalue("pg_database")) as pg:
            yield pg


@pytest.fixture
def pg_target(pg_database: str) -> Iterator[Target]:
    """A fresh PostgreSQL schema, for behaviour only PostgreSQL has."""
    with _pg_schema(pg_database) as pg:
        yield pg


@pytest.fixture
def store(target: Target) -> Iterator[EventStore]:
    with target.open() as opened:
        yield opened


@pytest.fixture
def flow_store(target: Target) -> Iterator[EventStore]:
    """A store with the inline flow read models."""
    from projections import FlowProjection

    with target.open(projections=[FlowProjection()]) as opened:
        yield opened
