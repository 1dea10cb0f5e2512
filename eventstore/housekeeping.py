"""SQLite housekeeping: WAL checkpoints, the database's own integrity checks, online backups.

These concern the database file, not the log's hash chains (``verify``).
On PostgreSQL each raises ``NotSupported`` naming what to use instead: its
checkpointer folds the WAL itself, its file checks are data checksums and
``pg_amcheck``, and its backups are ``pg_dump``'s job.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidInput, NotSupported, StorageError
from .store import EventStore

PAGES_PER_STEP = 4096
"""How many pages ``backup`` copies between calls of its progress hook (16 MiB at 4 KiB pages)."""

PG_DUMP_ADVICE = (
    "use pg_dump (for example `pg_dump --format=custom --file=audit.dump DBNAME`), "
    "see docs/operations.md#backup-and-restore"
)

PG_CHECK_ADVICE = (
    "check PostgreSQL's tables and indexes with `pg_amcheck DBNAME`; with data checksums on, "
    "PostgreSQL also reports a damaged page as it reads it (see docs/operations.md#the-jobs)"
)

PG_CHECKPOINT_ADVICE = "PostgreSQL's checkpointer does this itself"


@dataclass(frozen=True, slots=True)
class WalCheckpoint:
    """What ``PRAGMA wal_checkpoint(TRUNCATE)`` did; ``busy``: readers or a writer kept it from finishing."""

    busy: bool
    wal_frames: int
    checkpointed_frames: int


@dataclass(frozen=True, slots=True)
class Backup:
    """A finished backup: where it is and how big."""

    path: Path
    pages: int
    bytes: int
    seconds: float


def sqlite_file(store: EventStore, operation: str, *, instead: str) -> Path:
    """The store's database file; on PostgreSQL, ``NotSupported`` saying what to do ``instead``."""
    if store.dialect != "sqlite":
        raise NotSupported(operation, store.dialect, instead)
    database = store.engine.url.database
    assert database  # EventStore.open refuses SQLite URLs without a file
    return Path(database)


def wal_checkpoint(store: EventStore) -> WalCheckpoint:
    """Copy the write-ahead log into the database and truncate it to zero bytes.

    Waits (``busy_timeout``) for the current writer; a reader still using old
    WAL frames makes it report ``busy`` and leave the WAL for the next time.
    """
    sqlite_file(store, "wal checkpoint", instead=PG_CHECKPOINT_ADVICE)
    with store.reading() as conn:
        row = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
    return WalCheckpoint(bool(row[0]), int(row[1]), int(row[2]))


def check_database(store: EventStore, *, quick: bool = True) -> list[str]:
    """SQLite's own check of the file: ``["ok"]``, or what it found broken.

    ``quick=True`` runs ``PRAGMA quick_check`` (no index cross-checks: fast
    enough for a schedule); ``quick=False`` runs ``PRAGMA integrity_check``.
    """
    pragma = "quick_check" if quick else "integrity_check"
    sqlite_file(store, f"PRAGMA {pragma}", instead=PG_CHECK_ADVICE)
    with store.reading() as conn:
        return [str(row[0]) for row in conn.exec_driver_sql(f"PRAGMA {pragma}")]


def backup(
    store: EventStore, path: str | Path, *, progress: Callable[[int, int], None] | None = None
) -> Backup:
    """Copy the live database to ``path`` with SQLite's online backup API.

    Writers carry on meanwhile: the copy is one consistent snapshot (one read
    transaction on the WAL, held across the copy's steps, so their writes
    never restart it). It is written beside ``path`` (as ``path.<random>.partial``,
    so no existing file is touched) and renamed into place
    once SQLite's ``quick_check`` passes on it, so ``path`` never holds a
    partial copy. An existing ``path`` is refused. ``progress(remaining,
    total)`` is called with page counts after each step of
    ``PAGES_PER_STEP`` pages.
    """
    source = sqlite_file(store, "backup", instead=PG_DUMP_ADVICE)
    target = Path(path)
    if target.exists():
        raise InvalidInput(f"{target} exists; back up to a new file")
    if target.resolve() == source.resolve():
        raise InvalidInput("a backup cannot overwrite the database it copies")
    partial = _unused_name(target)
    started = time.perf_counter()
    try:
        with closing(sqlite3.connect(source, timeout=30.0)) as src, closing(sqlite3.connect(partial)) as dst:
            src.execute("BEGIN")
            src.execute("SELECT count(*) FROM sqlite_master")  # the snapshot every step copies from
            src.backup(
                dst,
                pages=PAGES_PER_STEP,
                progress=(lambda _s, left, total: progress(left, total)) if progress else None,
            )
            src.rollback()
            dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, no -wal beside it
            pages = int(dst.execute("PRAGMA page_count").fetchone()[0])
            found = [str(row[0]) for row in dst.execute("PRAGMA quick_check")]
        if found != ["ok"]:
            raise StorageError(f"the backup failed SQLite's quick_check: {'; '.join(found[:5])}")
        with open(partial, "rb") as written:
            os.fsync(written.fileno())
        os.replace(partial, target)
    except (sqlite3.Error, OSError) as exc:
        raise StorageError(f"backup to {target} failed: {exc}") from exc
    finally:
        with suppress(OSError):  # cleaning up must not hide why the backup failed
            partial.unlink(missing_ok=True)
    return Backup(target, pages, target.stat().st_size, time.perf_counter() - started)


def _unused_name(target: Path) -> Path:
    """Where to write the copy: ``PATH.<random>.partial``, never a file that is there (someone's own)."""
    while True:
        partial = target.with_name(f"{target.name}.{secrets.token_hex(4)}.partial")
        if not partial.exists():
            return partial
