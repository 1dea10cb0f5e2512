"""SQLite housekeeping: WAL checkpoints, the database's own integrity checks, online backups.

These concern the database file, not the log's hash chains (``verify``).
On PostgreSQL each raises ``NotSupported`` naming what to use instead: its
checkpointer folds the WAL itself, its file checks are data checksums and
``pg_amcheck``, and its backups are ``pg_dump``'s job.
"""

from __future__ import annotations

import fcntl
import inspect
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.util import await_only

from .checks import check_callback, check_path, check_store
from .errors import InvalidInput, NotSupported, StorageError
from .store import EventStore

CHECK_STEPS = 100_000
"""How many steps of SQLite's engine ``check_database`` runs between calls of its ``stop``."""
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
    removed_partials: tuple[Path, ...] = ()
    """Half-written copies to the same path that backups which died had left, removed first."""


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
    check_store(store)
    sqlite_file(store, "wal checkpoint", instead=PG_CHECKPOINT_ADVICE)
    with store.reading() as conn:
        row = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
    return WalCheckpoint(bool(row[0]), int(row[1]), int(row[2]))


def check_database(
    store: EventStore, *, quick: bool = True, stop: Callable[[], bool] | None = None
) -> list[str] | None:
    """SQLite's own check of the file: ``["ok"]``, or what it found broken.

    ``quick=True`` runs ``PRAGMA quick_check`` (no index cross-checks: fast
    enough for a schedule); ``quick=False`` runs ``PRAGMA integrity_check``.
    Either is one statement, which can take minutes on a big file: ``stop``,
    asked before it starts and every ``CHECK_STEPS`` steps of SQLite's engine,
    ends it early when it returns True, and then the result is None (nothing
    was concluded).
    """
    check_store(store)
    pragma = "quick_check" if quick else "integrity_check"
    sqlite_file(store, f"PRAGMA {pragma}", instead=PG_CHECK_ADVICE)
    check_callback("stop", stop)
    stopped = False

    def asked() -> bool:
        nonlocal stopped
        stopped = stopped or bool(stop and stop())
        return stopped

    if asked():
        return None
    with store.reading() as conn:
        if stop is not None:
            _progress_handler(conn, asked, CHECK_STEPS)
        try:
            return [str(row[0]) for row in conn.exec_driver_sql(f"PRAGMA {pragma}")]
        except sa.exc.OperationalError:
            if stopped:  # SQLite's "interrupted": the handler said so
                return None
            raise
        finally:
            if stop is not None:
                _progress_handler(conn, None, 0)  # the connection goes back to the pool


def _progress_handler(conn: sa.Connection, handler: Callable[[], bool] | None, steps: int) -> None:
    """Set (None: clear) the progress handler of ``conn``'s SQLite connection. aiosqlite's (a store of
    ``eventstore.aio``) is a coroutine, awaited here in SQLAlchemy's greenlet: left unawaited, it set
    nothing, and ``stop`` was never asked; the handler then runs on aiosqlite's thread."""
    driver: Any = conn.connection.driver_connection
    setting = driver.set_progress_handler(handler, steps)
    if inspect.isawaitable(setting):
        await_only(setting)


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
    ``PAGES_PER_STEP`` pages. The ``path.<random>.partial`` files of earlier
    backups to ``path`` that died (killed, or the machine went down) are
    removed first; those of backups still running are left alone.
    """
    check_store(store)
    source = sqlite_file(store, "backup", instead=PG_DUMP_ADVICE)
    target = check_path("a backup", path)
    check_callback("progress", progress)
    if not target.name or target.name in (".", ".."):  # "" is "." to Path: not "exists", but no name
        raise InvalidInput(f"a backup needs a file name, not {os.fspath(path)!r}")
    if os.path.exists(target):  # not Path.exists: a name too long is "not there", for the copy to report
        raise InvalidInput(f"{target} exists; back up to a new file")
    if target.resolve() == source.resolve():
        raise InvalidInput("a backup cannot overwrite the database it copies")
    removed = remove_stale_partials(target.parent, lambda name: name == target.name)
    started = time.perf_counter()
    with _claimed_partial(target) as partial:
        pages = _copy(source, target, partial, progress)
    return Backup(target, pages, target.stat().st_size, time.perf_counter() - started, tuple(removed))


def _copy(source: Path, target: Path, partial: Path, progress: Callable[[int, int], None] | None) -> int:
    """Copy ``source`` into ``partial``, check it and rename it to ``target``; the number of pages."""
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
    return pages


# -- half-written copies -----------------------------------------------------------
#
# A backup writes ``PATH.<8 hex>.partial`` and renames it to PATH at the end; a
# backup that is killed leaves it behind. Which of those files are stale cannot be
# told from their age (a copy may wait on a busy database, or take hours) nor from
# a process id in the name (ids are reused, and another host may share the
# directory). So a running backup holds an exclusive ``flock`` on its own partial
# file from the moment it creates it until it is renamed or removed, and the
# kernel drops that lock when the process dies, however it dies. A later backup
# removes a partial only while it holds that lock itself, taken without waiting:
# one it cannot lock belongs to a live backup, which goes on undisturbed.
#
# The lock is on a file descriptor of its own, separate from SQLite's: SQLite
# locks with ``fcntl`` byte ranges, which ``flock`` does not touch on Linux. A
# backup creates its file (``O_EXCL``) before it can lock it; a cleaner that locks
# and removes it in that moment leaves the new backup holding a lock on a file no
# longer at that name, so after locking, the backup checks the name is still its
# file, and starts again with another name if not. (``flock`` over NFS is
# emulated with ``fcntl`` locks and holds across hosts only where the server
# supports them.)

_PARTIAL = re.compile(r"(?P<name>.+)\.[0-9a-f]{8}\.partial")
_SQLITE_SIDE_FILES = ("-journal", "-wal", "-shm")
"""What SQLite may have left beside a copy it was writing when it died."""


@contextmanager
def _claimed_partial(target: Path) -> Iterator[Path]:
    """A new ``target.<random>.partial`` name, created and locked by this backup while the block runs."""
    while True:
        partial = target.with_name(f"{target.name}.{secrets.token_hex(4)}.partial")
        try:
            fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue  # someone's own file, or another backup's: never touched
        except OSError as exc:
            raise StorageError(f"backup to {target} failed: {exc}") from exc
        try:
            if _locked(fd) and _same_file(fd, partial):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # a cleaner removed it before it was locked: another name
    try:
        yield partial
    finally:
        os.close(fd)  # the lock goes with it, after the file was renamed or removed


def remove_stale_partials(directory: Path, names: Callable[[str], bool]) -> list[Path]:
    """Remove the ``NAME.<random>.partial`` files in ``directory``, for the NAMEs ``names`` accepts,
    that no running backup holds; the paths removed."""
    removed: list[Path] = []
    try:
        candidates = sorted(directory.iterdir())
    except FileNotFoundError:
        return removed
    except OSError as exc:
        raise StorageError(f"cannot list {directory} for half-written backups: {exc}") from exc
    for path in candidates:
        found = _PARTIAL.fullmatch(path.name)
        if found is None or not names(found["name"]):
            continue
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        except (FileNotFoundError, IsADirectoryError):
            continue  # renamed or removed meanwhile, or not a file a backup writes
        except OSError as exc:
            raise StorageError(f"cannot open the half-written backup {path}: {exc}") from exc
        try:
            if _locked(fd) and _same_file(fd, path):
                for suffix in _SQLITE_SIDE_FILES:  # first, so none is left without its database
                    path.with_name(path.name + suffix).unlink(missing_ok=True)
                path.unlink()
                removed.append(path)
        except OSError as exc:
            raise StorageError(f"cannot remove the half-written backup {path}: {exc}") from exc
        finally:
            os.close(fd)  # a backup that created this name meanwhile sees the file gone, and moves on
    return removed


def _locked(fd: int) -> bool:
    """Whether this descriptor now holds the file's exclusive lock (False: a live backup holds it)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)
