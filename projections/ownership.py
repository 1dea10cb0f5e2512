"""Which projection owns each read-model table (``projection_tables``).

A build creates a projection's tables and a rebuild drops and replaces them,
so before either the machinery takes the names it will touch: a name another
projection owns, or a table that exists and nobody recorded, is refused with
``ProjectionError`` before anything is written.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import sqlalchemy as sa

from eventstore.errors import ProjectionError
from eventstore.schema import projection_tables as owned
from eventstore.wording import nouns

from .definitions import ASCII_LOWER, REBUILD_SUFFIX
from .enum_labels import enum_difference

if TYPE_CHECKING:
    from .checkpoints import Checkpoint
    from .declaration import Projection


def take_tables(
    conn: sa.Connection, projection: Projection, current: Checkpoint | None, *, fresh: bool
) -> None:
    """Record ``projection`` as the owner of its live tables (and with ``fresh``, a rebuild's).

    A projection built before ownership was recorded (a checkpoint, no rows
    here) adopts the tables it names that exist and that its build made: all
    of them if its version is unchanged, else those carrying its build tag.
    """
    if conn.dialect.name == "postgresql":
        # One taker at a time (SQLite's write transactions already exclude each other);
        # plain reads of the table go on.
        conn.exec_driver_sql("LOCK TABLE projection_tables IN EXCLUSIVE MODE")
    live = [table.name for table in projection.tables.values()]
    names = live + ([name + REBUILD_SUFFIX for name in live] if fresh else [])
    folds = conn.dialect.name == "sqlite"  # SQLite compares table names without ASCII case

    def key(name: str) -> str:
        return name.translate(ASCII_LOWER) if folds else name

    alike = {key(name): name for name in live}
    for name in live:
        if alike[key(name)] != name:
            raise ProjectionError(
                f"projection {projection.name!r} names the tables {name!r} and {alike[key(name)]!r}: "
                "one table to SQLite, which compares names without ASCII case; give them names "
                "that differ otherwise"
            )
    stored = sa.func.lower(owned.c.table_name) if folds else owned.c.table_name
    query = sa.select(stored.label("key"), owned.c.projection).where(stored.in_([key(n) for n in names]))
    owners = {row.key: row.projection for row in conn.execute(query)}
    inspector = sa.inspect(conn)
    taken: dict[str, str] = {}
    claimed: list[str] = []
    for name in names:
        owner = owners.get(key(name))
        if owner == projection.name:
            continue
        if owner is not None:
            taken[name] = f"{name!r} belongs to projection {owner!r}"
        elif not inspector.has_table(name) or (
            name in live and _built_before_ownership(conn, inspector, projection, current, name)
        ):
            claimed.append(name)
        else:
            taken[name] = f"{name!r} exists and is not its own"
    if taken:
        listed = ", ".join(map(repr, taken))
        where = (
            f"has never been built here, but its {nouns(len(taken), 'table')} {listed} "
            f"{'exists' if len(taken) == 1 else 'exist'}"
            if current is None
            else f"may not build the {nouns(len(taken), 'table')} {listed}"
        )
        raise ProjectionError(
            f"projection {projection.name!r} {where}: {'; '.join(taken.values())}; "
            "give its tables names of their own"
        )
    if claimed:
        conn.execute(
            owned.insert(), [{"table_name": name, "projection": projection.name} for name in claimed]
        )


def refuse_other_tables(conn: sa.Connection, projection: Projection, version: int) -> None:
    """``ProjectionError`` if the tables recorded for ``projection``'s name are not the ones it names.

    Called when the checkpoint is at this very version, so nothing would be built:
    another projection of the same name (which would share, and so skip, this one's
    checkpoint), or tables changed without a version bump. Nothing is recorded
    for a projection built before ownership was (migration 0009): nothing to compare.
    """
    folds = conn.dialect.name == "sqlite"
    query = sa.select(owned.c.table_name).where(owned.c.projection == projection.name)
    recorded = {name for name in conn.execute(query).scalars() if not name.endswith(REBUILD_SUFFIX)}
    named = {table.name for table in projection.tables.values()}

    def keys(names: set[str]) -> set[str]:
        return {name.translate(ASCII_LOWER) for name in names} if folds else names

    if keys(recorded) == keys(named):
        return
    inspector = sa.inspect(conn)
    # a name a failed rebuild of a new version claimed, and never built, says nothing
    recorded = {name for name in recorded if inspector.has_table(name)}
    if not recorded or keys(recorded) == keys(named):
        return
    raise ProjectionError(
        f"projection {projection.name!r} was built here at version {version} with the "
        f"{nouns(len(recorded), 'table')} {', '.join(map(repr, sorted(recorded)))}, "
        f"and this {type(projection).__name__} of the same name and version names "
        f"{', '.join(map(repr, sorted(named)))}: if it is another projection, "
        "give it a name of its own; if its tables changed, bump its version"
    )


def layout_difference(conn: sa.Connection, projection: Projection) -> str | None:
    """How the live tables recorded for ``projection``'s name differ from the ones it declares, or None.

    Table names first (as ``refuse_other_tables`` compares them), then each
    table's column names, their types and nullability, and its primary key:
    what another process's rebuild at the same version may have changed (its
    tables changed without a version bump). A type is compared as the dialect
    writes it, in the spelling the database reflects it in (PostgreSQL keeps
    ``FLOAT`` as ``DOUBLE PRECISION``); an enum's values too, where the
    database holds them (``enum_labels``).
    """
    query = sa.select(owned.c.table_name).where(owned.c.projection == projection.name)
    inspector = sa.inspect(conn)
    recorded = {
        name
        for name in conn.execute(query).scalars()
        if not name.endswith(REBUILD_SUFFIX) and inspector.has_table(name)
    }
    folds = conn.dialect.name == "sqlite"

    def key(name: str) -> str:
        return name.translate(ASCII_LOWER) if folds else name

    named = {table.name for table in projection.tables.values()}
    if recorded and {key(name) for name in recorded} != {key(name) for name in named}:
        return (
            f"its {nouns(len(recorded), 'table')} {'is' if len(recorded) == 1 else 'are'} "
            f"{', '.join(map(repr, sorted(recorded)))} there, "
            f"and this {type(projection).__name__} names {', '.join(map(repr, sorted(named)))}"
        )
    for table in projection.tables.values():
        if not inspector.has_table(table.name):
            continue  # nothing recorded for a projection built before ownership was: nothing to compare
        reflected = {key(column["name"]): column for column in inspector.get_columns(table.name)}
        found = sorted(column["name"] for column in reflected.values())
        declared = sorted(column.name for column in table.columns)
        if sorted(reflected) != sorted(key(name) for name in declared):
            return (
                f"its table {table.name!r} has the {nouns(len(found), 'column')} "
                f"{', '.join(map(repr, found))} there, "
                f"and this {type(projection).__name__} declares {', '.join(map(repr, declared))}"
            )
        for column in table.columns:
            there = reflected[key(column.name)]
            difference = _column_difference(conn.dialect, column, there["type"], there["nullable"])
            if difference is None:
                difference = enum_difference(conn, inspector, table.name, column, there["type"])
            if difference is not None:
                return f"its column {table.name}.{column.name} {difference}"
        keyed = inspector.get_pk_constraint(table.name)["constrained_columns"]
        keys = [column.name for column in table.primary_key]
        if sorted(map(key, keyed)) != sorted(map(key, keys)):
            return (
                f"its table {table.name!r} has the primary key ({', '.join(keyed)}) there, "
                f"and this {type(projection).__name__} declares ({', '.join(keys)})"
            )
    return None


def _column_difference(
    dialect: sa.Dialect, column: sa.Column[object], found: sa.types.TypeEngine[object], nullable: bool
) -> str | None:
    """How a column as the database reflects it differs from its declaration, or None."""
    declared, there = _type_name(column.type, dialect), _type_name(found, dialect)
    if declared is not None and there is not None and declared != there:
        return f"is {there} there, and declared {declared}"
    if nullable != bool(column.nullable):
        return f"is {_nulls(nullable)} there, and declared {_nulls(bool(column.nullable))}"
    return None


def _nulls(nullable: bool) -> str:
    return "NULL" if nullable else "NOT NULL"


def _type_name(type_: sa.types.TypeEngine[object], dialect: sa.Dialect) -> str | None:
    """The type as ``dialect`` writes it in DDL, in the form it reflects it in; None when that is
    not known (a type the dialect does not reflect, or one of the application's own): then only
    the names are compared."""
    if isinstance(type_, sa.types.NullType | sa.types.UserDefinedType):
        return None
    try:
        name = " ".join(type_.compile(dialect=dialect).upper().split())
    except sa.exc.CompileError:
        return None
    if dialect.name == "postgresql":
        # the spellings PostgreSQL stores under another name (SQLite keeps the DDL's own)
        if match := _FLOAT.fullmatch(name):
            bits = match.group(1)
            return "REAL" if bits is not None and int(bits) <= 24 else "DOUBLE PRECISION"
        name = _DECIMAL.sub("NUMERIC", name)
        if name == "CHAR":
            return "CHAR(1)"
    return name


_FLOAT = re.compile(r"FLOAT(?:\((\d+)\))?")
_DECIMAL = re.compile(r"^DECIMAL\b")


def release_fresh_tables(conn: sa.Connection, projection: Projection) -> None:
    """The swap renamed the fresh tables to the live names: those names are free again."""
    fresh = [table.name + REBUILD_SUFFIX for table in projection.tables.values()]
    conn.execute(owned.delete().where(owned.c.projection == projection.name, owned.c.table_name.in_(fresh)))


def drop_fresh_tables(conn: sa.Connection, projection: Projection) -> None:
    """Drop a failed rebuild's fresh tables, those of their names ``projection`` owns, and free the names.

    A table under such a name that is not its own (``take_tables`` refused it) stays as it is.
    """
    fresh = [table.name + REBUILD_SUFFIX for table in projection.tables.values()]
    query = sa.select(owned.c.table_name).where(
        owned.c.projection == projection.name, owned.c.table_name.in_(fresh)
    )
    mine = list(conn.execute(query).scalars())
    quote = conn.dialect.identifier_preparer.quote_identifier
    for name in referrers_first(conn, mine):
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {quote(name)}")
    release_fresh_tables(conn, projection)


def drop_dropped_tables(conn: sa.Connection, projection: Projection) -> list[str]:
    """Drop the tables ``projection`` owns that its definition no longer names (an older version's).

    Called by the swap, in its transaction: the rebuilt version replaces the
    old one whole, so a table only the old one had goes too, and its name is
    free again.
    """
    named = {table.name for table in projection.tables.values()}
    named |= {name + REBUILD_SUFFIX for name in named}
    query = sa.select(owned.c.table_name).where(owned.c.projection == projection.name)
    stale = [name for name in conn.execute(query).scalars() if name not in named]
    quote = conn.dialect.identifier_preparer.quote_identifier
    for name in referrers_first(conn, stale):
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {quote(name)}")
    if stale:
        conn.execute(
            owned.delete().where(owned.c.projection == projection.name, owned.c.table_name.in_(stale))
        )
    return stale


def referrers_first(conn: sa.Connection, names: list[str]) -> list[str]:
    """The tables of ``names`` that exist, each before those its foreign keys point at.

    PostgreSQL refuses to drop a table another one's key points at, and
    SQLite checks that key as if the table's rows were deleted.
    """
    if not names:
        return []
    inspector = sa.inspect(conn)
    metadata = sa.MetaData()
    tables = [sa.Table(name, metadata, autoload_with=conn) for name in names if inspector.has_table(name)]
    return [table.name for table in reversed(metadata.sorted_tables) if table in tables]


def _built_before_ownership(
    conn: sa.Connection,
    inspector: sa.Inspector,
    projection: Projection,
    current: Checkpoint | None,
    name: str,
) -> bool:
    if current is None:
        return False
    if conn.execute(
        sa.select(owned.c.table_name).where(owned.c.projection == projection.name).limit(1)
    ).first():
        return False  # ownership is recorded for this projection, and this table is not in it
    if current.version == projection.version:
        return True
    suffix = f"_{current.build}"
    named = [inspector.get_pk_constraint(name).get("name")]
    named += [index["name"] for index in inspector.get_indexes(name)]
    named += [unique["name"] for unique in inspector.get_unique_constraints(name)]
    return any(isinstance(n, str) and n.endswith(suffix) for n in named)


def enum_types_only_of(conn: sa.Connection, tables: list[str]) -> list[str]:
    """PostgreSQL: the enum types of the columns of ``tables`` (in their schema) that nothing else uses,
    not even as an array: those to drop with them. Elsewhere, and for no tables, none."""
    if conn.dialect.name != "postgresql" or not tables:
        return []
    query = sa.text(
        """
        WITH dropped AS (
            SELECT to_regclass(quote_ident(name)) AS oid FROM unnest(CAST(:tables AS text[])) AS name
        )
        SELECT DISTINCT t.typname FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_type t ON t.oid = a.atttypid AND t.typtype = 'e' AND t.typnamespace = c.relnamespace
        WHERE a.attrelid IN (SELECT oid FROM dropped) AND a.attnum > 0 AND NOT a.attisdropped
        AND NOT EXISTS (
            SELECT 1 FROM pg_depend d WHERE d.refobjid IN (t.oid, t.typarray) AND d.deptype = 'n'
            AND NOT (d.classid = 'pg_class'::regclass AND d.objid IN (SELECT oid FROM dropped))
        )
        ORDER BY t.typname
        """
    )
    return list(conn.execute(query, {"tables": tables}).scalars())
