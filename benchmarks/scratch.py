"""Scratch SQLite files and PostgreSQL databases for one run, all removed at the end."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg
import sqlalchemy as sa


class Scratch:
    def __init__(self, pg_admin_url: str | None, directory: str | None) -> None:
        self.run_id = uuid.uuid4().hex[:8]
        self.directory = Path(tempfile.mkdtemp(prefix=f"bench_es_{self.run_id}_", dir=directory))
        self.pg_admin = sa.make_url(pg_admin_url) if pg_admin_url else None
        self._databases: list[str] = []

    def sqlite_path(self, name: str) -> str:
        return str(self.directory / f"{name}.db")

    def pg_database(self, name: str, *, template: str | None = None) -> str:
        """A new database, empty or a copy of ``template`` (a URL from here); its URL (postgresql+psycopg://...)."""
        assert self.pg_admin is not None, "no PostgreSQL URL was given"
        database = f"bench_es_{self.run_id}_{name}"
        copy = "" if template is None else f' TEMPLATE "{sa.make_url(template).database}"'
        with self._admin() as admin:
            admin.execute(f'CREATE DATABASE "{database}"{copy}')
        self._databases.append(database)
        return self.pg_admin.set(drivername="postgresql+psycopg", database=database).render_as_string(
            hide_password=False
        )

    def server_facts(self) -> dict[str, str]:
        with self._admin() as admin:
            return {
                "version": admin.execute("SHOW server_version").fetchone()[0],  # type: ignore[index]
                "synchronous_commit": admin.execute("SHOW synchronous_commit").fetchone()[0],  # type: ignore[index]
                "fsync": admin.execute("SHOW fsync").fetchone()[0],  # type: ignore[index]
            }

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        assert self.pg_admin is not None
        dsn = self.pg_admin.set(drivername="postgresql").render_as_string(hide_password=False)
        return psycopg.connect(dsn, autocommit=True)

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        if self._databases:
            with self._admin() as admin:
                for database in self._databases:
                    admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            self._databases.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
