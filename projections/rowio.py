"""Driver-level row reading and writing for read models that are written on every append.

A read model updated inside every append transaction is on the hot path, and
building a SQLAlchemy statement per lookup cost ten times the lookup itself.
``TableIO`` compiles its SQL once per table and dialect, converts values in
Python (JSON as text, SQLite times as text), and writes an existing row by
updating only the columns that changed, so untouched indexes are not
rewritten.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from itertools import compress
from operator import attrgetter, itemgetter, ne
from typing import Any, NamedTuple

import orjson
import sqlalchemy as sa

from eventstore.backends.base import driver_error, refused_value, unmasked
from eventstore.errors import ReadModelCorrupt

from .corruption import corrupt, unreadable
from .types import UTCDateTime

Values = tuple[Any, ...]


def _json_text(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _json_value(value: Any) -> Any:
    """SQLite's JSON text as a value. A column declared ``JSON`` (not ``types.JSON``, which is TEXT
    there) has numeric affinity, so a document that is a bare number comes back as the number itself."""
    return orjson.loads(value) if isinstance(value, str | bytes) else value


@lru_cache(maxsize=4096)
def _sqlite_time(value: datetime | None) -> str | None:
    """A time as SQLAlchemy's SQLite dialect stores it (cached: the events of one append share it)."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _time_value(value: Any) -> datetime | None:
    if value is None:
        return None
    moment: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def run(conn: sa.Connection, sql: str, params: Any, *, many: bool = False) -> list[Any]:
    """Execute on the driver connection inside ``conn``'s transaction.

    SQLAlchemy's result set-up for a 28-column row cost more than the query;
    driver errors are wrapped as SQLAlchemy would, for the store to translate.
    """
    raw: Any = conn.connection.dbapi_connection  # on the async drivers, SQLAlchemy's sync-faced adapter
    cursor = None
    try:
        if many and len(params) != 1:
            cursor = raw.cursor()
            cursor.executemany(sql, params)
            return []
        # Both drivers' connections execute one statement on a cursor of their own
        # (no batch set-up for the usual single row).
        cursor = raw.execute(sql, params[0] if many else params)
        return [] if many else list(cursor.fetchall())
    except (conn.dialect.loaded_dbapi.Error, OverflowError, UnicodeEncodeError) as exc:
        error = unmasked(exc)  # sqlite3's error binding a value, hidden behind an earlier statement's
        refused = refused_value(error)  # a lone surrogate, an int past 64 bits
        if refused is not None:
            raise refused from error
        raise driver_error(conn, error, sql, params, cursor) from error
    finally:
        if cursor is not None:
            cursor.close()


@contextmanager
def pipelined(conn: sa.Connection) -> Iterator[None]:
    """Send the writes ``run`` makes in this block together: one round trip on PostgreSQL.

    psycopg's pipeline mode queues statements and waits for all their results
    at the end of the block, where an error of any of them is raised. Writes
    only: a read in the block would wait for its result anyway. SQLite runs
    in-process, so there the block changes nothing; so it does on the async
    driver (``eventstore.aio``), whose pipeline SQLAlchemy's adapter does not
    offer.
    """
    if conn.dialect.name != "postgresql" or conn.dialect.is_async:
        yield
        return
    raw: Any = conn.connection.driver_connection
    try:
        with raw.pipeline():
            yield
    except conn.dialect.loaded_dbapi.Error as exc:
        raise driver_error(conn, exc, "(pipelined read-model writes)", None) from exc


class TableIO:
    """Keyed reads and change-only writes of one table, as driver SQL."""

    def __init__(
        self,
        table: sa.Table,
        dialect: sa.Dialect,
        columns: Sequence[str],
        key: Sequence[str],
        *,
        projection: str,
    ) -> None:
        self.table = table
        self.projection = projection
        """The name of the projection whose table it is (for ``ReadModelCorrupt``)."""
        self.columns = list(columns)
        self.key = list(key)
        self.positional = dialect.paramstyle == "qmark"
        self.key_index = [self.columns.index(name) for name in key]
        self.values = attrgetter(*self.columns)
        """An object's values in column order (a state with an attribute per column)."""
        sqlite = dialect.name == "sqlite"
        self.pipelines = dialect.name == "postgresql"
        """Whether ``pipelined`` sends this dialect's writes together."""
        self._positions = range(len(self.columns))
        self.encoders: list[tuple[int, Any]] = []
        self.decoders: list[tuple[int, Any]] = []
        for index, name in enumerate(self.columns):
            column_type = table.c[name].type
            if isinstance(column_type, sa.JSON):
                self.encoders.append((index, _json_text))
                if sqlite:  # psycopg decodes jsonb itself: a JSON string is already a str
                    self.decoders.append((index, _json_value))
            elif isinstance(column_type, UTCDateTime):
                if sqlite:
                    self.encoders.append((index, _sqlite_time))
                self.decoders.append((index, _time_value))
        quoted = ", ".join(f'"{name}"' for name in self.columns)
        self.select_sql = f'SELECT {quoted} FROM "{table.name}" WHERE '
        self.insert_sql = (
            f'INSERT INTO "{table.name}" ({quoted}) VALUES ({", ".join(self._mark(n) for n in self.columns)})'
        )
        self._selects: dict[tuple[str, ...], str] = {}
        self._updates: dict[tuple[int, ...], _Update] = {}

    def _mark(self, name: str) -> str:
        return "?" if self.positional else f"%({name})s"

    def _params(self, names: Sequence[str], values: Sequence[Any]) -> Any:
        return tuple(values) if self.positional else dict(zip(names, values, strict=True))

    # -- reading ---------------------------------------------------------------
    def select(self, conn: sa.Connection, where: dict[str, Any]) -> list[Values]:
        """Rows matching equality conditions, decoded to Python values."""
        names = tuple(where)
        sql = self._selects.get(names)
        if sql is None:
            condition = " AND ".join(f'"{name}" = {self._mark(name)}' for name in names)
            sql = self._selects[names] = self.select_sql + condition
        rows = run(conn, sql, self._params(names, tuple(where.values())))
        try:
            return [self.decode(row) for row in rows]
        except (ValueError, TypeError, AttributeError) as exc:  # a row edited into garbage (AttributeError:
            # a number or bytes where a time belongs, which SQLite keeps as such): say which, and the remedy
            found = self._corrupt(rows)
            if found is None:
                raise
            raise found from exc

    def _corrupt(self, rows: Sequence[Sequence[Any]]) -> ReadModelCorrupt | None:
        """The error for the first stored value of ``rows`` that does not decode; None if all do now."""
        for row in rows:
            for index, convert in self.decoders:
                try:
                    convert(row[index])
                except (ValueError, TypeError, AttributeError):
                    key = {self.key[i]: row[k] for i, k in enumerate(self.key_index)}
                    what = "JSON" if convert is _json_value else "a time"
                    problem = unreadable(row[index], what)
                    return corrupt(self.projection, self.table.name, key, self.columns[index], problem)
        return None

    def decode(self, row: Sequence[Any]) -> Values:
        values = list(row)
        for index, convert in self.decoders:
            values[index] = convert(values[index])
        return tuple(values)

    # -- writing ---------------------------------------------------------------
    def encode(self, values: Sequence[Any]) -> Values:
        out = list(values)
        for index, convert in self.encoders:
            value = out[index]
            if value is not None:  # every encoder keeps None
                out[index] = convert(value)
        return tuple(out)

    def insert(self, conn: sa.Connection, rows: Sequence[Values]) -> None:
        """Insert encoded rows."""
        if rows:
            run(conn, self.insert_sql, [self._params(self.columns, row) for row in rows], many=True)

    def write(self, conn: sa.Connection, rows: Sequence[tuple[Values, Values | None]]) -> None:
        """Write ``(new, stored)`` encoded rows: insert the new, update what changed in the rest."""
        self.insert(conn, [new for new, stored in rows if stored is None])
        updates: dict[tuple[int, ...], list[Values]] = {}
        for new, stored in rows:
            if stored is None:
                continue
            changed = tuple(compress(self._positions, map(ne, new, stored)))
            if changed:
                updates.setdefault(changed, []).append(new)
        for changed, changed_rows in updates.items():
            update = self._update(changed)
            params = [self._params(update.names, update.values(new)) for new in changed_rows]
            run(conn, update.sql, params, many=True)

    def _update(self, changed: tuple[int, ...]) -> _Update:
        """The UPDATE of the columns at ``changed``, made once per set of columns."""
        update = self._updates.get(changed)
        if update is None:
            sets = ", ".join(f'"{self.columns[i]}" = {self._mark(self.columns[i])}' for i in changed)
            where = " AND ".join(f'"{k}" = {self._mark(f"key_{k}")}' for k in self.key)
            update = self._updates[changed] = _Update(
                f'UPDATE "{self.table.name}" SET {sets} WHERE {where}',
                [self.columns[i] for i in changed] + [f"key_{k}" for k in self.key],
                itemgetter(*changed, *self.key_index),
            )
        return update


class _Update(NamedTuple):
    """An UPDATE of some columns of a row by its key."""

    sql: str
    names: list[str]
    """Its parameters' names: the changed columns', then the key's (``key_<column>``)."""
    values: Callable[[Values], tuple[Any, ...]]
    """Its parameters' values from an encoded row, in that order."""
