"""The record of an import under way: which export, how far it got, since when.

An import writes a batch of events per transaction, so one cut short (a
kill, a lost connection, a concurrent writer) leaves only some of an
export's events in a store whose every chain still verifies. The row in
``unfinished_imports`` is written in the transaction of the import's first
batch, updated by each batch after it and deleted by the one that commits
its last, so it stands exactly while the store holds part of the export:
``verify`` reports it (``import-unfinished``), ``stats`` shows it, and an
import of another export is refused until this one is finished by
importing the same file again (docs/exchange.md), and retention prunes
nothing (``refuse_during_import``). An import that can never
be finished (its file lost) is given up with ``abandon_import``, which says
so in the ``$system-imports`` flow in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa

from .checks import check_text
from .errors import ImportUnfinished, InvalidInput
from .events import Event
from .integrity import Problem
from .privileged import lock_appends
from .schema import unfinished_imports

if TYPE_CHECKING:  # the store reads this module's table in verify
    from .store import EventStore

_u = unfinished_imports.c

SYSTEM_IMPORTS_FLOW = "$system-imports"
"""The flow that records every unfinished import given up, in the same transaction."""


class ImportAbandoned(Event):
    """An unfinished import was given up: the store keeps the part of the export it holds."""

    export_sha256: str
    events_file: str
    events_imported: int
    event_count: int
    started_at: str
    by: str
    reason: str


@dataclass(frozen=True, slots=True)
class UnfinishedImport:
    """An import that has written some of an export's events and not yet the last."""

    events_file: str
    """The export's events file, as an absolute path when the import started."""
    export_sha256: str
    """The SHA-256 of the events file (its manifest's): which export this is, wherever it lies."""
    event_count: int
    events_imported: int
    """How many of the export's events the store holds (those it had before the import too)."""
    started_at: str
    updated_at: str

    def refusal(self, outcome: str = "nothing was imported") -> ImportUnfinished:
        """The error that refuses an import of another export while this one is unfinished;
        ``outcome`` says what the refused import wrote."""
        return ImportUnfinished(
            self.events_file,
            self.export_sha256,
            self.events_imported,
            self.event_count,
            self.started_at,
            outcome=outcome,
        )

    def abandon_hint(self) -> str:
        """What to say when this import no longer fits the store, so importing it again cannot finish it."""
        return (
            f"an import of this export was cut short here ({self.events_imported} of its "
            f"{self.event_count} events are in) and cannot be finished while this stands: give it up "
            f"with `eventstore abandon-import {self.export_sha256[:16]}`"
        )

    def problem(self) -> Problem:
        """What ``verify`` reports while the import is unfinished."""
        detail = (
            f"an import of {self.events_file} (export sha256 {self.export_sha256[:16]}…) started "
            f"{self.started_at} is unfinished: {self.events_imported} of its {self.event_count} events "
            f"are in (last batch {self.updated_at}); import that file again to finish it, or give it up "
            f"if it cannot be finished (`eventstore abandon-import {self.export_sha256[:16]}`)"
        )
        return Problem("", 0, 0, "import-unfinished", detail)


def unfinished_import(store: EventStore) -> UnfinishedImport | None:
    """The import under way in ``store`` (or cut short), if there is one."""
    with store.reading() as conn:
        return read_unfinished(conn)


def read_unfinished(conn: sa.Connection) -> UnfinishedImport | None:
    """The record of the unfinished import, read on ``conn`` (in the caller's transaction, so a
    batch that holds the append lock sees the record as it stands); None if there is none."""
    row = conn.execute(
        sa.select(
            _u.events_file, _u.export_sha256, _u.event_count, _u.events_imported, _u.started_at, _u.updated_at
        )
        .order_by(_u.started_at)
        .limit(1)
    ).first()
    if row is None:
        return None
    return UnfinishedImport(row[0], row[1], int(row[2]), int(row[3]), row[4], row[5])


def refuse_during_import(conn: sa.Connection, outcome: str) -> None:
    """Raise ``ImportUnfinished`` (saying ``outcome``) if an import is unfinished: retention must
    not prune while it stands. The record does not say which flows the import has still to write
    to, and a flow whose ending event is in its imported part looks terminal, so retention would
    archive and prune a flow whose later events are still to come. Checked under the append lock
    in the prune's transaction, which an import's batch also takes and writes its record in: an
    import whose first batch commits after this check waits for the prune, then finds the pruned
    flows tombstoned."""
    current = read_unfinished(conn)
    if current is not None:
        raise current.refusal(outcome)


def record_progress(
    conn: sa.Connection,
    events_file: str,
    export_sha256: str,
    *,
    imported: int,
    event_count: int,
    now: str,
    outcome: str = "nothing was imported",
) -> None:
    """In a batch's transaction (appends locked): the import of this export now holds ``imported``
    of its ``event_count`` events; the row goes once it holds them all. ``ImportUnfinished`` if
    another export's import is unfinished, saying ``outcome``: what the refused import wrote."""
    current = read_unfinished(conn)
    if current is not None and current.export_sha256 != export_sha256:
        raise current.refusal(outcome)
    if imported >= event_count:
        conn.execute(unfinished_imports.delete().where(_u.export_sha256 == export_sha256))
    elif current is None:
        conn.execute(
            unfinished_imports.insert().values(
                export_sha256=export_sha256,
                events_file=events_file,
                event_count=event_count,
                events_imported=imported,
                started_at=now,
                updated_at=now,
            )
        )
    else:
        conn.execute(
            unfinished_imports.update()
            .where(_u.export_sha256 == export_sha256)
            .values(events_file=events_file, events_imported=imported, updated_at=now)
        )


def abandon_import(store: EventStore, export_sha256: str, *, by: str, reason: str) -> UnfinishedImport:
    """Give up the unfinished import of the export whose SHA-256 is (or starts with, at least 8
    digits) ``export_sha256``: its record goes, and an ``ImportAbandoned`` event in
    ``$system-imports`` says who gave it up and why, in the same transaction. The events it wrote
    stay (each chain is whole). ``InvalidInput`` if no such import is unfinished."""
    if not isinstance(export_sha256, str) or len(export_sha256) < 8:
        raise InvalidInput(f"name the export by its SHA-256 (at least 8 digits), not {export_sha256!r}")
    for name, value in (("by", by), ("reason", reason)):
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput(f"abandoning an import needs a non-empty {name}")
        check_text(f"the {name!r} of abandoning an import", value)
    with store.transaction() as tx:
        conn = tx.connection
        lock_appends(conn)  # an import's batch and this never interleave
        current = read_unfinished(conn)
        if current is not None and current.export_sha256.startswith(export_sha256.lower()):
            conn.execute(unfinished_imports.delete().where(_u.export_sha256 == current.export_sha256))
            abandoned = ImportAbandoned(
                export_sha256=current.export_sha256,
                events_file=current.events_file,
                events_imported=current.events_imported,
                event_count=current.event_count,
                started_at=current.started_at,
                by=by,
                reason=reason,
            )
            tx.append(SYSTEM_IMPORTS_FLOW, [abandoned], metadata={"actor": by})
            return current
    which = "no import is unfinished" if current is None else f"the unfinished one is {current.export_sha256}"
    raise InvalidInput(f"no unfinished import of an export with SHA-256 {export_sha256}: {which}")
