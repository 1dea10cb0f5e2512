"""Checking the options ``EventStore`` takes, and the backend ``EventStore.open`` makes for a URL."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote

import sqlalchemy as sa

from .backends import postgresql, sqlite
from .backends.base import Backend, milliseconds
from .checks import check_count as _check_count
from .checks import encodable, shown
from .errors import InvalidInput, StorageError
from .events import EventRegistry
from .projection import InlineProjection


def _check_store_options(
    clock: object, registry: object, max_payload_bytes: object, projections: object
) -> tuple[InlineProjection, ...]:
    """The store's options checked; its projections as a tuple."""
    if not callable(clock):
        raise InvalidInput(f"clock must be a function returning the current time, not {clock!r}")
    if registry is not None and not isinstance(registry, EventRegistry):
        raise InvalidInput(f"registry must be an EventRegistry, not {registry!r}")
    _check_count("max_payload_bytes", max_payload_bytes, minimum=1)
    if isinstance(projections, str | bytes) or not isinstance(projections, Iterable):
        raise InvalidInput(f"projections must be a list of projections, not {projections!r}")
    listed = tuple(projections)
    names: set[str] = set()
    for projection in listed:
        if isinstance(projection, type):
            raise InvalidInput(
                f"projections must hold projections, not the class {projection.__name__}: "
                f"pass an instance, {projection.__name__}()"
            )
        if not all(callable(getattr(projection, method, None)) for method in ("prepare", "apply")):
            raise InvalidInput(f"not a projection (it needs prepare and apply): {projection!r}")
        name = getattr(projection, "name", None)
        if not isinstance(name, str):
            continue
        if name in names:  # each would fold every append: its events counted twice
            raise InvalidInput(
                f"projections names the projection {name!r} twice: every append would fold its events "
                "once for each; pass it once"
            )
        names.add(name)
    return listed


def _in_memory(parsed: sa.URL) -> bool:
    """Whether a SQLite URL names an in-memory database (``sqlite://``, ``:memory:``, ``mode=memory``)."""
    database = parsed.database
    if database in (None, "", ":memory:"):
        return True
    mode = parsed.query.get("mode", ())
    return "memory" in ((mode,) if isinstance(mode, str) else mode) or database.startswith("file::memory:")


def _require_file(parsed: sa.URL) -> None:
    """Refuse a SQLite file that does not exist, whatever the URL's form: a plain path, or a
    ``uri=true`` URL (``file:`` with any ``mode``, which SQLite would otherwise create) asked
    of SQLite itself, read-only, so nothing is made either way."""
    database = parsed.database or ""
    uri = parsed.query.get("uri")
    if isinstance(uri, str) and sa.util.asbool(uri):
        (filename,), _ = parsed.get_dialect()().create_connect_args(parsed)  # what the driver opens
        if filename[:5].lower() == "file:":
            if not _uri_opens(filename):
                raise _no_store(database)
            return
        database = filename  # without file:, SQLite reads even a URI's whole text as a path
    try:
        exists = Path(database).exists()
    except OSError as exc:  # a name too long for the file system, say
        raise InvalidInput(f"cannot use {database} as a SQLite file: {exc.strerror or exc}") from exc
    if not exists:
        raise _no_store(database)


def _uri_opens(filename: str) -> bool:
    """Whether SQLite opens the database a ``file:`` URI names, asked with ``mode=ro`` (which never
    creates a file, nor its -wal or -shm: nothing is read). ``False`` only when SQLite cannot open
    it because it is not there; any other refusal (no such vfs, permission denied) is
    ``InvalidInput`` with SQLite's own message."""
    path, _, query = filename.partition("?")
    kept = [item for item in query.split("&") if item and not item.lower().startswith("mode=")]
    try:
        sqlite3.connect("?".join((path, "&".join([*kept, "mode=ro"]))), uri=True).close()
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_CANTOPEN and not _uri_file_exists(path):
            return False
        raise InvalidInput(f"cannot open the SQLite file {shown(filename)}: {shown(str(exc))}") from exc
    return True


def _uri_file_exists(path: str) -> bool:
    """Whether the file a ``file:`` URI's path part names is there (``file:x``, ``file:///x``,
    ``file://localhost/x``, percent-escapes decoded, as SQLite reads them)."""
    name = path[5:]
    if name.startswith("//"):
        name = name[2:]
        name = name[name.find("/") :] if "/" in name else ""
    try:
        os.lstat(unquote(name.partition("#")[0]))
    except (FileNotFoundError, NotADirectoryError, ValueError):  # ValueError: a NUL in the name
        return False
    except OSError:  # there or not, it cannot be looked at (permission denied): not "missing"
        return True
    return True


def _no_store(database: str) -> InvalidInput:
    return InvalidInput(
        f"no store at {database}: the file does not exist; check the URL, or open with create=True "
        "(or create one with `eventstore db upgrade`)"
    )


def _in_greenlet() -> bool:
    """Whether this runs inside ``eventstore.aio.run`` (SQLAlchemy's greenlet), as the async driver needs."""
    try:
        from sqlalchemy.util.concurrency import in_greenlet
    except ImportError:  # no greenlet: AsyncEventStore.open says what to install
        return True
    return bool(in_greenlet())


def _backend_for(
    url: str | sa.URL,
    *,
    synchronous: str,
    busy_timeout: float,
    lock_timeout: float,
    idle_in_transaction_timeout: float,
    schema: str | None,
    pool_size: int,
    asynchronous: bool = False,
    must_exist: bool = False,
) -> Backend:
    """The backend for ``url``; with ``must_exist`` (``create=False``), a SQLite file that is not
    there is refused before connecting, which would create it (and its -wal and -shm), empty."""
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError, TypeError) as exc:
        raise InvalidInput(f"not a database URL: {url!r}{_url_hint(url)}") from exc
    backend = parsed.get_backend_name()
    if type(asynchronous) is not bool:
        raise InvalidInput(f"asynchronous must be True or False, not {asynchronous!r}")
    if asynchronous and not _in_greenlet():
        raise InvalidInput(
            "asynchronous=True opens a store for eventstore.aio, whose calls run on the event loop: "
            "use `await AsyncEventStore.open(url)`"
        )
    for name, seconds in (
        ("busy_timeout", busy_timeout),
        ("lock_timeout", lock_timeout),
        ("idle_in_transaction_timeout", idle_in_transaction_timeout),
    ):  # every one, used by this backend or not: one call serves both
        milliseconds(name, seconds)
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
        raise InvalidInput(f"pool_size must be a whole number, 1 or more, got {pool_size!r}")
    if backend == "sqlite":
        if not isinstance(synchronous, str) or synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
            raise InvalidInput("synchronous must be NORMAL, FULL or EXTRA")
        if _in_memory(parsed):
            raise InvalidInput("use a SQLite file: an in-memory database is not shared between connections")
        if "\x00" in (parsed.database or "") or not encodable(parsed.database or ""):
            raise InvalidInput(
                f"a SQLite file path must be valid UTF-8 without NUL characters, not {parsed.database!r}"
            )
        _check_sqlite_query(parsed)
        if must_exist:
            _require_file(parsed)
        elif "uri" not in parsed.query:
            _require_directory(parsed.database or "")
        engine = sqlite.create_engine(
            parsed,
            busy_timeout=busy_timeout,
            synchronous=synchronous.upper(),
            pool_size=pool_size,
            asynchronous=asynchronous,
        )
        return sqlite.SQLiteBackend(engine, asynchronous=asynchronous, busy_timeout=busy_timeout)
    if backend == "postgresql":
        if parsed.get_driver_name() not in ("psycopg", "postgresql", ""):
            raise InvalidInput("PostgreSQL is used through psycopg 3: postgresql+psycopg://...")
        if schema is not None:
            check_schema_name(schema)
        for part, text in _url_texts(parsed):
            # libpq reads a name only up to a NUL (another database, user...), and a lone surrogate
            # fails in the driver's encoding: refuse both before connecting
            if "\x00" in text or not encodable(text):
                shown = "(hidden)" if part == "password" else repr(text)
                raise InvalidInput(
                    "a PostgreSQL URL must be valid UTF-8 text without NUL characters; "
                    f"its {part} is {shown:.80}"
                )
        _check_postgresql_query(parsed)
        try:
            engine = postgresql.create_engine(
                parsed.set(drivername="postgresql+psycopg"),
                lock_timeout=lock_timeout,
                idle_in_transaction_timeout=idle_in_transaction_timeout,
                schema=schema,
                pool_size=pool_size,
                asynchronous=asynchronous,
            )
        except ImportError as exc:
            raise StorageError(
                "PostgreSQL needs psycopg 3: pip install 'agent-eventstore[postgresql]'"
            ) from exc
        return postgresql.PostgresBackend(engine, asynchronous=asynchronous)
    if backend == "postgres":  # libpq's other spelling, which SQLAlchemy dropped
        raise InvalidInput("unsupported database 'postgres': did you mean postgresql://?")
    raise InvalidInput(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")


def _url_hint(url: object) -> str:
    """For a text that is not a URL but reads as a file path, the SQLite URL it may have meant."""
    if not isinstance(url, str) or not url or "://" in url or "\x00" in url:
        return ""
    return f"; did you mean sqlite:///{url}?"


def _require_directory(database: str) -> None:
    """Refuse a SQLite file to create in a directory that does not exist: SQLite would say only
    "unable to open database file"."""
    path = Path(database)
    try:
        missing = not path.exists() and not path.parent.is_dir()
    except OSError as exc:  # a name too long for the file system, say
        raise InvalidInput(f"cannot use {database} as a SQLite file: {exc.strerror or exc}") from exc
    if missing:
        raise InvalidInput(f"no directory {path.parent} to create the store in: check the URL")


_SQLITE_INTEGERS = {"detect_types": (0, 3), "cached_statements": (0, 2**31 - 1)}
"""The SQLite URL's whole-number parameters, passed to ``sqlite3.connect``, with their ranges."""


_SQLITE_CONNECT = ("uri", "check_same_thread", "timeout", "isolation_level", *_SQLITE_INTEGERS)
"""The URL parameters SQLAlchemy passes to ``sqlite3.connect``; with ``uri=true`` the others go to SQLite."""


def _check_sqlite_query(parsed: sa.URL) -> None:
    """Refuse, naming it, a value the driver could not take for one of the parameters SQLAlchemy
    passes to ``sqlite3.connect`` (``timeout``, ``uri``, ...): it would raise ``ValueError``. Without
    ``uri=true``, refuse any other parameter too: SQLAlchemy would drop it with only a warning, so
    ``?mode=ro`` would open the file read-write and ``?timout=60`` (a typo) keep the default."""
    for key, value in parsed.query.items():
        if key not in _SQLITE_CONNECT:
            continue
        if not isinstance(value, str):
            raise InvalidInput(f"{key} appears {len(value)} times in the SQLite URL: give it once")
        if key in ("uri", "check_same_thread"):
            try:
                sa.util.asbool(value)
            except ValueError:
                raise InvalidInput(
                    f"{key} in a SQLite URL must be true or false, not {shown(value)}"
                ) from None
        elif key == "timeout":
            try:
                seconds = float(value)
            except ValueError:
                raise InvalidInput(
                    f"timeout in a SQLite URL must be a number of seconds, not {shown(value)}"
                ) from None
            milliseconds("timeout (in the SQLite URL)", seconds)
        elif key in _SQLITE_INTEGERS:
            low, high = _SQLITE_INTEGERS[key]
            if not (value.isascii() and value.isdigit() and low <= int(value) <= high):
                raise InvalidInput(
                    f"{key} in a SQLite URL must be a whole number from {low} to {high}, not {shown(value)}"
                )
    if sa.util.asbool(parsed.query.get("uri", False)):
        return  # the others go into the file: URI, to SQLite
    for key in parsed.query:
        if key not in _SQLITE_CONNECT:
            raise InvalidInput(
                f"{shown(key)} in a SQLite URL is not a parameter of sqlite3.connect "
                f"({', '.join(sorted(_SQLITE_CONNECT))}); SQLite's own URI parameters (mode=ro, ...) "
                "need uri=true and a file: path: sqlite:///file:PATH?mode=ro&uri=true"
            )


_MULTI_HOST = frozenset({"host", "hostaddr", "port"})
"""Query parameters a PostgreSQL URL may repeat: one per host to try (SQLAlchemy's multi-host form)."""

_PSYCOPG_OPTIONS = frozenset({"prepare_threshold"})
"""Query parameters for psycopg itself, not libpq (``backends.postgresql`` takes them out of the URL)."""


def _check_postgresql_query(parsed: sa.URL) -> None:
    """Refuse a PostgreSQL URL whose parameters libpq would not take, before connecting: an option it
    does not know, a ``port`` or ``connect_timeout`` that is not a whole number."""
    try:
        from psycopg.conninfo import make_conninfo
    except ImportError:  # create_engine says what to install
        return
    for key in ("port", "connect_timeout"):
        values = parsed.query.get(key, ())
        for value in (values,) if isinstance(values, str) else values:
            if not (value.isascii() and value.lstrip("-").isdigit()):
                raise InvalidInput(f"{key} in a PostgreSQL URL must be a whole number, not {shown(value)}")
    for key, given in parsed.query.items():
        if not isinstance(given, str) and key not in _MULTI_HOST:
            raise InvalidInput(f"{key} is given {len(given)} times in the PostgreSQL URL: give it once")
    options = {
        key: value if isinstance(value, str) else value[0]
        for key, value in parsed.query.items()
        if key not in _PSYCOPG_OPTIONS
    }
    try:
        make_conninfo("", **options)
    except Exception as exc:  # psycopg.ProgrammingError: libpq's own words, "invalid connection option"
        raise InvalidInput(f"not a PostgreSQL URL libpq takes: {shown(str(exc).strip())}") from exc


def _url_texts(url: sa.URL) -> list[tuple[str, str]]:
    """Every text a URL passes to the driver, with its part's name: user, password, host, database, query."""
    parts = {"user": url.username, "password": url.password, "host": url.host, "database": url.database}
    texts = [(part, value) for part, value in parts.items() if isinstance(value, str)]
    for key, value in url.query.items():
        texts.append(("query", key))
        texts.extend(("query", item) for item in ((value,) if isinstance(value, str) else value))
    return texts


def check_schema_name(schema: object) -> None:
    """Refuse a PostgreSQL schema name that is not letters, digits and underscores."""
    if not isinstance(schema, str) or not schema.replace("_", "").isalnum():
        raise InvalidInput(f"not a plain schema name: {schema!r}")
