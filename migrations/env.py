"""Alembic environment for agent-eventstore.

Runs on a connection the caller already holds (``config.attributes["connection"]``,
as ``EventStore.open`` and the tests do), or on ``sqlalchemy.url`` /
``EVENTSTORE_URL`` when run from the ``alembic`` command line.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import context

from eventstore.schema import metadata

config = context.config


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or os.environ.get(
        "EVENTSTORE_URL", "sqlite:///eventstore.db"
    )
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        _run(conn)
        conn.commit()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()
