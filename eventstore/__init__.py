"""agent-eventstore: an event-sourced, hash-chained audit log for agent workflows."""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import (
    AppendOnlyViolation,
    ArchiveNotFound,
    ConcurrencyError,
    ConnectionLost,
    DuplicateEventId,
    EventNotFound,
    EventStoreError,
    ExportInvalid,
    FlowArchived,
    FlowClosed,
    FlowExists,
    FlowNotFound,
    FlowPruned,
    GateNotOpen,
    ImportConflict,
    ImportUnfinished,
    IntegrityViolation,
    InvalidEvent,
    InvalidInput,
    InvalidProof,
    InvalidTransition,
    JobLeaseLost,
    LeaseHeld,
    LeaseLost,
    NotSupported,
    PayloadTooLarge,
    PositionPastEnd,
    ProjectionError,
    ProjectionFailed,
    ProjectionInUse,
    ProjectionNotFound,
    ReadModelCorrupt,
    RebuildInProgress,
    ReconnectFailed,
    RetentionInProgress,
    RetiredProjection,
    RevisionMismatch,
    SchemaError,
    SelectionNotAllowed,
    SessionNotFound,
    StepClosed,
    StepNotFound,
    StorageError,
    StoreBusy,
    StoreClosed,
    ThreadNotAFlow,
    TransactionAborted,
    UpcastError,
)

if TYPE_CHECKING:
    from .events import ANY, AppendResult, Event, EventRegistry, FoldInput, NewEvent, RecordedEvent
    from .integrity import Problem, VerificationReport
    from .store import DEFAULT_URL, EventStore, Transaction, utc_now

# The store and its records are imported when first named, so that importing
# ``eventstore`` alone (as the command line's launcher does, to catch a
# Ctrl-C during its own imports) does not import SQLAlchemy.
_LAZY = {
    "events": ("ANY", "AppendResult", "Event", "EventRegistry", "FoldInput", "NewEvent", "RecordedEvent"),
    "integrity": ("Problem", "VerificationReport"),
    "store": ("DEFAULT_URL", "EventStore", "Transaction", "utc_now"),
}
_SOURCE = {name: module for module, names in _LAZY.items() for name in names}

__all__ = [
    "ANY",
    "DEFAULT_URL",
    "AppendOnlyViolation",
    "AppendResult",
    "ArchiveNotFound",
    "ConcurrencyError",
    "ConnectionLost",
    "DuplicateEventId",
    "Event",
    "EventNotFound",
    "EventRegistry",
    "EventStore",
    "EventStoreError",
    "ExportInvalid",
    "FlowArchived",
    "FlowClosed",
    "FlowExists",
    "FlowNotFound",
    "FlowPruned",
    "FoldInput",
    "GateNotOpen",
    "ImportConflict",
    "ImportUnfinished",
    "IntegrityViolation",
    "InvalidEvent",
    "InvalidInput",
    "InvalidProof",
    "InvalidTransition",
    "JobLeaseLost",
    "LeaseHeld",
    "LeaseLost",
    "NewEvent",
    "NotSupported",
    "PayloadTooLarge",
    "PositionPastEnd",
    "Problem",
    "ProjectionError",
    "ProjectionFailed",
    "ProjectionInUse",
    "ProjectionNotFound",
    "ReadModelCorrupt",
    "RebuildInProgress",
    "ReconnectFailed",
    "RecordedEvent",
    "RetentionInProgress",
    "RetiredProjection",
    "RevisionMismatch",
    "SchemaError",
    "SelectionNotAllowed",
    "SessionNotFound",
    "StepClosed",
    "StepNotFound",
    "StorageError",
    "StoreBusy",
    "StoreClosed",
    "ThreadNotAFlow",
    "Transaction",
    "TransactionAborted",
    "UpcastError",
    "VerificationReport",
    "utc_now",
]


if not TYPE_CHECKING:  # hidden from type checkers, which see the imports above and flag a misspelt name

    def __getattr__(name: str) -> Any:
        module = _SOURCE.get(name)
        if module is None:
            raise AttributeError(f"module 'eventstore' has no attribute {name!r}")
        value = getattr(import_module(f".{module}", __name__), name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(__all__))
