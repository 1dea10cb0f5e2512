"""Indexes a projection declares that its live tables lack: added in place, with no rebuild.

An index changes no row a fold writes, so a projection may declare a new one
without a version bump (the layout check, ``ownership.layout_difference``,
compares columns and keys, never indexes). A store built before it gets it
the next time the projection is ensured, inside ``ensure``'s transaction,
which holds appends: one process adds it, the others then find it there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from .declaration import Projection


def add_missing_indexes(conn: sa.Connection, projection: Projection, build: str) -> list[str]:
    """Create the declared indexes the live tables (of build ``build``) lack; return their names.

    Building one reads the table once (on PostgreSQL under a SHARE lock: reads
    go on, writes wait, as they do for ``ensure``'s lock on appends).
    """
    inspector = sa.inspect(conn)
    added: list[str] = []
    for table in projection.build_tables("", build).values():
        if not table.indexes or not inspector.has_table(table.name):
            continue
        present = {index["name"] for index in inspector.get_indexes(table.name)}
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            if index.name not in present:
                index.create(conn)
                added.append(str(index.name))
    return added
