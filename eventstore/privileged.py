"""The two writes to the log besides ``append``: re-inserting stored events, and the prune.

* ``insert_stored`` puts events that already carry their hashes (from an
  export or an archive) into ``flow_events``. They take new positions from the
  position counter, exactly as an append does, so positions stay gapless and
  in commit order; their hashes are kept, since a chain hash does not cover
  the position (docs/integrity.md). The caller has verified the chains.
* ``delete_flows`` deletes whole flows for the retention prune: the one
  DELETE the append-only triggers let through (never of a flow under legal
  hold), because it names the flows in ``prune_authorisations`` inside its
  own transaction and empties that table again before the transaction ends.
  It refuses to run while the table holds rows committed by anyone else.

Both run on a connection inside ``store.transaction()``. ``pruned_problems``
is what ``EventStore.verify`` adds to account for pruned flows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .errors import IntegrityViolation
from .integrity import Problem, StoredRow
from .schema import flow_events, flow_tombstones, prune_authorisations, pruned_events
from .wording import counted

CHUNK = 500
"""Flow ids per ``IN (...)`` list: well under every backend's parameter limit."""

_TAKE = "UPDATE event_positions SET last_position = last_position + {} WHERE id = 1 RETURNING last_position"
_TAKE_POSITIONS = {"sqlite": _TAKE.format("?"), "postgresql": _TAKE.format("%(count)s")}
_COLUMNS = (
    "position, flow_id, revision, event_id, type, schema_version, data, metadata, "
    "recorded_at, data_hash, metadata_hash, prev_hash, hash"
)
_INSERT = {
    "sqlite": f"INSERT INTO flow_events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "postgresql": (
        f"INSERT INTO flow_events ({_COLUMNS}) VALUES (%(position)s, %(flow_id)s, %(revision)s, "
        "%(event_id)s, %(type)s, %(schema_version)s, %(data)s::jsonb, %(metadata)s::jsonb, "
        "%(recorded_at)s, %(data_hash)s, %(metadata_hash)s, %(prev_hash)s, %(hash)s)"
    ),
}


def chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def lock_appends(conn: sa.Connection) -> None:
    """Make appends wait until this transaction ends (SQLite's write lock already does)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SELECT last_position FROM event_positions WHERE id = 1 FOR UPDATE")


def insert_stored(conn: sa.Connection, rows: Sequence[StoredRow]) -> list[int]:
    """Insert verified rows (payloads as canonical text) at new positions; return the positions.

    ``rows`` must be in the order the positions are to follow (each flow's in
    revision order). Their own ``position`` is ignored.
    """
    if not rows:
        return []
    dialect = conn.dialect.name
    count = len(rows)
    take: Any = (count,) if dialect == "sqlite" else {"count": count}
    last = int(conn.exec_driver_sql(_TAKE_POSITIONS[dialect], take).scalar_one())
    first = last - count + 1
    params: list[Any]
    if dialect == "sqlite":  # payloads as the canonical bytes, exactly as an append stores them
        params = [
            (first + i, r.flow_id, r.revision, uuid.UUID(r.event_id).bytes, r.type, r.schema_version,
             r.data.encode(), r.metadata.encode(), r.recorded_at, r.data_hash, r.metadata_hash, r.prev_hash,
             r.hash)
            for i, r in enumerate(rows)
        ]  # fmt: skip
    else:
        params = [
            {
                "position": first + i,
                "flow_id": r.flow_id,
                "revision": r.revision,
                "event_id": uuid.UUID(r.event_id),
                "type": r.type,
                "schema_version": r.schema_version,
                "data": r.data,
                "metadata": r.metadata,
                "recorded_at": datetime.fromisoformat(r.recorded_at),
                "data_hash": r.data_hash,
                "metadata_hash": r.metadata_hash,
                "prev_hash": r.prev_hash,
                "hash": r.hash,
            }
            for i, r in enumerate(rows)
        ]
    conn.exec_driver_sql(_INSERT[dialect], params)
    return list(range(first, last + 1))


def delete_flows(conn: sa.Connection, flow_ids: Sequence[str]) -> int:
    """Delete every event of these flows (the prune); return how many were deleted.

    Records each event's (position, flow, revision, hash) in ``pruned_events``
    first, so the global Merkle tree keeps its leaves. Tombstones are the
    caller's to write, in the same transaction. The caller holds the append
    lock (``lock_appends``).

    Authorisations committed by someone else are evidence, not litter: they
    are left for ``verify`` to report (``prune-authorisation-left``) and the
    prune refuses with ``IntegrityViolation`` until someone has looked.
    """
    left = conn.execute(sa.select(sa.func.count()).select_from(prune_authorisations)).scalar_one()
    if left:
        raise IntegrityViolation(
            f"prune_authorisations holds {counted(left, 'row')} that no running prune wrote: "
            "they let anyone delete those flows' events. Nothing was pruned; "
            "`eventstore verify` reports them (prune-authorisation-left). "
            "Find out who wrote them, then delete them by hand"
        )
    c, a = flow_events.c, prune_authorisations.c
    deleted = 0
    for chunk in chunks(flow_ids):
        conn.execute(
            pruned_events.insert().from_select(
                ["position", "flow_id", "revision", "hash"],
                sa.select(c.position, c.flow_id, c.revision, c.hash).where(c.flow_id.in_(chunk)),
            )
        )
        conn.execute(prune_authorisations.insert(), [{"flow_id": flow_id} for flow_id in chunk])
        deleted += conn.execute(flow_events.delete().where(c.flow_id.in_(chunk))).rowcount
        conn.execute(prune_authorisations.delete().where(a.flow_id.in_(chunk)))  # empty again
    return deleted


def pruned_count(conn: sa.Connection) -> tuple[int, int, int]:
    """How many events were pruned, the highest position among them (0 if none), and how many of
    their positions also hold a stored event (0 unless someone forged the record)."""
    p, e = pruned_events.c, flow_events.c
    count, highest = conn.execute(sa.select(sa.func.count(), sa.func.max(p.position))).one()
    both = conn.execute(
        sa.select(sa.func.count()).select_from(pruned_events.join(flow_events, e.position == p.position))
    ).scalar_one()
    return int(count), int(highest or 0), int(both)


def _doubled_positions(conn: sa.Connection) -> list[Problem]:
    """Pruned positions that also hold a stored event: a record that pads the count of positions."""
    p, e = pruned_events.c, flow_events.c
    rows = conn.execute(
        sa.select(p.flow_id, p.revision, p.position, e.flow_id, e.revision)
        .join_from(pruned_events, flow_events, e.position == p.position)
        .order_by(p.position)
    )
    return [
        Problem(
            flow_id,
            position,
            revision,
            "position-doubled",
            f"position {position} holds {stored_flow}@{stored_revision} and is also recorded as a pruned "
            f"event of {flow_id}@{revision}",
        )
        for flow_id, revision, position, stored_flow, stored_revision in rows
    ]


def pruned_problems(conn: sa.Connection) -> list[Problem]:
    """What ``verify`` finds wrong with the record of pruned flows.

    A prune deletes whole flows, and a restore puts a flow back whole, from
    revision 1, before it drops the tombstone. So:

    * a tombstone must match the pruned leaf of its flow's last revision, and
      its flow must have pruned leaves for every revision up to that one;
    * an event stored while its flow's tombstone stands (a restore under
      way) must be the pruned event at its revision (same hash);
    * a pruned leaf of a flow without a tombstone must be stored again, the
      same event at the same revision, at a later position (a finished
      restore appends at the end of the log): a leaf with no such event is
      an event deleted outside a prune, its leaf perhaps forged to name an
      event that was never pruned;
    * a pruned position holds no stored event: a prune deletes what it records
      (such a record is reported as that alone, not also as untraced);
    * no delete authorisation may outlive its prune's transaction.
    """
    problems = _tombstone_problems(conn)
    t, p, e = flow_tombstones.c, pruned_events.c, flow_events.c
    put_back = sa.exists().where(
        e.flow_id == p.flow_id, e.revision == p.revision, e.hash == p.hash, e.position > p.position
    )
    # A record at a position that holds a stored event deleted nothing there: it pads the count of
    # positions, and is reported once, as position-doubled (naming what the position holds).
    doubled = sa.exists().where(e.position == p.position)
    untraced = conn.execute(
        sa.select(p.flow_id, p.revision, p.position, sa.exists().where(e.flow_id == p.flow_id))
        .where(~sa.exists().where(t.flow_id == p.flow_id), ~put_back, ~doubled)
        .order_by(p.position)
    )
    emptied: dict[str, int] = {}
    for flow_id, revision, position, has_events in untraced:
        if not has_events:
            emptied[flow_id] = max(emptied.get(flow_id, 0), revision)
            continue
        detail = (
            f"the event at position {position} was deleted: it is recorded as pruned, but its flow "
            "has no tombstone and still has events, and none of them is this one put back by a restore "
            "(at a later position)"
        )
        problems.append(Problem(flow_id, position, revision, "pruned-without-tombstone", detail))
    for flow_id, revision in sorted(emptied.items()):
        detail = "events were pruned, but the flow has neither a tombstone nor events"
        problems.append(Problem(flow_id, 0, revision, "pruned-without-tombstone", detail))
    problems += _doubled_positions(conn)
    left = conn.execute(sa.select(sa.func.count()).select_from(prune_authorisations)).scalar_one()
    if left:
        were = "was" if left == 1 else "were"
        authorised = counted(left, "delete authorisation")
        detail = f"{authorised} {were} committed: the append-only guard is open for them"
        problems.append(Problem("", 0, 0, "prune-authorisation-left", detail))
    return problems


def _tombstone_problems(conn: sa.Connection) -> list[Problem]:
    t, p, e = flow_tombstones.c, pruned_events.c, flow_events.c
    problems = []
    unmatched = conn.execute(
        sa.select(t.flow_id, t.last_revision).where(
            ~sa.exists().where(p.flow_id == t.flow_id, p.revision == t.last_revision, p.hash == t.last_hash)
        )
    )
    for flow_id, revision in unmatched:
        detail = "no pruned event matches the tombstone's last revision and hash"
        problems.append(Problem(flow_id, 0, revision, "tombstone-mismatch", detail))
    covered = (
        sa.select(sa.func.count(sa.distinct(p.revision)))
        .where(p.flow_id == t.flow_id, p.revision <= t.last_revision)
        .scalar_subquery()
    )
    partial = conn.execute(sa.select(t.flow_id, t.last_revision, covered).where(covered != t.last_revision))
    for flow_id, revision, count in partial:
        detail = (
            f"the tombstone says revisions 1 to {revision} were pruned, but only {count} of them are "
            "recorded as pruned: a prune takes whole flows"
        )
        problems.append(Problem(flow_id, 0, revision, "tombstone-mismatch", detail))
    strangers = conn.execute(
        sa.select(e.flow_id, e.revision, e.position)
        .where(
            sa.exists().where(t.flow_id == e.flow_id),
            ~sa.exists().where(p.flow_id == e.flow_id, p.revision == e.revision, p.hash == e.hash),
        )
        .order_by(e.position)
    )
    for flow_id, revision, position in strangers:
        detail = "the flow is pruned (it has a tombstone), but this event is not one of its pruned events"
        problems.append(Problem(flow_id, position, revision, "tombstone-mismatch", detail))
    return problems
