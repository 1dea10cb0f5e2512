"""The one error tree: every error the library raises is an ``EventStoreError``.

Subclasses are named for what the caller must do about them, and carry their
data as attributes, not only in the message.
"""

from __future__ import annotations

import uuid


class EventStoreError(Exception):
    """Root of every error raised by agent-eventstore."""


class InvalidInput(EventStoreError, ValueError):
    """An argument is malformed; nothing was written."""


class InvalidEvent(InvalidInput):
    """An event cannot be stored as given (not JSON, NaN, failed validation...)."""


class PayloadTooLarge(InvalidEvent):
    """An event's encoded data or metadata exceeds the store's size limit."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"{what} is {size} bytes, over the limit of {limit} bytes")


class ConcurrencyError(EventStoreError):
    """Another writer got there first; re-read and decide again."""


class RevisionMismatch(ConcurrencyError):
    """The flow's current revision is not the one the caller expected."""

    def __init__(self, flow_id: str, expected: int, actual: int) -> None:
        self.flow_id = flow_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"flow {flow_id!r} is at revision {actual}, expected {expected}"
        )


class DuplicateEventId(EventStoreError):
    """An event id was reused for different content, or in a different append."""

    def __init__(self, event_id: uuid.UUID, reason: str) -> None:
        self.event_id = event_id
        super().__init__(f"event id {event_id} {reason}")


class FlowNotFound(EventStoreError, LookupError):
    """No flow with this id exists."""

    def __init__(self, flow_id: str) -> None:
        self.flow_id = flow_id
        super().__init__(f"flow {flow_id!r} does not exist")


class UpcastError(EventStoreError):
    """A stored event could not be brought up to its current model."""


class IntegrityViolation(EventStoreError):
    """The stored log does not match its hash chain."""


class StoreClosed(EventStoreError):
    """The store was closed; open a new one."""


class StorageError(EventStoreError):
    """The database failed or refused an operation (connection, disk, timeout)."""


class StoreBusy(StorageError):
    """The database stayed locked by other writers for longer than the timeout."""


class AppendOnlyViolation(StorageError):
    """Something tried to update or delete a stored event."""


class SchemaError(StorageError):
    """The database schema is missing or not at the version this library needs."""
