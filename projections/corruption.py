"""A read-model row its projection never wrote (edited by hand, by a bad migration, a backup half
restored): which row and column, and the ``ReadModelCorrupt`` that says so and how to rebuild it.

Reads decode their rows unchecked, for the hot paths' sake. Only once decoding has failed is the
read run again undecoded, to find the row and the column: that costs the error path alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from eventstore.errors import ReadModelCorrupt, command_line

from .types import UTCDateTime

_REBUILD = {"flows": "flows", "langgraph": "projections.langgraph:LangGraphProjection"}
"""``eventstore rebuild``'s argument for the built-in projections."""


def corrupt(
    projection: str, table: str, key: Mapping[str, Any], column: str, problem: str
) -> ReadModelCorrupt:
    """The error for a row of ``projection``'s ``table`` whose ``column`` ``problem`` says is wrong."""
    rebuild = command_line("rebuild", _REBUILD.get(projection, "MODULE:CLASS"))
    return ReadModelCorrupt(projection, table, dict(key), column, problem, rebuild)


def unreadable(value: Any, what: str) -> str:
    """``problem`` for a stored value that is not ``what`` (``"JSON"``, ``"a time"``...)."""
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"holds {shown}, which is not {what}"


def _kind(column_type: Any, exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError) or isinstance(column_type, sa.JSON):  # orjson's is json's
        return "JSON"
    if isinstance(column_type, sa.DateTime | UTCDateTime):
        return "a time"
    return f"readable ({exc})"


def find_corrupt(conn: sa.Connection, query: sa.Select[Any], projection: str) -> ReadModelCorrupt | None:
    """The error for the first row of ``query`` (read again undecoded) whose column cannot be decoded.

    None if every row decodes now: the read failed for another reason. The key is the primary key
    of the table of the column that failed, as far as ``query`` selects it.
    """
    columns = list(query.selected_columns)
    raw = query.with_only_columns(
        *(sa.type_coerce(c, sa.types.NullType()).label(f"c{i}") for i, c in enumerate(columns))
    )
    dialect = conn.dialect
    decoders = [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns]
    for row in conn.execute(raw):
        for column, decode, value in zip(columns, decoders, row, strict=True):
            if decode is None:
                continue
            try:
                decode(value)
            except (ValueError, TypeError) as exc:
                table = getattr(column, "table", None)
                names = [c.name for c in table.primary_key] if isinstance(table, sa.Table) else []
                selected = {getattr(c, "name", None): v for c, v in zip(columns, row, strict=True)}
                key = {name: selected[name] for name in names if name in selected}
                where = table.name if isinstance(table, sa.Table) else "?"
                return corrupt(
                    projection, where, key, column.name, unreadable(value, _kind(column.type, exc))
                )
    return None
