"""Signed checkpoints of the whole log, and proofs against them.

A checkpoint is a signed tree head: the RFC 6962 Merkle root (``merkle.py``)
over the chain hashes of the first ``tree_size`` events in position order,
with the time it was taken, signed with Ed25519. Published or kept out of
reach of the database's owner, it pins every flow's history up to that
position: an inclusion proof shows one event is in it, a consistency proof
shows a later checkpoint extends an earlier one. docs/integrity.md specifies
the bytes; keys are passed in by the caller, never read from configuration.

The tree is read through ``log_tree.py``: leaves from ``flow_events`` and
``pruned_events``, and the cached subtrees that let a proof read a few rows
however long the log is. The signed bytes, the record and the keys are in
``signing.py``; both are re-exported here.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .backends.base import VERIFY_COLUMNS
from .checks import shown
from .errors import IntegrityViolation, InvalidInput, InvalidProof
from .integrity import Problem, check_envelope
from .log_tree import CACHE_HEIGHT, PAGE, cached_subtrees, fill_cache, loaded_tree, read_leaves, reading
from .merkle import (
    RootBuilder,
    Subtree,
    consistency_path_of,
    inclusion_path_of,
    root_hash,
    verify_consistency,
    verify_inclusion,
)
from .schema import event_positions, flow_events, log_checkpoints, pruned_events
from .signing import (
    CHECKPOINT_FORMAT,
    EPOCH,
    SIGNING_CONTEXT,
    Checkpoint,
    check_trusted_key,
    checkpoint_message,
    export_hex,
    export_int,
    generate_key,
    key_id,
    load_public_key,
    load_signing_key,
    parsing_export,
    raw_public_key,
    save_key_pair,
    verify_checkpoint_signature,
)

if TYPE_CHECKING:
    from .store import EventStore

__all__ = [
    "CACHE_HEIGHT",
    "CHECKPOINT_FORMAT",
    "CONSISTENCY_FORMAT",
    "INCLUSION_FORMAT",
    "SIGNING_CONTEXT",
    "Checkpoint",
    "CheckpointReport",
    "ConsistencyProof",
    "InclusionProof",
    "checkpoint_message",
    "consistency_proof",
    "fill_cache",
    "generate_key",
    "get_checkpoint",
    "inclusion_proof",
    "key_id",
    "list_checkpoints",
    "load_public_key",
    "load_signing_key",
    "raw_public_key",
    "read_leaves",
    "save_key_pair",
    "take_checkpoint",
    "verify_checkpoint_signature",
    "verify_checkpoints",
]

INCLUSION_FORMAT = "agent-eventstore/inclusion/v1"
CONSISTENCY_FORMAT = "agent-eventstore/consistency/v1"
_TAKE_LOCK = 7301550004  # PostgreSQL advisory lock: one checkpoint taker at a time


# -- proofs as records ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """That the event at ``position`` (its chain hash, ``leaf``) is in the tree of ``tree_size``."""

    tree_size: int
    position: int
    leaf: bytes
    path: tuple[bytes, ...]
    flow_id: str = ""
    revision: int = 0

    @property
    def leaf_index(self) -> int:
        return self.position - 1

    def verify(self, checkpoint: Checkpoint) -> None:
        """Raise ``InvalidProof`` unless the proof holds for this checkpoint's root."""
        if checkpoint.tree_size != self.tree_size:
            raise InvalidProof(
                f"the proof is for a tree of size {self.tree_size}, "
                f"the checkpoint's tree has size {checkpoint.tree_size}"
            )
        verify_inclusion(self.leaf, self.leaf_index, self.tree_size, self.path, checkpoint.root_hash)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": INCLUSION_FORMAT,
            "tree_size": self.tree_size,
            "leaf_index": self.leaf_index,
            "flow_id": self.flow_id,
            "revision": self.revision,
            "leaf": self.leaf.hex(),
            "path": [node.hex() for node in self.path],
        }

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> InclusionProof:
        with parsing_export(document, INCLUSION_FORMAT, "inclusion proof"):
            return cls(
                export_int(document["tree_size"], 1),
                export_int(document["leaf_index"], 0) + 1,
                export_hex(document["leaf"], 32),
                tuple(export_hex(node, 32) for node in document["path"]),
                str(document.get("flow_id", "")),
                export_int(document.get("revision", 0), 0),
            )


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    """That the tree of ``new_size`` extends the tree of ``old_size``; both sizes are at least 1.

    RFC 9162 defines consistency proofs for an old tree of at least one
    leaf, and no checkpoint is of an empty log (``take_checkpoint`` refuses
    one, ``Checkpoint.from_dict`` and ``verify_checkpoint_signature`` too): a
    size of 0 is ``InvalidInput`` here, as in ``from_dict``, never a proof
    that could not be exported.
    """

    old_size: int
    new_size: int
    path: tuple[bytes, ...]

    def __post_init__(self) -> None:
        for what, size in (("old", self.old_size), ("new", self.new_size)):
            check_proof_size(f"a consistency proof's {what} tree size", size)

    def verify(self, old: Checkpoint, new: Checkpoint) -> None:
        """Raise ``InvalidProof`` unless ``new`` extends ``old`` by this proof."""
        for checkpoint in (old, new):
            if type(checkpoint.tree_size) is not int or checkpoint.tree_size < 1:
                raise InvalidProof(
                    f"checkpoint of tree size {shown(checkpoint.tree_size)}: a checkpoint covers at "
                    "least one event, so no consistency proof is from or to it"
                )
        if (old.tree_size, new.tree_size) != (self.old_size, self.new_size):
            raise InvalidProof(
                f"the proof is from size {self.old_size} to {self.new_size}, "
                f"the checkpoints are of sizes {old.tree_size} and {new.tree_size}"
            )
        verify_consistency(self.old_size, self.new_size, old.root_hash, new.root_hash, self.path)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CONSISTENCY_FORMAT,
            "old_size": self.old_size,
            "new_size": self.new_size,
            "path": [node.hex() for node in self.path],
        }

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> ConsistencyProof:
        with parsing_export(document, CONSISTENCY_FORMAT, "consistency proof"):
            return cls(
                export_int(document["old_size"], 1),
                export_int(document["new_size"], 1),
                tuple(export_hex(node, 32) for node in document["path"]),
            )


def check_proof_size(what: str, size: object, *, proof: bool = True) -> None:
    """``InvalidInput`` unless ``size`` is an int of at least 1: checkpoints and proofs cover events.

    ``proof=False`` for a lookup of a checkpoint, which is told only that there is none.
    """
    if type(size) is int and size == 0:
        why = (
            "; an empty log is consistent with every later one, so there is nothing to prove" if proof else ""
        )
        raise InvalidInput(
            f"{what} is 0: there is no checkpoint of an empty log "
            f"(a checkpoint covers at least one event{why})"
        )
    if type(size) is not int or size < 1:
        raise InvalidInput(f"{what} must be an int >= 1, not {shown(size)}")


# -- taking and reading checkpoints -------------------------------------------


def _row(row: Sequence[Any]) -> Checkpoint:
    return Checkpoint(int(row[0]), bytes(row[1]), int(row[2]), row[3], bytes(row[4]), bytes(row[5]))


_COLUMNS = (
    log_checkpoints.c.tree_size,
    log_checkpoints.c.root_hash,
    log_checkpoints.c.timestamp_ms,
    log_checkpoints.c.key_id,
    log_checkpoints.c.public_key,
    log_checkpoints.c.signature,
)


def _millis(moment: datetime) -> int:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidInput(f"timestamps must be timezone-aware, not {moment!r} (check the store's clock)")
    return (moment - EPOCH) // timedelta(milliseconds=1)


def take_checkpoint(store: EventStore, signing_key: Ed25519PrivateKey | str | os.PathLike[str]) -> Checkpoint:
    """Sign the Merkle root over every event up to the last position, store it and return it.

    The time is the store's clock. If the log has not grown since the latest
    checkpoint, that checkpoint is returned and nothing is written; the
    returned checkpoint's ``new`` says which, decided in the transaction that
    wrote it (of several takers racing, exactly one sees ``new``). The new
    root is first checked to extend the latest checkpoint (a consistency
    proof); if it does not, events it covered were changed, and
    ``IntegrityViolation`` is raised instead of signing.
    """
    if isinstance(signing_key, Ed25519PrivateKey):
        key = signing_key
    elif isinstance(signing_key, str | os.PathLike):
        key = load_signing_key(signing_key)
    else:
        wanted = "an Ed25519PrivateKey or the path of its PEM file"
        raise InvalidInput(f"a signing key must be {wanted}, not {shown(signing_key)}")
    fill_cache(store, store.last_position())
    with store.transaction() as tx:
        conn = tx.connection
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_TAKE_LOCK)))
        size = int(conn.execute(sa.select(event_positions.c.last_position)).scalar_one())
        if size == 0:
            raise InvalidInput("the log is empty: there is nothing to checkpoint")
        latest = _latest(conn)
        if latest is not None:
            _check_signed(latest)  # never extend, or hand back, a record changed since it was signed
            if latest.tree_size == size:
                return latest
            if latest.tree_size > size:
                raise IntegrityViolation(
                    f"the log has {size} positions, fewer than the {latest.tree_size} events that checkpoint "
                    "covers: some were deleted and the position counter "
                    "set back; not signing. Run `eventstore verify` and `eventstore checkpoint --verify`."
                )
        old = 0 if latest is None else latest.tree_size

        def root_and_extension(subtree: Subtree) -> list[bytes]:
            return [subtree(0, size), *consistency_path_of(old, size, subtree)]

        root, *extension = root_and_extension(loaded_tree(conn, root_and_extension).subtree)
        if latest is not None:
            _check_extends(latest, size, root, extension)
        timestamp_ms = _millis(store.clock())
        public = raw_public_key(key.public_key())
        checkpoint = Checkpoint(
            size,
            root,
            timestamp_ms,
            key_id(public),
            public,
            key.sign(checkpoint_message(size, root, timestamp_ms)),
            new=True,
        )
        conn.execute(
            log_checkpoints.insert().values(
                tree_size=checkpoint.tree_size,
                root_hash=checkpoint.root_hash,
                timestamp_ms=checkpoint.timestamp_ms,
                key_id=checkpoint.key_id,
                public_key=checkpoint.public_key,
                signature=checkpoint.signature,
            )
        )
    return checkpoint


def _check_signed(latest: Checkpoint) -> None:
    try:
        verify_checkpoint_signature(latest)
    except InvalidProof as exc:
        raise IntegrityViolation(
            f"the latest checkpoint does not verify ({exc}): it was changed after it was signed; "
            "not signing. Run `eventstore checkpoint --verify`."
        ) from exc


def _check_extends(latest: Checkpoint, size: int, root: bytes, path: list[bytes]) -> None:
    try:
        verify_consistency(latest.tree_size, size, latest.root_hash, root, path)
    except InvalidProof as exc:
        raise IntegrityViolation(
            f"the log no longer extends checkpoint {latest.tree_size} ({exc}): "
            "events it covers were changed; not signing. Run `eventstore checkpoint --verify`."
        ) from exc


def _latest(conn: sa.Connection) -> Checkpoint | None:
    row = conn.execute(sa.select(*_COLUMNS).order_by(log_checkpoints.c.tree_size.desc()).limit(1)).first()
    return None if row is None else _row(row)


def list_checkpoints(store: EventStore) -> list[Checkpoint]:
    """Every stored checkpoint, smallest tree first."""
    with reading(store) as conn:
        rows = conn.execute(sa.select(*_COLUMNS).order_by(log_checkpoints.c.tree_size)).all()
    return [_row(row) for row in rows]


def get_checkpoint(store: EventStore, tree_size: int | None = None) -> Checkpoint:
    """The checkpoint of this tree size, or the latest; ``InvalidInput`` if there is none."""
    if tree_size is not None:
        check_proof_size("tree_size", tree_size, proof=False)
    with reading(store) as conn:
        if tree_size is None:
            found = _latest(conn)
        else:
            row = conn.execute(sa.select(*_COLUMNS).where(log_checkpoints.c.tree_size == tree_size)).first()
            found = None if row is None else _row(row)
    if found is None:
        raise InvalidInput(
            "no checkpoint has been taken yet"
            if tree_size is None
            else f"there is no checkpoint of tree size {tree_size} (`eventstore checkpoint --list`)"
        )
    return found


# -- proofs ----------------------------------------------------------------------


def inclusion_proof(
    store: EventStore, event: uuid.UUID | str | int, checkpoint: Checkpoint | None = None
) -> InclusionProof:
    """The audit path of an event (its id, or its position) in a checkpoint's tree (default: the latest).

    The proof is built from the log as it is now; ``proof.verify(checkpoint)``
    is what shows the event is the one the checkpoint signed. An event
    restored from a retention archive is a leaf at its new position and at
    the one it was pruned from: by its id, it is proved at the new one if the
    checkpoint covers it, else at the old one.
    """
    checkpoint = checkpoint if checkpoint is not None else get_checkpoint(store)
    with reading(store) as conn:
        stored = _position_of(conn, event)
        position = stored
        if stored > checkpoint.tree_size:
            position = _earlier_position(conn, event, stored, checkpoint.tree_size)
        flow_id, revision = _where(conn, position)
        _check_content(store, conn, stored)
        index, size = position - 1, checkpoint.tree_size

        def path_of(subtree: Subtree) -> list[bytes]:
            return inclusion_path_of(index, size, subtree)

        tree = loaded_tree(conn, path_of, [(index, index + 1)])
        path = path_of(tree.subtree)
        leaf = tree.leaf(index)
    return InclusionProof(size, position, leaf, tuple(path), flow_id, revision)


def _position_of(conn: sa.Connection, event: uuid.UUID | str | int) -> int:
    if isinstance(event, int) and not isinstance(event, bool):
        if event < 1:
            raise InvalidInput(f"positions start at 1, not {event}")
        return event
    try:
        event_id = event if isinstance(event, uuid.UUID) else uuid.UUID(str(event))
    except ValueError as exc:
        raise InvalidInput(f"not an event id or a position: {event!r}") from exc
    stored: Any = event_id if conn.dialect.name == "postgresql" else event_id.bytes
    found = conn.execute(sa.select(flow_events.c.position).where(flow_events.c.event_id == stored)).scalar()
    if found is None:
        raise InvalidInput(f"no stored event has id {event_id} (a pruned event is proved by its position)")
    return int(found)


def _earlier_position(
    conn: sa.Connection, event: uuid.UUID | str | int, position: int, tree_size: int
) -> int:
    """Where an event stored after ``tree_size`` was before a prune and restore, if the tree covers that.

    Asked by its id, the event is proved there; asked by its position, the
    caller is told which position to ask for.
    """
    last = int(conn.execute(sa.select(event_positions.c.last_position)).scalar_one())
    if position > last:  # asked by a position no event has had yet: no later checkpoint will cover it
        raise InvalidInput(f"no event at position {position}: the log ends at position {last}")
    earlier = _pruned_position(conn, position, tree_size)
    if earlier is not None and not isinstance(event, int):
        return earlier
    hint = (
        "take a newer checkpoint first"
        if earlier is None
        else f"it was restored from position {earlier}, which the checkpoint covers: prove position "
        f"{earlier} (or the event by its id)"
    )
    raise InvalidInput(f"the event at position {position} is after checkpoint {tree_size}; {hint}")


def _pruned_position(conn: sa.Connection, position: int, tree_size: int) -> int | None:
    """The first position up to ``tree_size`` at which the stored event at ``position`` was pruned, if any.

    A restore appends a pruned flow's events again, at new positions; the
    leaves of their old ones stay in ``pruned_events`` with the same hash.
    """
    pruned = pruned_events.c
    same_event = sa.and_(
        pruned.flow_id == flow_events.c.flow_id,
        pruned.revision == flow_events.c.revision,
        pruned.hash == flow_events.c.hash,
    )
    found = conn.execute(
        sa.select(sa.func.min(pruned.position))
        .select_from(flow_events.join(pruned_events, same_event))
        .where(flow_events.c.position == position, pruned.position <= tree_size)
    ).scalar()
    return None if found is None else int(found)


def _check_content(store: EventStore, conn: sa.Connection, position: int) -> None:
    """A stored event's data, metadata and envelope still hash to the leaf a proof is about.

    A proof is of the leaf, the event's stored ``hash``; an event whose
    content was edited with its hash left alone would otherwise be "proven".
    """
    row = conn.execute(sa.select(*VERIFY_COLUMNS).where(flow_events.c.position == position)).first()
    if row is None:
        return  # pruned: only its hash is kept, and the proof is of that
    stored = store._backend.stored_row(row)
    problems = list(check_envelope(stored))
    if problems:
        readable = not stored.defects  # else its flow or revision may be an edit's stand-in
        raise IntegrityViolation(
            f"the event at position {position} does not match its own hash ({problems[0].detail}): "
            "it was changed after it was written; run `eventstore verify`",
            flow_id=stored.flow_id if readable else None,
            revision=stored.revision if readable else None,
            position=position,
            problems=problems,
        )


def _where(conn: sa.Connection, position: int) -> tuple[str, int]:
    """The flow and revision of the event at a position, stored or pruned."""
    for table in (flow_events, pruned_events):
        row = conn.execute(
            sa.select(table.c.flow_id, table.c.revision).where(table.c.position == position)
        ).first()
        if row is not None:
            return row[0], int(row[1])
    raise IntegrityViolation(
        f"position {position} is missing from the log (neither stored nor pruned)", position=position
    )


def consistency_proof(store: EventStore, old: Checkpoint, new: Checkpoint) -> ConsistencyProof:
    """The proof that ``new``'s tree extends ``old``'s, built from the log and its cache as they are now.

    Both are checkpoints of at least one event (``InvalidInput`` otherwise):
    there is no checkpoint of an empty log, and every tree extends the empty
    tree, so a proof from one would prove nothing.
    """
    for checkpoint in (old, new):
        check_proof_size("a checkpoint's tree size", checkpoint.tree_size)
    if old.tree_size > new.tree_size:
        raise InvalidInput(f"checkpoint {old.tree_size} is newer than checkpoint {new.tree_size}")

    def path_of(subtree: Subtree) -> list[bytes]:
        return consistency_path_of(old.tree_size, new.tree_size, subtree)

    with reading(store) as conn:
        path = path_of(loaded_tree(conn, path_of).subtree)
    return ConsistencyProof(old.tree_size, new.tree_size, tuple(path))


# -- checking everything -----------------------------------------------------------


@dataclass(slots=True)
class CheckpointReport:
    """What ``verify_checkpoints`` checked and what it found wrong.

    Each problem is a ``Problem``, as ``verify`` and ``verify_export`` report
    them: ``bad-signature`` and ``checkpoint-mismatch`` carry the checkpoint's
    tree size as ``position`` (the last position it covers); ``cache-mismatch``
    and ``unreadable-log`` are about a range of positions (``position`` 0).
    ``detail`` reads on its own (``checkpoint 3: ...``).
    """

    checkpoints_checked: int = 0
    events_checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_checkpoints(
    store: EventStore,
    public_key: Ed25519PublicKey | None = None,
    *,
    progress: Callable[[int], None] | None = None,
) -> CheckpointReport:
    """Recompute every checkpoint's root from the leaves, check its signature, and check the cache.

    One pass over the log up to the largest checkpoint, in O(log n) memory.
    With ``public_key``, every checkpoint must be signed by that key.
    """
    check_trusted_key(public_key)
    report = CheckpointReport()
    checkpoints = list_checkpoints(store)
    for checkpoint in checkpoints:
        try:
            verify_checkpoint_signature(checkpoint, public_key)
        except InvalidProof as exc:
            report.problems.append(Problem("", checkpoint.tree_size, 0, "bad-signature", str(exc)))
    if not checkpoints:
        return report
    wanted = {checkpoint.tree_size: checkpoint for checkpoint in checkpoints}
    end = checkpoints[-1].tree_size
    builder = RootBuilder()
    try:
        while builder.size < end:
            with reading(store) as conn:
                leaves = read_leaves(conn, builder.size, min(end, builder.size + PAGE))
            closed = _fold_page(builder, leaves, wanted, report)
            with reading(store) as conn:
                cached = cached_subtrees(conn, [(height, first) for height, first, _ in closed])
            for height, first, digest in closed:
                if cached.get((height, first), digest) != digest:
                    last = first + (1 << height) - 1
                    detail = f"the cached subtree of leaves {first}..{last} does not match the log"
                    report.problems.append(Problem("", 0, 0, "cache-mismatch", detail))
            report.events_checked = builder.size
            if progress is not None:
                progress(builder.size)
    except IntegrityViolation as exc:
        detail = f"{exc}; checkpoints over more than {builder.size} events cannot be checked"
        report.problems.append(Problem("", 0, 0, "unreadable-log", detail))
    return report


def _fold_page(
    builder: RootBuilder, leaves: list[bytes], wanted: dict[int, Checkpoint], report: CheckpointReport
) -> list[tuple[int, int, bytes]]:
    """Fold a page of leaves into the builder, checking the checkpoints it reaches.

    Returns the complete subtrees of cached heights the page closed.
    """
    chunk = 1 << CACHE_HEIGHT
    closed: list[tuple[int, int, bytes]] = []
    for offset in range(0, len(leaves), chunk):
        piece = leaves[offset : offset + chunk]
        _check_sizes_inside(builder, piece, wanted, report)
        if len(piece) == chunk and builder.size % chunk == 0:
            closed += builder.push_subtree(CACHE_HEIGHT, root_hash(piece))
        else:
            builder.extend(piece)
        _check_root(builder, wanted, report)
    return closed


def _check_sizes_inside(
    builder: RootBuilder, piece: list[bytes], wanted: dict[int, Checkpoint], report: CheckpointReport
) -> None:
    """Check the checkpoints whose size falls strictly inside this chunk of leaves."""
    base = builder.size
    for size in range(base + 1, base + len(piece)):
        if size in wanted:
            partial = builder.copy()
            partial.extend(piece[: size - base])
            _check_root(partial, wanted, report)


def _check_root(builder: RootBuilder, wanted: dict[int, Checkpoint], report: CheckpointReport) -> None:
    checkpoint = wanted.get(builder.size)
    if checkpoint is None:
        return
    report.checkpoints_checked += 1
    if builder.root() != checkpoint.root_hash:
        detail = (
            f"checkpoint {checkpoint.tree_size}: the log's root is not the signed root "
            "(an event it covers was changed)"
        )
        report.problems.append(Problem("", checkpoint.tree_size, 0, "checkpoint-mismatch", detail))
