"""The lock a rebuild holds for as long as its process lives: a claim's holder that died is known at once.

A rebuild's claim is a lease row (``checkpoints.claim``): a holder killed
with SIGKILL leaves it behind, and by the lease alone the next rebuild would
wait until it expires. So before it claims, a rebuild also takes a lock that
the operating system or the database server lets go of when its process or
connection dies, and holds it until it has given the claim up:

* PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) on a
  connection of its own, kept open and idle (outside any transaction) for
  the whole rebuild. The key is derived from the projection's name and the
  schema the store works in: stores in different schemas do not share it.
* SQLite: ``flock`` on a file beside the database (``<database>-rebuild-<hash>.lock``,
  its path as SQLite reports it), removed again when the rebuild ends.

A rebuild that holds the lock and finds a claim whose holder held it too
(``checkpoints.claim``) knows that holder is gone, and takes the claim over.
Where no lock can be had (no ``fcntl``, a lock file that cannot be opened),
the claim is written unlocked and only its lease counts, as it does for a
claim written by code from before these locks.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from contextlib import ExitStack
from typing import TYPE_CHECKING

import sqlalchemy as sa

from eventstore import EventStore

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the lease alone
    fcntl = None  # type: ignore[assignment]  # checked before use

if TYPE_CHECKING:
    from .declaration import Projection


class RebuildLock:
    """What ``take`` got: ``held`` if this rebuild holds the lock (else there is none to hold)."""

    held = False

    def release(self) -> None:
        """Let the lock go (nothing to do without one)."""


class _FileLock(RebuildLock):
    held = True

    def __init__(self, fd: int, path: str) -> None:
        self._fd, self._path = fd, path

    def release(self) -> None:
        # Removed while still locked: a process that opened it meanwhile finds, once it has the
        # lock, that the path is no longer its file, and opens it afresh (``_lock_file``).
        with contextlib.suppress(OSError):
            os.unlink(self._path)
        os.close(self._fd)


class _AdvisoryLock(RebuildLock):
    held = True

    def __init__(self, holding: ExitStack, conn: sa.Connection, key: int) -> None:
        self._holding, self._conn, self._key = holding, conn, key

    def release(self) -> None:
        with self._holding:
            try:
                self._conn.execute(_UNLOCK, {"key": self._key})
                self._conn.commit()
            except BaseException as exc:
                # The session may still hold the lock: closed, not back to the pool, it lets it go.
                self._conn.invalidate()
                if not isinstance(exc, Exception):
                    raise


_LOCK = sa.text("SELECT pg_try_advisory_lock(:key)")
_UNLOCK = sa.text("SELECT pg_advisory_unlock(:key)")


def take(store: EventStore, projection: Projection) -> RebuildLock | None:
    """The projection's rebuild lock, or None if a live process holds it."""
    if store.dialect == "postgresql":
        return _advisory_lock(store, projection)
    return _file_lock(store, projection)


def _advisory_lock(store: EventStore, projection: Projection) -> RebuildLock | None:
    with ExitStack() as holding:
        conn = holding.enter_context(store.reading())
        schema = conn.exec_driver_sql("SELECT current_schema()").scalar()
        named = f"eventstore rebuild\x00{schema}\x00{projection.name}".encode()
        key = int.from_bytes(hashlib.blake2b(named, digest_size=8).digest(), "big", signed=True)
        got = bool(conn.execute(_LOCK, {"key": key}).scalar())
        conn.commit()  # idle outside a transaction from here on: no idle_in_transaction_timeout
        if not got:
            return None
        return _AdvisoryLock(holding.pop_all(), conn, key)
    raise AssertionError("unreachable")  # pragma: no cover - the with block returns


def _file_lock(store: EventStore, projection: Projection) -> RebuildLock | None:
    if fcntl is None:  # pragma: no cover - Windows
        return RebuildLock()
    with store.reading() as conn:
        files = {row[1]: row[2] for row in conn.exec_driver_sql("PRAGMA database_list")}
    if not files.get("main"):
        return RebuildLock()
    digest = hashlib.sha256(projection.name.encode()).hexdigest()[:16]
    return _lock_file(f"{os.path.realpath(files['main'])}-rebuild-{digest}.lock")


def _lock_file(path: str) -> RebuildLock | None:
    while True:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            return RebuildLock()  # a directory this process may not create in: the lease alone
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError:
            os.close(fd)
            return RebuildLock()
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        mine = os.fstat(fd)
        if current is not None and (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
            return _FileLock(fd, path)
        os.close(fd)  # its holder removed it as it let go: take the lock on the file now there
