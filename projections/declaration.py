"""``Projection``: how a read model is declared: its name, version, tables and fold.

A ``Projection`` declares its tables once (``define_tables``) and folds
events into them (``apply``, or ``on_<EventType>`` handlers). Every index and
constraint name carries the tag of the build that created it, so a
rebuild's tables can sit beside the live ones.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import ClassVar, Self

import sqlalchemy as sa
from sqlalchemy.sql.elements import quoted_name

from eventstore import EventStore, RecordedEvent, Transaction
from eventstore.checks import shown
from eventstore.errors import (
    EventStoreError,
    ProjectionError,
)
from eventstore.projection import NOTHING, FoldSite, FusedWrite, fold_failed, locate

from .checkpoints import INLINE, read_checkpoint
from .definitions import check_definition, check_returned
from .ownership import layout_difference
from .rebuilding import check_made, ensure
from .retiring import refuse_retired


class Projection:
    """Base class for read models.

    Subclasses set ``name`` and ``version``, declare tables in
    ``define_tables`` with their base names, and either override ``apply`` or
    write ``on_<EventType>(self, tx, event)`` handlers. Handlers reach their
    tables through ``self.table("name")``, which a rebuild points elsewhere.
    Bump ``version`` whenever the tables or the fold change: the next open
    rebuilds the read model from the log.

    A projection may also define a bulk fold for rebuilds,
    ``fill(store, up_to, batch, report, *, batch_size) -> int``: fold the
    events up to position ``up_to`` into its (empty) tables, writing about
    ``batch_size`` events' worth per transaction opened by ``batch()``, calling
    ``report(events_done)`` after each, and return the number of events read.
    Without one, a rebuild applies the log in position order, a batch at a
    time.
    """

    name: ClassVar[str] = ""
    version: ClassVar[int] = 1
    kind: ClassVar[str] = "catchup"

    def __init__(self) -> None:
        check_definition(self)
        self._tables = self.build_tables("", "")

    def define_tables(self, metadata: sa.MetaData) -> None:
        """Declare this projection's tables on ``metadata``."""
        raise NotImplementedError  # abstract: every projection owns some tables

    def table(self, name: str) -> sa.Table:
        """The table declared as ``name`` (the live one, or during a rebuild its fresh copy)."""
        try:
            return self._tables[name]
        except (KeyError, TypeError):  # a name never declared, or no name (unhashable)
            declared = ", ".join(repr(base) for base in self._tables) or "none"
            raise ProjectionError(
                f"projection {self.name!r} has no table {shown(name)}: define_tables declares {declared}, "
                "by the names it gives them"
            ) from None

    @property
    def tables(self) -> dict[str, sa.Table]:
        return dict(self._tables)

    def build_tables(self, suffix: str, tag: str) -> dict[str, sa.Table]:
        """This projection's tables named ``<name><suffix>``, constraints tagged with ``tag``.

        A foreign key to another of these tables points at its ``<name><suffix>``
        too, so a rebuild's fresh tables refer to each other, never to the live ones.
        """
        source = sa.MetaData()
        self.define_tables(source)
        target = sa.MetaData()
        built: dict[str, sa.Table] = {}
        inner: list[sa.ForeignKeyConstraint] = []
        for base in source.sorted_tables:
            keys = [key for key in base.foreign_key_constraints if _refers_within(key, source)]
            for key in keys:
                base.constraints.discard(key)  # copied below, pointing at the copies (source is ours)
            inner.extend(keys)
            built[base.name] = base.to_metadata(target, name=base.name + suffix)
        for key in inner:
            built[key.table.name].append_constraint(_key_between(key, built))
        if tag:
            for name, table in built.items():
                _tag_names(table, name, tag)
        return built

    @property
    def copies(self) -> dict[str, str]:
        """The tables this copy writes to (``targeting``) that are a build's, by the table each replaces."""
        return {table.name: name for name, table in self._tables.items() if table.name != name}

    def targeting(self, suffix: str, tag: str) -> Self:
        """A copy of this projection that writes to the tables of another build."""
        clone = copy.copy(self)
        clone._tables = self.build_tables(suffix, tag)
        return clone

    def apply(self, tx: Transaction, events: Sequence[RecordedEvent]) -> None:
        """Fold events into the read model; by default, call ``on_<type>`` handlers."""
        event: RecordedEvent | None = None
        try:  # one try for the batch, not a context per event: a no-op handler's cost stays the same
            for event in events:
                handler = getattr(self, f"on_{event.type}", None)
                if handler is not None:
                    check_returned(self, f"on_{event.type}", handler(tx, event))
        except (EventStoreError, sa.exc.SQLAlchemyError) as exc:  # its type kept: a caller catches it
            if event is not None:
                locate(exc, FoldSite.of(self.name, f"on_{event.type}", [event], self.copies))
            raise
        except Exception as exc:
            if event is None:
                raise
            raise fold_failed(self.name, f"on_{event.type}", [event], exc) from exc

    @property
    def fuses(self) -> bool:
        """Whether ``fuse`` can ever fold: overridden, or the handlers of the default ``apply``."""
        return type(self).fuse is not Projection.fuse or type(self).apply is Projection.apply

    def fuse(self, dialect: str, events: Sequence[RecordedEvent], prefix: str) -> FusedWrite | None:
        """The fold of ``events`` as SQL in the append statement (``eventstore.projection.FusedWrite``).

        Here: nothing to write when no ``on_<type>`` handler takes these events,
        else None (the ordinary path). A projection that can write its fold as
        SQL overrides this.
        """
        if not self.fuses:
            return None
        if any(getattr(self, f"on_{event.type}", None) is not None for event in events):
            return None
        return NOTHING

    def prepare(self, store: EventStore) -> None:
        """Create the tables on first use; rebuild them if the version changed (as an inline projection)."""
        check_made(self)
        ensure(store, self, inline=True)

    def check_current(self, tx: Transaction) -> None:
        """``ProjectionError`` unless the live tables are this version's: called within an append
        that holds appends, after a read model was swapped (``EventStore.fence``).

        A process opened before a newer version's rebuild would otherwise fold its
        appends into the new tables with its older handlers; after a rebuild of
        this version by code whose tables differ (changed without a version
        bump), into tables it does not know.
        """
        current = read_checkpoint(tx.connection, self.name)
        if current is None:
            refuse_retired(tx.store, tx.connection, self.name)
            raise ProjectionError(
                f"projection {self.name!r} has no read model in this store any more; nothing was "
                "written: open the store again to build it"
            )
        if current.kind != INLINE:
            raise ProjectionError(
                f"projection {self.name!r} was handed to a runner (made catch-up) while this process folds "
                "it inline; nothing was written: open the store without it, and keep it with a CatchUpRunner"
            )
        if current.version > self.version:
            raise ProjectionError(
                f"projection {self.name!r} was rebuilt by version {current.version} while this process "
                f"folds version {self.version}; nothing was written: restart it with the newer code"
            )
        if current.version < self.version:
            raise ProjectionError(
                f"projection {self.name!r} was rebuilt by version {current.version} while this process "
                f"folds version {self.version}; nothing was written: open the store again to rebuild it"
            )
        difference = layout_difference(tx.connection, self)  # a rebuild of this version: its tables?
        if difference is not None:
            raise ProjectionError(
                f"projection {self.name!r} was rebuilt at version {current.version} with other tables "
                f"than this process folds into ({difference}); nothing was written: if its tables "
                "changed, bump its version, and run the code that has them"
            )


def _refers_within(key: sa.ForeignKeyConstraint, metadata: sa.MetaData) -> bool:
    """Whether ``key`` points at a table of ``metadata``: one of the same projection's."""
    try:
        referred = key.referred_table
    except sa.exc.NoReferenceError:
        return False  # a table the projection does not define: the key names it as written
    return metadata.tables.get(referred.key) is referred


def _key_between(key: sa.ForeignKeyConstraint, built: dict[str, sa.Table]) -> sa.ForeignKeyConstraint:
    """``key``, with all its options, from and to the built copies of its tables."""
    return sa.ForeignKeyConstraint(
        [element.parent.key for element in key.elements],
        [built[element.column.table.name].c[element.column.key] for element in key.elements],
        name=key.name,
        onupdate=key.onupdate,
        ondelete=key.ondelete,
        deferrable=key.deferrable,
        initially=key.initially,
        use_alter=key.use_alter,
        match=key.match,
        comment=key.comment,
        info=dict(key.info),
        **key.dialect_kwargs,
    )


def _tag_names(table: sa.Table, base: str, tag: str) -> None:
    table.primary_key.name = f"pk_{base}_{tag}"
    for number, constraint in enumerate(sorted(table.constraints, key=lambda c: str(c.name))):
        if isinstance(constraint, sa.UniqueConstraint) and not isinstance(
            constraint, sa.PrimaryKeyConstraint
        ):
            constraint.name = f"uq_{base}_{number}_{tag}"
    for index in table.indexes:
        index.name = quoted_name(f"{index.name}_{tag}", None)
