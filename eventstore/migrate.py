"""Running the Alembic migrations from the library, the CLI and the tests.

The scripts live in the top-level ``migrations/`` folder of the checkout; a
wheel carries them as ``eventstore/_migrations``. Either way they run on a
connection the caller holds.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from .errors import SchemaError


def script_location() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "_migrations", here.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise SchemaError("the migration scripts are missing from this installation")


def _config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "the migration history has no head"  # a packaging bug, not user input
    return head


def known_revision(revision: str) -> bool:
    """Whether ``revision`` is one of this library's migrations (else a newer library wrote it)."""
    scripts = ScriptDirectory.from_config(_config())
    return any(script.revision == revision for script in scripts.walk_revisions())


def current_revision(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: sa.Connection, revision: str = "head") -> None:
    """Upgrade the schema on ``connection`` and commit."""
    command.upgrade(_config(connection), revision)
    connection.commit()
