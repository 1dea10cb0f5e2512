"""A field inside a JSON column, as text, in the same SQL on both backends' indexes and queries.

``JsonText(flow_events.c.metadata, "causation_id")`` compiles to
``json_extract(metadata, '$.causation_id')`` on SQLite and to
``(metadata ->> 'causation_id')`` on PostgreSQL. The two disagree on a value
that is not a JSON string (SQLite gives a number as a number and a boolean as
1 or 0, PostgreSQL gives the text ``5`` or ``true``), so where the backends
and Python must agree, ``JsonString`` takes the field only when it is a JSON
string, and NULL otherwise.

An expression index is only used by a query that spells the same expression,
so the schema's indexes and the queries that rely on them both build it here.
The path is rendered as a literal (a bound parameter would not match the
index), so its keys are restricted to plain identifiers.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal, _TraverseInternalsType

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class JsonText(ColumnElement[str]):
    """The text at ``path`` inside the JSON column ``column`` (NULL if absent)."""

    __visit_name__ = "json_text"
    inherit_cache = True
    type = sa.Text()
    _traverse_internals: _TraverseInternalsType = [  # noqa: RUF012  # SQLAlchemy's own declaration
        ("column", InternalTraversal.dp_clauseelement),
        ("path", InternalTraversal.dp_string_list),
    ]

    def __init__(self, column: ColumnElement[Any], *path: str) -> None:
        if not path or not all(_KEY.match(key) for key in path):
            raise ValueError(f"a JSON path of plain keys, not {path!r}")
        self.column = column
        self.path = path


@compiles(JsonText, "sqlite")
def _sqlite(element: JsonText, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_extract({compiler.process(element.column, **kw)}, '$.{'.'.join(element.path)}')"


@compiles(JsonText, "postgresql")
def _postgresql(element: JsonText, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    if len(element.path) == 1:
        return f"({column} ->> '{element.path[0]}')"
    return f"({column} #>> '{{{','.join(element.path)}}}')"


class JsonString(JsonText):
    """The string at ``path`` inside the JSON column ``column``: NULL if absent or not a JSON string."""

    __visit_name__ = "json_string"
    inherit_cache = True


@compiles(JsonString, "sqlite")
def _sqlite_string(element: JsonString, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    path = f"'$.{'.'.join(element.path)}'"
    return f"CASE WHEN json_type({column}, {path}) = 'text' THEN json_extract({column}, {path}) END"


@compiles(JsonString, "postgresql")
def _postgresql_string(element: JsonString, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    if len(element.path) == 1:
        value, text = f"{column} -> '{element.path[0]}'", f"{column} ->> '{element.path[0]}'"
    else:
        path = f"'{{{','.join(element.path)}}}'"
        value, text = f"{column} #> {path}", f"{column} #>> {path}"
    return f"(CASE WHEN jsonb_typeof({value}) = 'string' THEN ({text}) END)"


_LISTED = 100
"""Up to this many values an ``IN`` lists them; more are bound as one parameter (``one_of``)."""


def one_of(column: ColumnElement[Any], values: list[str], dialect: str) -> ColumnElement[bool]:
    """``column IN values``; a long list bound as one array (PostgreSQL) or JSON array (SQLite).

    Listed, each value is a parameter of its own, and a statement binds at most
    65535 of them on PostgreSQL (250000 on SQLite).
    """
    if len(values) <= _LISTED:
        return column.in_(values)
    if dialect == "postgresql":
        return column == sa.any_(sa.literal(values, postgresql.ARRAY(sa.Text)))
    each = sa.func.json_each(sa.literal(orjson.dumps(values).decode())).table_valued("value")
    return column.in_(sa.select(each.c.value))
