"""What goes into the log and what comes out of it.

* ``Event``: base class for typed events (pydantic models).
* ``NewEvent``: an untyped event, for callers without a model class.
* ``RecordedEvent``: a stored event as read back (frozen).
* ``AppendResult``: what an append wrote.
* ``EventRegistry``: type names to models, and upcasters for old versions.
"""

from __future__ import annotations

import enum
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, NamedTuple

import pydantic

from .checks import shown, validation_message
from .errors import InvalidEvent, InvalidInput, UpcastError


class _Any(enum.Enum):
    ANY = "ANY"

    def __repr__(self) -> str:
        return "ANY"


ANY = _Any.ANY
"""``expected_revision=ANY``: append whatever the flow's current revision is."""

ExpectedRevision = int | _Any


class Event(pydantic.BaseModel):
    """Base class for typed events.

    The stored type name is the class name unless the class sets
    ``event_type``; ``schema_version`` is 1 unless the class says otherwise.
    ``event_id`` is not part of the stored data: it identifies the event for
    idempotent retries, and may be set by the caller.
    """

    # ser_json_inf_nan: a NaN or infinity inside a dict or Any field reaches the canonical check
    # (which refuses it) as itself, not as pydantic's silent JSON null.
    model_config = pydantic.ConfigDict(
        frozen=True, extra="forbid", allow_inf_nan=False, ser_json_inf_nan="constants"
    )

    event_type: ClassVar[str] = ""
    schema_version: ClassVar[int] = 1

    event_id: uuid.UUID = pydantic.Field(default_factory=lambda: new_event_id(), exclude=True)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "event_type" not in cls.__dict__:
            cls.event_type = cls.__name__


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event given by type name and data, without a model class."""

    type: str
    data: Mapping[str, Any]
    metadata: Mapping[str, Any] | None = None
    event_id: uuid.UUID = field(default_factory=lambda: new_event_id())
    schema_version: int = 1


class RecordedEvent(NamedTuple):
    """One row of ``flow_events``, as read back.

    An immutable named tuple: reading a million events builds a million of
    these, and a tuple is several times cheaper to make than a frozen class.
    """

    position: int
    flow_id: str
    revision: int
    event_id: uuid.UUID
    type: str
    schema_version: int
    data: dict[str, Any]
    metadata: dict[str, Any]
    recorded_at: datetime
    prev_hash: str
    hash: str


class FoldInput(NamedTuple):
    """The fields of an event that a fold reads, without ids, metadata or hashes.

    ``EventStore.read_for_fold`` yields these for bulk folds (projection
    rebuilds): they cost a fraction of a ``RecordedEvent`` to read and decode.
    A ``RecordedEvent`` has the same attributes, so a fold accepts either.
    """

    flow_id: str
    revision: int
    type: str
    data: dict[str, Any]
    recorded_at: datetime


_SAFE_UNKNOWN = uuid.SafeUUID.unknown
_new_uuid = object.__new__
_set = object.__setattr__


def uuid_from_bytes(raw: bytes) -> uuid.UUID:
    """``uuid.UUID(bytes=raw)``, at a third of the cost."""
    value = _new_uuid(uuid.UUID)
    _set(value, "int", int.from_bytes(raw, "big"))
    _set(value, "is_safe", _SAFE_UNKNOWN)
    return value


def new_event_id() -> uuid.UUID:
    """A fresh, time-ordered event id (UUID version 7, RFC 9562).

    Ids made one after another sort together, so the unique index on event
    ids grows at its end instead of touching a random page per append.
    """
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & 0xFFFF_FFFF_FFFF) << 80 | rand & ((1 << 80) - 1)
    value = value & ~(0xF << 76) | (0x7 << 76)  # version 7
    value = value & ~(0x3 << 62) | (0x2 << 62)  # RFC 4122 variant
    out = _new_uuid(uuid.UUID)
    _set(out, "int", value)
    _set(out, "is_safe", _SAFE_UNKNOWN)
    return out


def uuid_str(value: uuid.UUID) -> str:
    """``str(value)``, the canonical hyphenated form, at half the cost."""
    h = f"{value.int:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What one append wrote (or, for a repeated append, had written)."""

    flow_id: str
    revision: int
    positions: tuple[int, ...]
    event_ids: tuple[uuid.UUID, ...]

    @property
    def first_revision(self) -> int:
        return self.revision - len(self.positions) + 1


Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class EventRegistry:
    """Maps stored type names to event models, and upcasts old versions.

    Each store has its own registry (nothing is global). A typed event that is
    appended is registered in its store's registry automatically.
    """

    def __init__(self, models: Iterable[type[Event]] = ()) -> None:
        self._models: dict[str, type[Event]] = {}
        self._upcasters: dict[tuple[str, int], tuple[int, Upcaster]] = {}
        if isinstance(models, type) or not isinstance(models, Iterable):
            raise InvalidInput(f"models must be a list of Event subclasses, not {shown(models)}")
        for model in models:
            self.register(model)

    def register(self, *models: type[Event]) -> None:
        for model in models:
            if not (isinstance(model, type) and issubclass(model, Event)):
                raise InvalidInput(f"{shown(model)} is not an Event subclass")
            known = self._models.get(model.event_type)
            if known is not None and known is not model:
                raise InvalidInput(
                    f"event type {model.event_type!r} is already registered "
                    f"to {known.__module__}.{known.__qualname__}"
                )
            self._models[model.event_type] = model

    def add_upcaster(
        self, event_type: str, from_version: int, upcaster: Upcaster, *, to_version: int | None = None
    ) -> None:
        """Register ``upcaster`` to turn ``event_type`` data of ``from_version`` into the next version."""
        if not isinstance(event_type, str) or not event_type:
            raise InvalidInput(f"event_type must be a type name, not {shown(event_type)}")
        if not callable(upcaster):
            raise InvalidInput(f"upcaster must be a function of the old data, not {shown(upcaster)}")
        for name, version in (("from_version", from_version), ("to_version", to_version)):
            if version is not None and (type(version) is not int or version < 1):
                raise InvalidInput(f"{name} must be an int >= 1, not {shown(version)}")
        target = from_version + 1 if to_version is None else to_version
        if target <= from_version:
            raise InvalidInput("an upcaster must move to a later version")
        self._upcasters[(event_type, from_version)] = (target, upcaster)

    def model(self, event_type: str) -> type[Event] | None:
        return self._models.get(event_type)

    def __contains__(self, event_type: object) -> bool:
        return event_type in self._models

    def upcast(self, event_type: str, version: int, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Apply upcasters until no more apply; return the new version and data."""
        step = self._upcasters.get((event_type, version))
        while step is not None:
            target, upcaster = step
            try:
                data = upcaster(dict(data))
            except Exception as exc:
                raise UpcastError(
                    f"upcasting {event_type} from version {version} to {target} failed: {exc}"
                ) from exc
            if not isinstance(data, Mapping):
                raise UpcastError(
                    f"upcasting {event_type} from version {version} to {target} returned "
                    f"{type(data).__name__}, not the data as a dict"
                )
            data = dict(data)
            version = target
            step = self._upcasters.get((event_type, version))
        return version, data

    def decode(self, recorded: RecordedEvent) -> Event:
        """Turn a recorded event back into its typed model, upcasting old versions."""
        if not isinstance(recorded, RecordedEvent):
            raise InvalidInput(f"decode takes a RecordedEvent that a read returned, not {shown(recorded)}")
        model = self._models.get(recorded.type)
        if model is None:
            raise UpcastError(
                f"no model is registered for event type {recorded.type!r} (the event at position "
                f"{recorded.position})"
            )
        version, data = self.upcast(recorded.type, recorded.schema_version, recorded.data)
        if version != model.schema_version:
            raise UpcastError(
                f"{recorded.type} data is at version {version} after upcasting, "
                f"but the model is at version {model.schema_version}"
            )
        try:
            return model.model_validate({**data, "event_id": recorded.event_id})
        except pydantic.ValidationError as exc:
            raise UpcastError(
                f"stored {recorded.type} at position {recorded.position} does not fit its model: "
                + validation_message(exc)
            ) from exc

    def validate(self, event_type: str, schema_version: int, data: Mapping[str, Any]) -> None:
        """Check untyped data against the registered model of its type, if any."""
        model = self._models.get(event_type)
        if model is None or schema_version != model.schema_version:
            return
        try:
            model.model_validate(data)
        except pydantic.ValidationError as exc:
            raise InvalidEvent(f"{event_type} data fails validation: {validation_message(exc)}") from exc
