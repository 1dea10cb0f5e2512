"""agent-eventstore: an event-sourced, hash-chained audit log for agent workflows."""

from .errors import (
    AppendOnlyViolation,
    ConcurrencyError,
    DuplicateEventId,
    EventStoreError,
    FlowNotFound,
    IntegrityViolation,
    InvalidEvent,
    InvalidInput,
    PayloadTooLarge,
    RevisionMismatch,
    SchemaError,
    StorageError,
    StoreBusy,
    StoreClosed,
    UpcastError,
)
from .events import ANY, AppendResult, Event, EventRegistry, NewEvent, RecordedEvent
from .integrity import Problem, VerificationReport
from .store import DEFAULT_URL, EventStore, Transaction, utc_now

__all__ = [
    "ANY",
    "DEFAULT_URL",
    "AppendOnlyViolation",
    "AppendResult",
    "ConcurrencyError",
    "DuplicateEventId",
    "Event",
    "EventRegistry",
    "EventStore",
    "EventStoreError",
    "FlowNotFound",
    "IntegrityViolation",
    "InvalidEvent",
    "InvalidInput",
    "NewEvent",
    "PayloadTooLarge",
    "Problem",
    "RecordedEvent",
    "RevisionMismatch",
    "SchemaError",
    "StorageError",
    "StoreBusy",
    "StoreClosed",
    "Transaction",
    "UpcastError",
    "VerificationReport",
    "utc_now",
]
