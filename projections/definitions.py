"""What a projection's definition must be before the machinery builds it.

Checked when a ``Projection`` is made, so a bad definition fails with
``ProjectionError`` before it writes anything: its name, version and kind fit
the checkpoint row; its tables, and the names a rebuild derives from them,
fit PostgreSQL's identifiers; its folds are plain functions, whose return
value ``check_returned`` then checks at every call.
"""

from __future__ import annotations

import functools
import inspect
import string
import unicodedata
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from eventstore.checks import shown
from eventstore.errors import ProjectionError
from eventstore.rebuild_claims import REBUILD_CLAIM
from eventstore.schema import metadata as store_metadata

if TYPE_CHECKING:
    from .declaration import Projection

REBUILD_SUFFIX = "__rebuild"
"""A rebuild's fresh tables are ``<table>__rebuild``: no projection may name a table so."""
MAX_NAME_LENGTH = 100 - len(REBUILD_CLAIM)
"""The claim's name must fit ``projection_checkpoints.name``, a VARCHAR(100)."""
MAX_VERSION = 2**31 - 1
"""The checkpoint's ``version`` is an INTEGER."""
MAX_IDENTIFIER_BYTES = 63
"""PostgreSQL's limit on a table, index or constraint name (longer ones are refused or cut)."""
KINDS = ("catchup", "inline")
ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
"""SQLite compares table names without ASCII case: ``name.translate(ASCII_LOWER)`` is its key."""
SAMPLE_TAG = "0" * 8
"""As long as a build's tag (``secrets.token_hex(4)``)."""


def check_definition(projection: Projection) -> None:
    """Raise ``ProjectionError`` unless ``projection`` can be built and folded safely."""
    _check_name_version_kind(projection)
    _check_declares_tables(projection)
    declared = sa.MetaData()
    projection.define_tables(declared)
    _check_not_built_in(projection, declared)
    _check_keys_within(projection, declared)
    _check_tables(projection)
    _check_folds(type(projection))


def _check_name_version_kind(projection: Projection) -> None:
    name, version, kind = projection.name, projection.version, projection.kind
    label = type(projection).__name__
    if not name:
        raise ProjectionError(f"{label} must set a name")
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or "#" in name or _utf8_bytes(name) is None:
        raise ProjectionError(
            f"{label} has the name {name!r}: a projection's name is UTF-8 text of at most "
            f"{MAX_NAME_LENGTH} characters, without '#' or NUL"
        )
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= MAX_VERSION:
        raise ProjectionError(
            f"projection {name!r} has the version {version!r}: a version is an int from 0 to {MAX_VERSION}"
        )
    if kind not in KINDS:
        raise ProjectionError(
            f"projection {name!r} has the kind {kind!r}: a kind is one of {', '.join(KINDS)}"
        )


def _check_declares_tables(projection: Projection) -> None:
    """A projection declares its tables: without ``define_tables`` there is nothing to build."""
    from .declaration import Projection  # here: it imports this module

    if type(projection).define_tables is Projection.define_tables:
        raise ProjectionError(
            f"projection {projection.name!r} ({type(projection).__name__}) must define "
            "define_tables(self, metadata), declaring the tables it folds into"
        )


def _check_not_built_in(projection: Projection, declared: sa.MetaData) -> None:
    """The built-in read models' names are theirs: another projection of one would take over their
    checkpoint, and a higher version's rebuild would drop their tables."""
    from .flows import FlowProjection  # here: they are made with this module's checks
    from .langgraph import LangGraphProjection

    for built_in in (FlowProjection, LangGraphProjection):
        if isinstance(projection, built_in):
            continue
        if projection.name == built_in.name:
            raise ProjectionError(
                f"{type(projection).__name__} has the name {projection.name!r}, the built-in "
                f"{built_in.__name__}'s; give it a name of its own"
            )
        theirs = _table_keys(built_in)  # holding one, the projection would keep theirs from being built
        for table in (declared_table.name for declared_table in declared.tables.values()):
            if (same := theirs.get(table.translate(ASCII_LOWER))) is not None:
                alike = "" if same == table else f" ({same!r} to SQLite, which compares names without case)"
                raise ProjectionError(
                    f"projection {projection.name!r} names the table {table!r}{alike}, one of the "
                    f"built-in {built_in.__name__}'s; give its tables names of their own"
                )


@functools.cache
def _table_keys(cls: type[Projection]) -> dict[str, str]:
    """A built-in read model's table names, by the key SQLite compares them by (found without
    constructing one: that would check its definition, and so this one's, again)."""
    metadata = sa.MetaData()
    cls.define_tables(cls.__new__(cls), metadata)
    return {table.name.translate(ASCII_LOWER): table.name for table in metadata.tables.values()}


def _check_tables(projection: Projection) -> None:
    name = projection.name
    for base, fresh in projection.build_tables(REBUILD_SUFFIX, SAMPLE_TAG).items():
        if base in store_metadata.tables or base == "alembic_version":
            raise ProjectionError(
                f"projection {name!r} names the table {base!r}, one of the event store's own; "
                "give its tables names of their own"
            )
        if base.endswith(REBUILD_SUFFIX):
            raise ProjectionError(
                f"projection {name!r} names the table {base!r}, which ends in {REBUILD_SUFFIX!r}: "
                "that suffix names a rebuild's fresh tables; give it another name"
            )
        if fresh.schema is not None:
            raise ProjectionError(
                f"projection {name!r}: its table {base!r} names the schema {fresh.schema!r}; a projection's "
                "tables live beside the store's (open the store with schema= to place them all)"
            )
        for named in [base, *(str(column.name) for column in fresh.columns)]:
            if '"' in named or any(unicodedata.category(c) == "Cc" for c in named):
                raise ProjectionError(
                    f"projection {name!r} names {named!r}: a table or column name may not hold "
                    "a double quote or a control character"
                )
        constraints = [
            c for c in fresh.constraints if c is not fresh.primary_key or fresh.primary_key.columns
        ]
        derived = [fresh.name, *(c.name for c in constraints), *(i.name for i in fresh.indexes)]
        for identifier in derived:
            if not isinstance(identifier, str):
                continue  # unnamed: the database names it
            size = _utf8_bytes(identifier)
            if size is None:
                raise ProjectionError(f"projection {name!r} names {identifier!r}: not UTF-8 text without NUL")
            if size > MAX_IDENTIFIER_BYTES:
                raise ProjectionError(
                    f"projection {name!r}: its table {base!r} gives the name {identifier!r}, longer than "
                    f"PostgreSQL's {MAX_IDENTIFIER_BYTES} bytes; shorten the table's name or its index's"
                )


def _check_keys_within(projection: Projection, declared: sa.MetaData) -> None:
    """A foreign key points at one of the projection's own tables (which a rebuild's copies then
    point at): one to any other table failed as its tables were ordered or built, with
    SQLAlchemy's ``NoReferencedTableError``, or would tie the read model to a table its rebuilds
    do not replace."""
    for table in declared.tables.values():
        for key in table.foreign_keys:
            referred, _, column = key.target_fullname.rpartition(".")
            if referred not in declared.tables:
                raise ProjectionError(
                    f"projection {projection.name!r}: its table {table.name!r} has a foreign key to "
                    f"{referred!r} ({column!r}), a table it does not define; a projection's keys "
                    "may point only at its own tables"
                )


def _utf8_bytes(text: str) -> int | None:
    """How many bytes ``text`` takes in UTF-8; None if it has NUL or cannot be encoded."""
    try:
        return None if "\x00" in text else len(text.encode())
    except UnicodeEncodeError:
        return None


def _check_folds(cls: type[Projection]) -> None:
    folds = [attr for attr in dir(cls) if attr.startswith("on_")] + ["apply", "apply_many", "fill"]
    for attr in folds:
        fold = getattr(cls, attr, None)
        if fold is None:
            continue
        if not callable(fold):
            raise ProjectionError(f"{cls.__name__}.{attr} must be a function (a handler), not {shown(fold)}")
        if (
            inspect.iscoroutinefunction(fold)
            or inspect.isasyncgenfunction(fold)
            or inspect.isgeneratorfunction(fold)
        ):
            raise ProjectionError(
                f"{cls.__name__}.{attr} must be a plain function, not an async or generator one: "
                "the machinery calls it and would never run its body"
            )


def check_returned(projection: Projection, fold: str, returned: Any) -> None:
    """A fold returns None; anything else (a coroutine, a generator) means its writes never ran."""
    if returned is None:
        return
    if inspect.iscoroutine(returned) or inspect.isgenerator(returned):
        returned.close()  # never to be run: close it rather than leave it to warn
    raise ProjectionError(
        f"{fold} of projection {projection.name!r} returned a {type(returned).__name__}, not None; "
        "nothing of this batch was written"
    )
