"""Locks that die with their process: whether the holder of a claim is still alive, known at once.

A claim written to a table (a rebuild's lease row, for one) outlives a
holder killed with SIGKILL until its lease expires. A lock that the
operating system or the database server lets go of when its process or
connection dies tells the rest: if nobody holds it, the claim's holder is gone.

* PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) on a
  connection of its own, kept open and idle (outside any transaction) while
  held. Its key is derived from the lock's kind, the schema the store works
  in and the name: stores in different schemas do not share it.
* SQLite: ``flock`` on a file beside the database
  (``<database>-<kind>-<hash>.lock``, its path as SQLite reports it), removed
  again when the lock is let go.

``take`` takes a lock to hold; ``held`` asks whether another holds it without
keeping it (on PostgreSQL it reads ``pg_locks`` and takes nothing; on SQLite
it takes a shared ``flock`` for an instant). Where no lock can be had (no
``fcntl``, an in-memory database, a file that cannot be opened) ``take``
returns an unheld ``ProcessLock`` and ``held`` answers True: a caller then
goes by its lease alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from contextlib import ExitStack
from typing import TYPE_CHECKING

import sqlalchemy as sa

from . import reconnecting

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the lease alone
    fcntl = None  # type: ignore[assignment]  # checked before use

if TYPE_CHECKING:
    from .store import EventStore


class ProcessLock:
    """What ``take`` got: ``held`` if this process holds the lock (else there is none to hold)."""

    held = False

    def release(self) -> None:
        """Let the lock go (nothing to do without one)."""


class _FileLock(ProcessLock):
    held = True

    def __init__(self, fd: int, path: str) -> None:
        self._fd, self._path = fd, path

    def release(self) -> None:
        # Removed while still locked: a process that opened it meanwhile finds, once it has the
        # lock, that the path is no longer its file, and opens it afresh (``_lock_file``).
        with contextlib.suppress(OSError):
            os.unlink(self._path)
        os.close(self._fd)


class _AdvisoryLock(ProcessLock):
    held = True

    def __init__(self, holding: ExitStack, conn: sa.Connection, key: int) -> None:
        self._holding, self._conn, self._key = holding, conn, key

    def release(self) -> None:
        with self._holding:
            try:
                self._conn.execute(_UNLOCK, {"key": self._key})
                _let_settings_go(self._conn)  # back to the pool as it came
                self._conn.commit()
            except BaseException as exc:
                # The session may still hold the lock: closed, not back to the pool, it lets it go.
                self._conn.invalidate()
                if not isinstance(exc, Exception):
                    raise


_LOCK = sa.text("SELECT pg_try_advisory_lock(:key)")
_UNLOCK = sa.text("SELECT pg_advisory_unlock(:key)")
_HELD = sa.text(
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND classid = CAST(:high AS oid) AND objid = CAST(:low AS oid) AND objsubid = 1)"
)
"""Whether any session holds the advisory lock ``(high << 32) | low`` (a one-bigint key: objsubid 1)."""


def take(store: EventStore, kind: str, name: str) -> ProcessLock | None:
    """The lock ``kind``/``name`` for this process to hold until ``release``; None if a live one holds it."""
    if store.dialect == "postgresql":
        return _advisory_lock(store, kind, name)
    with store.reading() as conn:
        path = _lock_path(conn, kind, name)
    if fcntl is None or path is None:  # pragma: no cover - Windows
        return ProcessLock()
    return _lock_file(path)


def held(conn: sa.Connection, kind: str, name: str) -> bool:
    """Whether a live process (this one included) may hold the lock ``kind``/``name``; True if unknowable.

    Takes nothing it keeps, so it does not stand in a ``take``'s way beyond an
    instant (a shared ``flock`` on SQLite, taken and let go). Runs on
    ``conn``, in whatever transaction it is in.
    """
    if conn.dialect.name == "postgresql":
        key = _advisory_key(conn, kind, name) & 0xFFFF_FFFF_FFFF_FFFF
        return bool(conn.execute(_HELD, {"high": key >> 32, "low": key & 0xFFFF_FFFF}).scalar())
    path = _lock_path(conn, kind, name)
    if fcntl is None or path is None:  # pragma: no cover - Windows
        return True
    return _file_held(path)


def _advisory_key(conn: sa.Connection, kind: str, name: str) -> int:
    schema = conn.exec_driver_sql("SELECT current_schema()").scalar()
    named = f"eventstore {kind}\x00{schema}\x00{name}".encode()
    return int.from_bytes(hashlib.blake2b(named, digest_size=8).digest(), "big", signed=True)


def _advisory_lock(store: EventStore, kind: str, name: str) -> ProcessLock | None:
    with ExitStack() as holding:
        conn = holding.enter_context(reconnecting.reading(store))
        key = _advisory_key(conn, kind, name)
        try:
            got = bool(conn.execute(_LOCK, {"key": key}).scalar())
            if got:
                _keep_alive(conn)
            conn.commit()  # idle outside a transaction from here on: no idle_in_transaction_timeout
        except BaseException:
            # It may hold the lock (or the settings): closed, not back to the pool, it lets them go.
            conn.invalidate()
            raise
        if not got:
            return None
        return _AdvisoryLock(holding.pop_all(), conn, key)
    raise AssertionError("unreachable")  # pragma: no cover - the with block returns


def _keep_alive(conn: sa.Connection) -> None:
    """Keep the lock's idle session from being ended while it is held (``_KEPT``, reset on release).

    The server's ``idle_session_timeout`` (PostgreSQL 14 and later) would end
    it, and another rebuild would take a live one's claim over; TCP
    keepalives from the server keep a firewall or NAT from dropping it
    (ignored on a Unix-domain socket).
    """
    for setting, value in _kept(conn):
        conn.exec_driver_sql(f"SET {setting} = {value}")


def _let_settings_go(conn: sa.Connection) -> None:
    for setting, _ in _kept(conn):
        conn.exec_driver_sql(f"RESET {setting}")


def _kept(conn: sa.Connection) -> tuple[tuple[str, str], ...]:
    """``_KEPT``, without ``idle_session_timeout`` on a server older than PostgreSQL 14 (none there)."""
    if (conn.dialect.server_version_info or (0,)) >= (14,):
        return _KEPT
    return tuple(kept for kept in _KEPT if kept[0] != "idle_session_timeout")


_KEPT = (("idle_session_timeout", "0"), ("tcp_keepalives_idle", "60"), ("tcp_keepalives_interval", "10"))
"""The settings the lock's session holds while it is held: never ended for idling, probed every minute."""


def _lock_path(conn: sa.Connection, kind: str, name: str) -> str | None:
    """The lock file beside the database ``conn`` works on; None for an in-memory one."""
    files = {row[1]: row[2] for row in conn.exec_driver_sql("PRAGMA database_list")}
    if not files.get("main"):
        return None
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{os.path.realpath(files['main'])}-{kind}-{digest}.lock"


def _lock_file(path: str) -> ProcessLock | None:
    while True:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            return ProcessLock()  # a directory this process may not create in: the lease alone
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError:
            os.close(fd)
            return ProcessLock()
        if _still_at(fd, path):
            return _FileLock(fd, path)
        os.close(fd)  # its holder removed it as it let go: take the lock on the file now there


def _file_held(path: str) -> bool:
    while True:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False  # a holder creates it before it locks, and removes it only as it lets go
        except OSError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: a holder has it; any other: cannot tell
            return True
        else:
            if _still_at(fd, path):
                return False
        finally:
            os.close(fd)  # lets the shared lock go
        # a holder removed this one as it let go, and another may have made a new one: look again


def _still_at(fd: int, path: str) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino)
