"""Column types shared by read models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite keeps naive UTC text)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("read-model timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class TextJSON(sa.JSON):
    """JSON kept as its text: declared ``TEXT`` on SQLite.

    SQLite gives a column declared ``JSON`` numeric affinity: the text of a
    document that is a bare number is stored as that number, so an integer
    past 2**63-1 came back as a float and ``1.0`` as ``1``. TEXT affinity
    stores the text as it is.
    """

    cache_ok = True


@compiles(TextJSON, "sqlite")
def _text_on_sqlite(type_: TextJSON, compiler: object, **kw: object) -> str:
    return "TEXT"


JSON = TextJSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
"""JSON documents: ``jsonb`` on PostgreSQL, ``TEXT`` on SQLite; Python ``None`` is SQL NULL."""
