"""The values an ``sa.Enum`` column allows, as the database holds them: for the layout check.

What the database knows of them depends on how SQLAlchemy wrote the column:

- a native enum on PostgreSQL (the default there) is a type of its own,
  whose labels the database reflects, in their order;
- with ``create_constraint=True`` (on SQLite, or ``native_enum=False``) the
  column is a ``VARCHAR`` with a ``CHECK (column IN (...))``, whose values
  are read back from the constraint;
- otherwise (SQLAlchemy's default on SQLite) it is a plain ``VARCHAR``: the
  database holds no values to compare, only the length, compared as a type.
"""

from __future__ import annotations

import re

import sqlalchemy as sa


def enum_difference(
    conn: sa.Connection,
    inspector: sa.Inspector,
    table: str,
    column: sa.Column[object],
    found: sa.types.TypeEngine[object],
) -> str | None:
    """How the values ``column``'s enum allows differ from those ``table`` holds for it there, or
    None (also when the column is no enum, or the database holds no values for it)."""
    type_ = column.type
    if not isinstance(type_, sa.Enum):
        return None
    declared = list(type_.enums)
    if conn.dialect.name == "postgresql" and type_.native_enum:
        there = getattr(found, "enums", None)
        if there is None or list(there) == declared:
            return None  # not reflected as an enum: the type names differ, and say so already
        return (
            f"has the enum type {type_.name} with the values {_listed(there)} there, and declared "
            f"{_listed(declared)} (the type outlives the tables: give changed values a new type name)"
        )
    if not type_.create_constraint:
        return None
    checked = _checked_values(inspector, table, column.name)
    if checked is None:
        return f"has no CHECK of its values there, and declared one of {_listed(declared)}"
    if set(checked) != set(declared):
        return f"allows the values {_listed(checked)} there, and declared {_listed(declared)}"
    return None


def _checked_values(inspector: sa.Inspector, table: str, column: str) -> list[str] | None:
    """The values of the ``CHECK (column IN (...))`` on ``table``, or None if it has none.

    SQLite reflects the constraint as written, ``d IN ('go', 'stop')``;
    PostgreSQL as it stores it, ``((d)::text = ANY ((ARRAY['go'::character
    varying, ...])::text[]))``.
    """
    names = rf"(?:{re.escape(column)}|\"{re.escape(column)}\")"
    head = re.compile(rf"^[(\s]*{names}\)?(?:::[\w ]+)?\s*(?:IN\s*\(|=\s*ANY\s*\()", re.IGNORECASE)
    for check in inspector.get_check_constraints(table):
        text = str(check.get("sqltext", ""))
        if head.match(text):
            return [value.replace("''", "'") for value in _QUOTED.findall(text)]
    return None


def _listed(values: list[str] | tuple[str, ...]) -> str:
    return "(" + ", ".join(map(repr, values)) + ")"


_QUOTED = re.compile(r"'((?:[^']|'')*)'")
