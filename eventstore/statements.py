"""The SQL and parameters of the store's own reads, each shape of statement compiled once.

The store runs its page queries on the driver's cursor (``store._fetch_raw``), so
SQLAlchemy's own compiled cache, which lives in ``Connection.execute``, is not
consulted: compiling a select anew took 0.3 to 0.7 ms, more than the query
itself for a short read (an audit trail asked one such read per gate decision).
Here a statement is compiled once per dialect and cache key, as
``Connection.execute`` would, and each call only binds its own values.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.cache_key import CacheKey
from sqlalchemy.sql.compiler import SQLCompiler

_SHAPES = 500
"""Statements kept per dialect: far more than the store's read shapes, few enough to be small."""

_caches: weakref.WeakKeyDictionary[Dialect, dict[Any, SQLCompiler]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def compiled_sql(
    dialect: Dialect, query: sa.Select[Any], params: Mapping[str, Any] | None = None
) -> tuple[str, Any]:
    """The SQL text of ``query`` and its parameters, as the driver takes them (IN lists expanded).

    ``params`` gives the values of ``query``'s named ``bindparam``s: a statement built once,
    at import, then costs no building per call either.
    """
    key = query._generate_cache_key()  # how SQLAlchemy's own statement cache keys a statement
    # By the binds' own names: the expanded state looks each value up by them, then escapes them
    # (a name psycopg cannot take, "flow.id", would otherwise fall back to the first call's value).
    if key is None:  # a construct that cannot be cached: compiled for this call alone
        compiled = query.compile(dialect=dialect)
        values = compiled.construct_params(params, escape_names=False)
    else:
        compiled = _cached(dialect, key, query)
        values = compiled.construct_params(params, extracted_parameters=key.bindparams, escape_names=False)
    state = compiled.construct_expanded_state(values)
    return state.statement, state.positional_parameters if compiled.positional else state.parameters


def _cached(dialect: Dialect, key: CacheKey, query: sa.Select[Any]) -> SQLCompiler:
    with _lock:
        cache = _caches.get(dialect)
        if cache is None:
            cache = _caches[dialect] = {}
        found = cache.get(key.key)
    if found is not None:
        return found
    compiled = query.compile(dialect=dialect, cache_key=key)  # its binds then take another call's values
    with _lock:
        if len(cache) >= _SHAPES:  # callers' own conditions (``read_where``) could pile up shapes
            cache.clear()
        cache[key.key] = compiled
    return compiled
