"""Preparing an append: checking events and metadata, encoding them canonically, hashing them.

All of this happens before a transaction starts, so bad input is refused
without touching the database, and the write itself only chains and inserts.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from .backends.base import Batch, PreparedEvent
from .checks import encodable, shown
from .errors import InvalidEvent, InvalidInput, PayloadTooLarge
from .events import ANY, Event, EventRegistry, ExpectedRevision, NewEvent, uuid_str
from .graph_checkpoints import flow_id_for
from .integrity import digest
from .schema import AUDIT_EVENT_TYPES, MAX_FLOW_ID_LENGTH, MAX_TYPE_LENGTH
from .serialization import canonical

STRING_METADATA = ("actor", "causation_id", "correlation_id")
"""Metadata keys the audit reads (who, and what caused what): a string or None when present."""

MAX_INDEXED_BYTES = 2000
"""The longest (UTF-8) text in a field the schema indexes: ``STRING_METADATA``, an audited event's
data ``actor`` or ``by``, a flow start's owner session. A PostgreSQL index entry holds at most
2704 bytes, so a longer one would be a driver error there, and not on SQLite."""


class Preparer:
    """Validates and encodes appends for one store (its registry, its payload limit)."""

    def __init__(self, registry: EventRegistry, max_payload_bytes: int) -> None:
        self.registry = registry
        self.max_payload_bytes = max_payload_bytes
        self._valid_types: set[str] = set()  # type names already checked, so batches skip it
        self._valid_classes: set[tuple[type[Event], str, int]] = set()  # typed classes already checked

    def batch(
        self,
        flow_id: str,
        events: Sequence[Event | NewEvent],
        expected_revision: ExpectedRevision,
        metadata: Mapping[str, Any] | None,
    ) -> Batch:
        check_flow_id(flow_id)
        if expected_revision is not ANY and (type(expected_revision) is not int or expected_revision < 0):
            raise InvalidInput(
                f"expected_revision must be ANY or an int >= 0, not {shown(expected_revision)}"
            )
        if type(events) is not list and (  # a list is the usual case, and its ABC checks cost more
            isinstance(events, (str, bytes, Mapping, Event, NewEvent)) or not isinstance(events, Sequence)
        ):
            raise InvalidInput("events must be a list of Event or NewEvent")
        if not events:
            raise InvalidInput("an append needs at least one event")
        base_meta: dict[str, Any] = {}
        if metadata is not None:
            if not isinstance(metadata, Mapping):
                raise InvalidInput("metadata must be a mapping")
            base_meta = dict(metadata)
            check_metadata(base_meta)
        base_encoded = self._encode(base_meta, "metadata")
        base_hash = digest(base_encoded)
        prepared = []
        for event in events:
            if type(event) is NewEvent:
                prepared.append(self._new(event, base_meta, base_encoded, base_hash))
            elif isinstance(event, Event):
                prepared.append(self._typed(event, base_encoded, base_hash))
            elif isinstance(event, NewEvent):
                prepared.append(self._new(event, base_meta, base_encoded, base_hash))
            else:
                raise InvalidInput(f"not an Event or NewEvent: {shown(event)}")
        if len(prepared) > 1:
            seen: set[uuid.UUID] = set()
            for item in prepared:
                if item.event_id in seen:
                    raise InvalidEvent(f"event id {item.event_id} appears twice in one append")
                seen.add(item.event_id)
        return Batch(flow_id, prepared, expected_revision)

    def _typed(self, event: Event, meta: bytes, meta_hash: bytes) -> PreparedEvent:
        cls = type(event)
        key = (cls, cls.event_type, cls.schema_version)
        if type(key[1]) is not str or type(key[2]) is not int or key not in self._valid_classes:
            check_type_name(key[1])
            check_schema_version(key[2])
            if len(self._valid_classes) < 10_000:
                self._valid_classes.add(key)
        if cls.event_type not in self.registry:
            self.registry.register(cls)
        try:
            data = event.model_dump(mode="json")
        except (ValueError, RecursionError) as exc:
            # pydantic's PydanticSerializationError, bytes that are not UTF-8 (UnicodeDecodeError),
            # and its plain ValueError for a circular reference or nesting past its depth limit
            raise InvalidEvent(f"{cls.event_type} cannot be serialised: {exc}") from exc
        check_indexed_data(cls.event_type, data)
        encoded = self._encode(data, "data")
        event_id = event.event_id
        return PreparedEvent(
            event_id,
            uuid_str(event_id),
            cls.event_type,
            cls.schema_version,
            encoded,
            digest(encoded),
            meta,
            meta_hash,
        )

    def _new(
        self, event: NewEvent, base_meta: dict[str, Any], meta: bytes, meta_hash: bytes
    ) -> PreparedEvent:
        event_type = event.type
        if type(event_type) is not str or event_type not in self._valid_types:
            check_type_name(event_type)
            if len(self._valid_types) < 10_000:
                self._valid_types.add(event_type)
        version = event.schema_version
        if type(version) is not int or not 1 <= version < 2**31:
            check_schema_version(version)
        event_id = event.event_id
        if not isinstance(event_id, uuid.UUID):
            raise InvalidEvent(f"event_id must be a UUID, not {shown(event_id)}")
        data = event.data
        if not isinstance(data, dict):
            if not isinstance(data, Mapping):
                raise InvalidEvent(f"{event_type} data must be a JSON object (a mapping)")
            data = dict(data)
        if event_type in self.registry:
            self.registry.validate(event_type, version, data)
        check_indexed_data(event_type, data)
        encoded = self._encode(data, "data")
        if event.metadata is not None:
            if not isinstance(event.metadata, Mapping):
                raise InvalidEvent(f"event metadata must be a mapping or None, not {shown(event.metadata)}")
            check_metadata(event.metadata)
            meta = self._encode({**base_meta, **event.metadata}, "metadata")
            meta_hash = digest(meta)
        return PreparedEvent(
            event_id, uuid_str(event_id), event_type, version, encoded, digest(encoded), meta, meta_hash
        )

    def _encode(self, value: Any, what: str) -> bytes:
        encoded = canonical(value, what=what)
        if len(encoded) > self.max_payload_bytes:
            raise PayloadTooLarge(what, len(encoded), self.max_payload_bytes)
        return encoded


def check_flow_id(flow_id: str) -> str:
    if not isinstance(flow_id, str) or not flow_id:
        raise InvalidInput(f"a flow id must be a non-empty string, not {shown(flow_id)}")
    if len(flow_id) > MAX_FLOW_ID_LENGTH:
        raise InvalidInput(
            f"a flow id may have at most {MAX_FLOW_ID_LENGTH} characters, not {len(flow_id)} (a LangGraph "
            f"thread id this long has its events in flow {flow_id_for(flow_id)!r})"
        )
    if "\x00" in flow_id or not encodable(flow_id):
        raise InvalidInput(f"a flow id must be valid UTF-8 text without NUL characters, not {shown(flow_id)}")
    return flow_id


def check_metadata(metadata: Mapping[str, Any]) -> None:
    """Refuse a reserved key (``STRING_METADATA``) whose value is not a string: the audit would miss it."""
    for key in STRING_METADATA:
        value = metadata.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidEvent(f"metadata {key!r} must be a string, not {shown(value)}")
        check_indexed(f"metadata {key!r}", value)


_OWNER_PATHS = (("owner_session_key",), ("snapshot", "flow", "owner_session_key"))
_INDEXED_DATA = {"FlowStarted": _OWNER_PATHS, "FlowForked": _OWNER_PATHS} | {
    name: (("actor",), ("by",)) for name in AUDIT_EVENT_TYPES
}
"""Per event type, the data fields an index holds: the first that is a string (``schema.audit_actor``,
``schema.owner_session``)."""


def check_indexed_data(event_type: str, data: Mapping[str, Any]) -> None:
    """Refuse data whose indexed field is longer than ``MAX_INDEXED_BYTES``."""
    for path in _INDEXED_DATA.get(event_type, ()):
        value: Any = data
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        if isinstance(value, str):
            check_indexed(f"{event_type} data {'.'.join(path)!r}", value)
            return


def check_indexed(what: str, value: object) -> None:
    if isinstance(value, str) and len(value) * 4 > MAX_INDEXED_BYTES:
        size = len(value.encode(errors="surrogatepass"))
        if size > MAX_INDEXED_BYTES:
            raise InvalidEvent(f"{what} is {size} bytes; at most {MAX_INDEXED_BYTES} bytes, as it is indexed")


def check_type_name(event_type: object) -> None:
    if not isinstance(event_type, str) or not event_type or len(event_type) > MAX_TYPE_LENGTH:
        raise InvalidEvent(f"event type must be a string of 1 to {MAX_TYPE_LENGTH} characters")
    if "\x00" in event_type or not encodable(event_type):
        raise InvalidEvent(
            f"event type must be valid UTF-8 text without NUL characters, not {shown(event_type)}"
        )


def check_schema_version(version: object) -> None:
    if type(version) is not int or not 1 <= version < 2**31:  # a 32-bit column on either backend
        raise InvalidEvent(f"schema_version must be an int from 1 to 2**31 - 1, not {shown(version)}")
