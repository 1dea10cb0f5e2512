"""The one error tree: every error the library raises is an ``EventStoreError``.

Subclasses are named for what the caller must do about them, and carry their
data as attributes, not only in the message.
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .integrity import Problem
    from .tombstones import PrunedFlows


def command_line(command: str, *arguments: str, store: Sequence[str] = ()) -> str:
    """``eventstore COMMAND ARGUMENTS...`` as a hint to paste into a shell: each argument quoted
    (a flow id may hold spaces, ``$`` or ``;``), and after ``--`` if one starts with ``-`` (else
    the CLI would read it as an option). ``store`` is the options naming the store (``--url``,
    ``--schema``), quoted too, put before the command as the CLI needs them."""
    words = [shlex.quote(argument) for argument in arguments]
    if any(argument.startswith("-") for argument in arguments):
        words.insert(0, "--")
    return " ".join(["eventstore", *map(shlex.quote, store), command, *words])


class EventStoreError(Exception):
    """Root of every error raised by agent-eventstore.

    Raised out of a projection's fold (a handler's SQL the database refused, a
    store call it made), it keeps its type and says where: ``projection`` and
    ``fold`` name it, ``positions`` the first and last event it was folding (the
    same one for a handler), and the message ends with them. Else all are None.
    """

    projection: str | None = None
    fold: str | None = None
    positions: tuple[int, int] | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its arguments and attributes, not re-made through ``__init__``: an error raised
        in a worker process (``multiprocessing``, ``ProcessPoolExecutor``) reaches the parent with
        its type, message and data, though most subclasses' ``__init__`` takes other arguments
        than the message Python would pass back."""
        return _restored, (type(self), self.args, self.__dict__)


def _restored(cls: type[EventStoreError], args: tuple[Any, ...], state: dict[str, Any]) -> EventStoreError:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class InvalidInput(EventStoreError, ValueError):
    """An argument is malformed; nothing was written."""


class PositionPastEnd(InvalidInput):
    """A position to start after is past the end of the log: nothing would come until the log
    reached it, and the events up to it would be skipped."""

    def __init__(self, what: str, position: int, last_position: int) -> None:
        self.position = position
        self.last_position = last_position
        super().__init__(
            f"{what} {position} is past the end of the log (last position {last_position}): "
            f"give 0 to {last_position}"
        )


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
        super().__init__(f"flow {flow_id!r} is at revision {actual}, expected {expected}")


class TransactionAborted(EventStoreError):
    """An append inside ``store.transaction()`` failed, so the whole unit of work was rolled back.

    Raised when the block ends (or at the next append) even if the caller
    caught the first error: a unit of work commits all of its appends or none.
    """


class DuplicateEventId(EventStoreError):
    """An event id was reused for different content, or in a different append."""

    def __init__(self, event_id: uuid.UUID, reason: str) -> None:
        self.event_id = event_id
        super().__init__(f"event id {event_id} {reason}")


class FlowNotFound(EventStoreError, LookupError):
    """No flow with this id exists; ``hint``, if any, says which id the caller may have meant."""

    def __init__(self, flow_id: str, *, hint: str | None = None) -> None:
        self.flow_id = flow_id
        self.hint = hint
        super().__init__(f"flow {flow_id!r} does not exist" + (f": {hint}" if hint else ""))


class ThreadNotAFlow(FlowNotFound):
    """The id is a LangGraph thread's stream of checkpoints, not a flow: it has no flow state.

    A ``FlowNotFound`` to code that asks for a flow's state (no ``FlowService``
    flow has this id), though its events exist: read them with ``history``,
    and the thread's state at a checkpoint with LangGraph's ``get_state`` or
    ``get_state_history`` through ``EventStoreSaver``. ``.thread_id`` names the thread.
    """

    def __init__(self, flow_id: str, thread_id: str) -> None:
        self.flow_id = flow_id
        self.thread_id = thread_id
        self.hint = None
        EventStoreError.__init__(
            self,
            f"{flow_id!r} holds the checkpoints of LangGraph thread {thread_id!r}: it is not a flow, "
            f"and has no flow state. Its events: `{command_line('history', flow_id)}`; the threads: "
            "`eventstore threads`; a thread's state at a checkpoint: LangGraph's get_state or "
            "get_state_history with EventStoreSaver (docs/langgraph.md)",
        )


class FlowArchived(FlowNotFound):
    """The flow's events were pruned by retention into an archive: restore it to read its history.

    A ``FlowNotFound`` to code that only asks whether the flow can be read;
    ``.archive_id`` names the archive to restore it from. Reads raise this;
    an append that would start the flow again raises ``FlowPruned`` (the id
    stays taken).
    """

    def __init__(self, flow_id: str, archive_id: str, *, last_revision: int) -> None:
        self.flow_id = flow_id
        self.archive_id = archive_id
        self.last_revision = last_revision
        command = command_line("archive restore", archive_id, flow_id)
        # Not FlowNotFound's message: the flow is known, only its events are elsewhere.
        EventStoreError.__init__(
            self,
            f"flow {flow_id!r} (revisions 1 to {last_revision}) was pruned by retention into archive "
            f"{archive_id!r}: restore it (`{command}` or eventstore.retention.restore) to read it",
        )


class UpcastError(EventStoreError):
    """A stored event could not be brought up to its current model."""


class IntegrityViolation(EventStoreError):
    """The stored log does not match its hash chain.

    Where the raiser knows them, ``flow_id`` and ``revision`` name the broken event (``revision``
    None: the flow) and ``position`` its place in the log; each is None where the violation is
    not about one event, or where that is not known. ``problems`` is what a check found behind
    it: a ``Problem`` each, as ``verify`` reports them, or a line of text (SQLite's own check, an
    export's unreadable manifest); else empty. The message says the same in words.
    """

    def __init__(
        self,
        message: str,
        *,
        flow_id: str | None = None,
        revision: int | None = None,
        position: int | None = None,
        problems: Sequence[Problem | str] = (),
    ) -> None:
        self.flow_id = flow_id
        self.revision = revision
        self.position = position
        self.problems = list(problems)
        super().__init__(message)


class StoreClosed(EventStoreError):
    """The store was closed; open a new one."""


class StorageError(EventStoreError):
    """The database failed or refused an operation (connection, disk, timeout)."""


class ConnectionLost(StorageError):
    """The connection to the database broke.

    An append, each page of a read and the first statement of a loop's
    transaction were already retried once on a fresh connection; past that
    first statement a transaction is not retried.
    """


class ReconnectFailed(ConnectionLost):
    """A transaction found its pooled connection dead, then a fresh one dead too: nothing of it ran.

    Repeating the work is safe once the database can be reached again.
    """


class StoreBusy(StorageError):
    """The database stayed locked by other writers for longer than the timeout."""


class AppendOnlyViolation(StorageError):
    """Something tried to update or delete a stored event."""


class SchemaError(StorageError):
    """The database schema is missing or not at the version this library needs.

    From ``open``, ``current`` is the migration the database is at (None: no
    schema) and ``required`` the one this library needs; both are None when
    the migrations themselves are missing.
    """

    def __init__(self, message: str, *, current: str | None = None, required: str | None = None) -> None:
        self.current = current
        self.required = required
        super().__init__(message)


class InvalidTransition(EventStoreError):
    """The command is not allowed in the flow's (or step's) current state; nothing was written."""

    def __init__(
        self, flow_id: str, message: str, *, step_id: str | None = None, status: str | None = None
    ) -> None:
        self.flow_id = flow_id
        self.step_id = step_id
        self.status = status
        where = f"flow {flow_id!r}" + (f" step {step_id!r}" if step_id else "")
        super().__init__(f"{where}: {message}")


class FlowClosed(InvalidTransition):
    """The flow has finished, failed or been cancelled; it never changes again."""


class FlowExists(InvalidTransition):
    """A flow with this id was already started."""


class FlowPruned(FlowExists):
    """The flow was pruned by retention: restore it from its archive, or use another flow id.

    Its id stays taken: an append that would start the flow again is refused,
    so the archive can always be restored.
    """

    def __init__(self, flow_id: str, archive_id: str | None) -> None:
        self.archive_id = archive_id
        archive = "its archive" if archive_id is None else f"archive {archive_id!r}"
        command = command_line("archive restore", archive_id or "ARCHIVE_ID", flow_id)
        super().__init__(
            flow_id,
            f"was pruned by retention into {archive}: restore it (`{command}` or "
            "eventstore.retention.restore) or use another flow id",
            status="pruned",
        )


class StepClosed(InvalidTransition):
    """The step is terminal (completed, failed, skipped, timed out); it never changes again."""


class GateNotOpen(InvalidTransition):
    """The step has no open approval gate."""


class SelectionNotAllowed(InvalidTransition):
    """An approval chose values that are not among the gate's options."""

    def __init__(self, flow_id: str, step_id: str, chosen: list[str], allowed: list[str]) -> None:
        self.chosen = chosen
        self.allowed = allowed
        super().__init__(
            flow_id,
            f"selection {chosen!r} is not allowed; the gate's options are {allowed!r}",
            step_id=step_id,
        )


class LeaseLost(InvalidTransition):
    """The caller's lease is stale: another owner or a newer generation holds the flow."""

    def __init__(
        self, flow_id: str, *, owner: str | None, generation: int | None, holder: str | None, current: int
    ) -> None:
        self.owner = owner
        self.generation = generation
        self.holder = holder
        self.current_generation = current
        super().__init__(
            flow_id,
            f"lease lost: caller has {owner!r} generation {generation}, "
            f"the lease is held by {holder!r} at generation {current}",
        )


class LeaseHeld(InvalidTransition):
    """Another owner holds an unexpired lease on the flow."""


class StepNotFound(EventStoreError, LookupError):
    """No step with this id (or run id) exists in the flow."""

    def __init__(self, flow_id: str, step_id: str) -> None:
        self.flow_id = flow_id
        self.step_id = step_id
        super().__init__(f"flow {flow_id!r} has no step {step_id!r}")


class SessionNotFound(EventStoreError, LookupError):
    """No flow in the store has this owner session key.

    ``.pruned`` is what retention pruned of the session's flows (``PrunedFlows``), with the
    flows pruned before migration 0019, whose owner is unknown (the session may own some of
    those); None if neither: then the session is unknown. The message says which, and how
    to restore them.
    """

    def __init__(self, session_key: str, *, pruned: PrunedFlows | None = None) -> None:
        self.session_key = session_key
        self.pruned = pruned
        if pruned is None:
            super().__init__(f"no session {session_key!r}")
        else:
            super().__init__(f"no flow of session {session_key!r} is in the store, but {pruned.note()}")


class EventNotFound(EventStoreError, LookupError):
    """No event with this id (or at this place) is in the log."""

    def __init__(self, event_id: str) -> None:
        self.event_id = event_id
        super().__init__(f"no event {event_id}")


class ProjectionError(EventStoreError):
    """A projection could not be set up, applied or rebuilt."""


class ProjectionFailed(ProjectionError):
    """A projection's own fold (a handler, ``apply``) raised: its transaction was rolled back.

    ``projection`` and ``fold`` name it, ``positions`` the first and last event
    it was folding (the same one for a handler); the handler's exception is
    ``__cause__``. Fix the handler, then run the catch-up, append or rebuild again.
    """

    def __init__(self, projection: str, fold: str, positions: tuple[int, int], detail: str) -> None:
        self.projection = projection
        self.fold = fold
        self.positions = positions
        first, last = positions
        where = f"event {first}" if first == last else f"events {first} to {last}"
        super().__init__(
            f"{fold} of projection {projection!r} failed at {where}{detail}; "
            "nothing of its transaction was written"
        )


class ProjectionNotFound(ProjectionError, LookupError):
    """No projection of this name was built, or is being built, in this store (``projections.retire``)."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        self.known = list(known)
        listed = ", ".join(map(repr, self.known)) or "none"
        super().__init__(
            f"no projection {name!r} in this store (its projections: {listed}); nothing was written"
        )


class ProjectionInUse(ProjectionError):
    """A projection cannot be retired or handed to a runner while something folds it: it is a built-in
    read model, or this store was opened with it (``why`` says which). Nothing was written."""

    def __init__(self, name: str, action: str, why: str) -> None:
        self.name = name
        self.why = why
        super().__init__(f"cannot {action} projection {name!r}: {why}; nothing was written")


class RetiredProjection(ProjectionError):
    """The projection was retired from this store (``projections.retire``): its tables and checkpoint
    are gone. A runner or a store opened with it is refused rather than build it again unasked;
    ``projections.rebuild`` (``eventstore rebuild``) builds it again on purpose."""

    def __init__(self, name: str, retired_at: datetime, detail: str = "") -> None:
        self.name = name
        self.retired_at = retired_at
        super().__init__(
            f"projection {name!r} was retired from this store at {retired_at.isoformat()}{detail}; "
            "nothing was written: stop the code that still folds it, or, to build it again on purpose, "
            "rebuild it (`eventstore rebuild`, or projections.rebuild)"
        )


class ReadModelCorrupt(ProjectionError):
    """A read model's row holds what its projection never wrote (edited by hand, by a bad migration, a
    backup half restored): the read is refused rather than give garbage. Nothing was written.

    The log is the truth and the row is derived from it: rebuilding the projection writes the row again.
    ``read_model`` names the projection, ``table`` and ``key`` (its key columns' values) the row,
    ``column`` what cannot be read, ``rebuild`` the command that puts it back.
    """

    def __init__(
        self, read_model: str, table: str, key: dict[str, Any], column: str, problem: str, rebuild: str
    ) -> None:
        self.read_model = read_model
        self.table = table
        self.key = key
        self.column = column
        self.rebuild = rebuild
        row = ", ".join(f"{name}={value!r}" for name, value in key.items())
        super().__init__(
            f"read model {read_model!r} is corrupt: table {table!r}, row ({row}), column {column!r} "
            f"{problem}; it no longer says what the log does: rebuild it from the log with `{rebuild}`"
        )


class InvalidProof(IntegrityViolation):
    """A Merkle proof or checkpoint signature does not verify, or is malformed."""


class RebuildInProgress(ConcurrencyError):
    """A projection rebuild holds its claim, so a retention prune or restore must wait; run it again later."""

    def __init__(self, action: str, projections: Sequence[str], until: datetime) -> None:
        self.projections = list(projections)
        self.until = until
        names = ", ".join(map(repr, self.projections))
        super().__init__(
            f"{action} refused: a rebuild of {names} holds its claim until {until.isoformat()} "
            "(it renews while it runs); run it again when the rebuild has finished"
        )


class JobLeaseLost(ConcurrencyError):
    """Another maintenance process took this job over after its lease expired; stop this run."""

    def __init__(self, job: str, owner: str, holder: str | None) -> None:
        self.job = job
        self.owner = owner
        self.holder = holder
        super().__init__(f"maintenance job {job!r}: lease of {owner!r} lost, now held by {holder!r}")


class NotSupported(EventStoreError):
    """The backend cannot do this; the message names what to use instead."""

    def __init__(self, operation: str, backend: str, advice: str) -> None:
        self.operation = operation
        self.backend = backend
        super().__init__(f"{operation} is not supported on {backend}: {advice}")


class ExportInvalid(IntegrityViolation):
    """An export or archive file does not verify (manifest, SHA-256, a hash chain); nothing was written."""

    def __init__(self, path: str, problems: Sequence[Problem | str]) -> None:
        self.path = path
        shown = "; ".join(str(problem) for problem in problems[:3])
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        super().__init__(f"{path} does not verify: {shown}{more}", problems=problems)


class RetentionInProgress(ConcurrencyError):
    """Another retention run is under way in this store; this one did nothing: run it again later."""


class ImportConflict(EventStoreError):
    """The store already holds a different history for a flow of an import (or one of its event ids)."""

    def __init__(self, flow_id: str, reason: str) -> None:
        self.flow_id = flow_id
        self.reason = reason
        super().__init__(f"cannot import flow {flow_id!r}: {reason}")


class ImportUnfinished(EventStoreError):
    """An import of another export was cut short: finish it (import that file again) first.

    ``outcome`` says what the refused import wrote: nothing when refused before its file is read
    or at its first batch, else where it stopped."""

    def __init__(
        self,
        events_file: str,
        export_sha256: str,
        events_imported: int,
        event_count: int,
        started_at: str,
        *,
        outcome: str = "nothing was imported",
    ) -> None:
        self.events_file = events_file
        self.export_sha256 = export_sha256
        self.events_imported = events_imported
        self.event_count = event_count
        self.started_at = started_at
        self.outcome = outcome
        super().__init__(
            f"an import of {events_file} (export sha256 {export_sha256[:16]}…, started {started_at}) "
            f"is unfinished: {events_imported} of its {event_count} events are in. Finish it first by "
            f"importing that file again (`{command_line('import', events_file)}`), or give it up if it "
            f"cannot be finished (`eventstore abandon-import {export_sha256[:16]}`); {outcome}"
        )


class ArchiveNotFound(EventStoreError, LookupError):
    """No retention archive with this id is recorded in the store."""

    def __init__(self, archive_id: str) -> None:
        self.archive_id = archive_id
        super().__init__(f"no archive {archive_id!r}")
