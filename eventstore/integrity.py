"""Hash chains: how each event's hash is made, and how a chain is checked.

Per flow, every event stores

* ``data_hash``     = SHA-256(canonical(data))
* ``metadata_hash`` = SHA-256(canonical(metadata))
* ``hash``          = SHA-256(canonical([prev_hash, flow_id, revision, event_id,
                                         type, schema_version, recorded_at,
                                         data_hash, metadata_hash]))

with hashes as lowercase hex in the envelope, ``recorded_at`` as
``YYYY-MM-DDTHH:MM:SS.ffffffZ``, and ``prev_hash`` the previous event's hash
(64 zeros for revision 1). The envelope holds the payload digests, not the
payloads, so a payload can later be redacted and the chain still verifies.
docs/integrity.md is the normative description.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from .checks import shown
from .errors import EventStoreError, InvalidInput
from .serialization import canonical

GENESIS = bytes(32)
"""The ``prev_hash`` of every flow's first event."""

_sha256 = hashlib.sha256


def digest(encoded: bytes) -> bytes:
    return _sha256(encoded).digest()


def format_time(moment: datetime) -> str:
    """The canonical spelling of a timestamp: UTC, microseconds, ``Z``."""
    if not isinstance(moment, datetime):
        raise InvalidInput(f"timestamps must be datetimes, not {shown(moment)} (check the store's clock)")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidInput(f"timestamps must be timezone-aware, not {moment!r} (check the store's clock)")
    if moment.utcoffset():
        try:
            moment = moment.astimezone(UTC)
        except OverflowError as exc:
            raise InvalidInput(f"{moment.isoformat()} is outside the years 1 to 9999 in UTC") from exc
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def chain_hash(
    prev_hash: bytes,
    flow_id: str,
    revision: int,
    event_id: str,
    event_type: str,
    schema_version: int,
    recorded_at: str,
    data_hash: bytes,
    metadata_hash: bytes,
) -> bytes:
    envelope = orjson.dumps(
        [
            prev_hash.hex(),
            flow_id,
            revision,
            event_id,
            event_type,
            schema_version,
            recorded_at,
            data_hash.hex(),
            metadata_hash.hex(),
        ]
    )
    return _sha256(envelope).digest()


@dataclass(frozen=True, slots=True)
class StoredRow:
    """The columns verification needs, as stored (payloads raw or decoded)."""

    position: int
    flow_id: str
    revision: int
    event_id: str
    type: str
    schema_version: int
    data: Any
    metadata: Any
    recorded_at: str
    data_hash: bytes
    metadata_hash: bytes
    prev_hash: bytes
    hash: bytes
    defects: tuple[str, ...] = ()
    """What in the stored row no store could have written (a hash that is not 32 bytes, an id
    or time that cannot be read); the field then holds a stand-in that matches nothing."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One broken link found by ``verify``."""

    flow_id: str
    position: int
    revision: int
    kind: str
    detail: str

    def __str__(self) -> str:
        """``flow@revision (position n): kind: detail``, leaving out what it is not about.

        A problem with a flow or position of ``""`` or ``0`` is about a whole
        flow, a range of positions, or an export's files, not one event.
        """
        where = []
        if self.flow_id:
            where.append(f"{self.flow_id}@{self.revision}" if self.revision else self.flow_id)
        if self.position:
            where.append(f"(position {self.position})")
        return ": ".join([" ".join(where), self.kind, self.detail] if where else [self.kind, self.detail])


@dataclass(slots=True)
class VerificationReport:
    """What ``verify`` checked and every problem it found."""

    events_checked: int = 0
    flows_checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _payload_digest(value: Any) -> bytes | None:
    """The digest of a stored payload; None if it cannot even be encoded (so it was edited)."""
    if isinstance(value, str):
        return digest(value.encode())
    if isinstance(value, bytes):
        return digest(value)
    try:
        return digest(canonical(value))
    except EventStoreError:
        return None  # e.g. a number no append could have stored: reported as an edit


def check_chains(rows: Iterable[StoredRow]) -> Iterator[Problem | str]:
    """Check rows given in (flow_id, revision) order.

    Yields each problem found, and each flow id once its rows are done, in
    constant memory: only the previous row of the current flow is kept.
    """
    prev: StoredRow | None = None
    for row in rows:
        if prev is not None and prev.flow_id != row.flow_id:
            yield prev.flow_id
            prev = None
        yield from _check_row(row, prev)
        prev = row
    if prev is not None:
        yield prev.flow_id


def check_envelope(row: StoredRow) -> Iterator[Problem]:
    """The row's own hashes: its payloads against their digests, its envelope against its hash."""

    def problem(kind: str, detail: str) -> Problem:
        return Problem(row.flow_id, row.position, row.revision, kind, detail)

    if row.defects:
        yield problem("malformed-row", "; ".join(row.defects))
        return  # its hashes cannot be recomputed from what is there
    if _payload_digest(row.data) != row.data_hash:
        yield problem("data-edited", "data does not match its data_hash")
    if _payload_digest(row.metadata) != row.metadata_hash:
        yield problem("metadata-edited", "metadata does not match its metadata_hash")
    expected = chain_hash(
        row.prev_hash,
        row.flow_id,
        row.revision,
        row.event_id,
        row.type,
        row.schema_version,
        row.recorded_at,
        row.data_hash,
        row.metadata_hash,
    )
    if expected != row.hash:
        yield problem("hash-mismatch", "the envelope (type, revision, time, ids or hashes) was altered")


def _check_row(row: StoredRow, prev: StoredRow | None) -> Iterator[Problem]:
    def problem(kind: str, detail: str) -> Problem:
        return Problem(row.flow_id, row.position, row.revision, kind, detail)

    yield from check_envelope(row)
    expected_revision = 1 if prev is None else prev.revision + 1
    expected_prev = GENESIS if prev is None else prev.hash
    # A malformed row's stand-in revision (malformed-row names it) would show a gap on each side of it.
    known = not _unknown_revision(row) and (prev is None or not _unknown_revision(prev))
    if known and row.revision != expected_revision:
        yield problem("revision-gap", f"expected revision {expected_revision}, found {row.revision}")
    if row.prev_hash != expected_prev:
        yield problem("broken-link", "prev_hash does not match the previous event's hash")
    if prev is not None and row.position <= prev.position:
        yield problem(
            "position-order", f"position {row.position} is not after the previous event's {prev.position}"
        )


def _unknown_revision(row: StoredRow) -> bool:
    """Whether the row's revision is a stand-in: no store writes revision 0, a malformed row gets it."""
    return bool(row.defects) and row.revision == 0
