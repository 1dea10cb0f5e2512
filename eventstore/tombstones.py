"""The error for a flow that has no events: unknown, or pruned by retention.

Retention leaves a tombstone (``flow_tombstones``) for each flow it prunes,
naming the archive that holds its events. A read of such a flow says so
(``FlowArchived``, with the archive to restore it from) instead of calling
the flow unknown. A flow that has events and a tombstone too is one a restore
cut short has put only partly back (``partly_restored``): its reads give the
part that is back, and ``stats`` and the CLI's ``history`` say it is a part.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .errors import FlowArchived, FlowNotFound, command_line
from .graph_flows import thread_hint, thread_not_a_flow
from .privileged import chunks
from .schema import first_beginning, flow_events, flow_tombstones, owner_session
from .store import EventStore


def flow_not_found(store: EventStore, flow_id: str) -> FlowNotFound:
    """``FlowArchived`` if retention pruned ``flow_id``, else ``FlowNotFound``.

    ``ThreadNotAFlow`` when ``flow_id`` holds a LangGraph thread's events (a
    read model of flows has no row for it), and a ``FlowNotFound`` whose hint
    names the thread's flow when ``flow_id`` is a bare LangGraph thread id.
    Asked only once the flow's head is 0 (or it has no flow state), so reads
    of a flow that exists never pay for it.
    """
    t = flow_tombstones.c
    rows = store._fetch(sa.select(t.archive_id, t.last_revision).where(t.flow_id == flow_id))
    if rows:
        archive_id, last_revision = rows[0]
        return FlowArchived(flow_id, archive_id, last_revision=last_revision)
    return thread_not_a_flow(store, flow_id) or FlowNotFound(flow_id, hint=thread_hint(store, flow_id))


def pruned_into(conn: sa.Connection, flow_id: str) -> str | None:
    """The archive retention pruned ``flow_id`` into (it stays so until a restore finishes), else None.

    Read on ``conn``, so a command can ask inside its own transaction.
    """
    t = flow_tombstones.c
    archive_id: str | None = conn.execute(sa.select(t.archive_id).where(t.flow_id == flow_id)).scalar()
    return archive_id


@dataclass(frozen=True, slots=True)
class PartlyRestored:
    """A flow a restore cut short has put back only up to ``revision`` of its ``last_revision``:
    running the restore of ``archive_id`` again puts the rest back."""

    flow_id: str
    archive_id: str
    revision: int
    last_revision: int

    def warning(self) -> str:
        return (
            f"flow {self.flow_id!r} is back only in part: revisions 1 to {self.revision} of "
            f"{self.last_revision} (a restore from archive {self.archive_id!r} was cut short); finish it "
            f"with `{command_line('archive restore', self.archive_id, self.flow_id)}`"
        )


def partly_restored(conn: sa.Connection, flow_id: str | None = None) -> tuple[PartlyRestored, ...]:
    """The flows (or ``flow_id``) with events and a tombstone: put back only in part, by flow id.

    One probe of the events' primary key per tombstone (of that flow, if given)."""
    t, e = flow_tombstones.c, flow_events.c
    have = sa.select(sa.func.max(e.revision)).where(e.flow_id == t.flow_id).scalar_subquery()
    query = sa.select(t.flow_id, t.archive_id, have, t.last_revision).order_by(t.flow_id)
    if flow_id is not None:
        query = query.where(t.flow_id == flow_id)
    return tuple(
        PartlyRestored(flow, archive_id, int(revision), int(last))
        for flow, archive_id, revision, last in conn.execute(query)
        if revision is not None
    )


@dataclass(frozen=True, slots=True)
class PrunedFlows:
    """What retention pruned and no restore has put back: ``flows`` flows, ``events`` events, in
    ``archives`` archives. A question asked across flows (a session's, an actor's, a request's, the
    whole store's) cannot search them.

    For a question of one ``session`` they are the flows its tombstones name it the owner of, and
    the ``unknown_owner`` of them whose tombstones name no owner (written before migration 0019):
    the session may own some of those. For any other question, every pruned flow (``session`` None):
    the store keeps no actor or data of a pruned flow."""

    flows: int
    events: int
    archives: int
    session: str | None = None
    unknown_owner: int = 0

    def note(self) -> str:
        """What an answer across flows did not search, and how to bring it back."""
        flows = _flows(self.flows)
        archives = f"{self.archives:,} archive{'' if self.archives == 1 else 's'}"
        restore = (
            "`eventstore archive list` names the archives, `eventstore archive restore ARCHIVE` puts one back"
        )
        if self.session is None:
            return (
                f"{flows} ({self.events:,} events) pruned by retention into {archives} "
                f"{'was' if self.flows == 1 else 'were'} not searched "
                f"(the store keeps no actor or data of a pruned flow): {restore}"
            )
        owned, unknown, whole = self.flows - self.unknown_owner, self.unknown_owner, f"{self.events:,} events"
        if not unknown:
            said = f"owns {flows} ({whole}) pruned by retention into {archives}"
        elif not owned:
            said = (
                f"may own some of the {flows} ({whole}) pruned by retention into {archives} "
                "before the store recorded their owners"
            )
        else:
            said = (
                f"owns {_flows(owned)} pruned by retention and may own some of the {_flows(unknown)} "
                f"pruned before the store recorded their owners: {flows} ({whole}) in {archives}"
            )
        return f"session {self.session!r} {said}, not searched; {restore}"

    def as_dict(self) -> dict[str, Any]:
        counts: dict[str, Any] = {"flows": self.flows, "events": self.events, "archives": self.archives}
        if self.session is not None:
            counts |= {"session": self.session, "unknown_owner": self.unknown_owner}
        return counts


def _flows(count: int) -> str:
    return f"{count:,} flow{'' if count == 1 else 's'}"


def pruned_flows(conn: sa.Connection, *, session: str | None = None) -> PrunedFlows | None:
    """The flows retention pruned (their tombstones), None if there are none: one aggregate query.

    With ``session``, only those it owned and those whose owner is unknown (tombstones from
    before migration 0019, null): None if neither, so an unknown session is an error again.
    A flow a restore cut short counts whole: its tombstone stands until the restore finishes.
    """
    t = flow_tombstones.c
    unknown = t.owner_session_key.is_(None)
    query = sa.select(
        sa.func.count(),
        sa.func.coalesce(sa.func.sum(t.last_revision), 0),
        sa.func.count(t.archive_id.distinct()),
        sa.func.coalesce(sa.func.sum(sa.case((unknown, 1), else_=0)), 0),
    )
    if session is not None:
        query = query.where(sa.or_(t.owner_session_key == session, unknown))
    flows, events, archives, unknown_owner = conn.execute(query).one()
    if not flows:
        return None
    return PrunedFlows(
        int(flows), int(events), int(archives), session, int(unknown_owner) if session is not None else 0
    )


def tombstone_owners(conn: sa.Connection, flow_ids: Sequence[str]) -> dict[str, str]:
    """The session owning each of ``flow_ids`` that has a first start, as ``audit.session_flows``
    has it ("" for a start that names none), for its tombstone: read before its events go."""
    e = flow_events.c
    owners: dict[str, str] = {}
    for chunk in chunks(flow_ids):
        query = sa.select(e.flow_id, sa.func.coalesce(owner_session, "")).where(
            e.flow_id.in_(chunk), first_beginning
        )
        owners.update((flow_id, owner) for flow_id, owner in conn.execute(query))
    return owners
