"""How LangGraph checkpoints are written to the log: event types, flow ids, blob encoding.

The LangGraph saver (``eventstore.integrations.langgraph``) appends these
events; the read model (``projections.langgraph``) folds them. Nothing here
imports LangGraph, so the read model, its rebuilds and the CLI work without
the ``langgraph`` extra.

One flow per thread and checkpoint namespace (``flow_id_for``). Its events:

* ``CheckpointSaved``: a checkpoint without its channel values, its metadata,
  its parent, and the blobs of the channels that got a new version (values
  of unchanged channels are not written again);
* ``WritesSaved``, ``InterruptRecorded``, ``ResumeRecorded``, ``TaskFailed``:
  a task's pending writes (the last three when they include ``__interrupt__``,
  ``__resume__`` or ``__error__``);
* ``ThreadCopied``: the namespace was copied from another thread;
* ``CheckpointsDeleted``, ``ThreadDeleted``: checkpoints left the
  checkpointer's view (the events before them stay in the log).

Blobs are LangGraph's serialised values, ``(type, bytes)``, stored as the
type and the bytes in base64.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from .errors import InvalidInput
from .schema import MAX_FLOW_ID_LENGTH

CHECKPOINT_SAVED = "CheckpointSaved"
WRITES_SAVED = "WritesSaved"
INTERRUPT_RECORDED = "InterruptRecorded"
RESUME_RECORDED = "ResumeRecorded"
TASK_FAILED = "TaskFailed"
THREAD_COPIED = "ThreadCopied"
CHECKPOINTS_DELETED = "CheckpointsDeleted"
THREAD_DELETED = "ThreadDeleted"

WRITE_EVENTS = frozenset({WRITES_SAVED, INTERRUPT_RECORDED, RESUME_RECORDED, TASK_FAILED})
GRAPH_EVENTS = frozenset(
    {CHECKPOINT_SAVED, THREAD_COPIED, CHECKPOINTS_DELETED, THREAD_DELETED} | WRITE_EVENTS
)

INTERRUPT = "__interrupt__"
RESUME = "__resume__"
ERROR = "__error__"
EMPTY = "empty"
"""The blob type of a channel that has a version but no value."""

FLOW_PREFIX = "langgraph/"
_HASHED_PREFIX = "langgraph#"


def _escape(text: str) -> str:
    return text.replace("%", "%25").replace("/", "%2F")


def flow_id_for(thread_id: str, checkpoint_ns: str = "") -> str:
    """The flow that holds one namespace of a LangGraph thread.

    ``langgraph/<thread_id>`` for the root graph and
    ``langgraph/<thread_id>/<checkpoint_ns>`` for a subgraph's namespace, with
    ``%`` and ``/`` in either written as ``%25`` and ``%2F`` so that no two
    pairs share a flow. When that is longer than a flow id may be (200
    characters) or holds a NUL, it is ``langgraph#`` and the SHA-256 of
    ``thread_id``, a NUL and ``checkpoint_ns``.
    """
    if not isinstance(thread_id, str) or not isinstance(checkpoint_ns, str):
        raise InvalidInput(
            f"thread_id and checkpoint_ns must be strings, not {thread_id!r:.60}, {checkpoint_ns!r:.60}"
        )
    readable = FLOW_PREFIX + _escape(thread_id) + (f"/{_escape(checkpoint_ns)}" if checkpoint_ns else "")
    if len(readable) <= MAX_FLOW_ID_LENGTH and "\x00" not in readable:
        return readable
    digest = hashlib.sha256(f"{thread_id}\x00{checkpoint_ns}".encode("utf-8", "surrogatepass"))
    return _HASHED_PREFIX + digest.hexdigest()


def namespace_flows(thread_id: str, parent_ns: str, task_id: str) -> tuple[str, str, str] | None:
    """The flows of the namespaces ``<node>:<task_id>`` under ``parent_ns`` whatever their node, as the
    range ``(low, high)`` of flow ids holding them and the ``suffix`` each ends with; None for a
    thread whose flows are hashed (``flow_id_for``), where no range holds them.

    A task LangGraph ran for a ``Send`` names no node in its path: its subgraph's namespace is found
    by its task id alone.
    """
    below = f"{parent_ns}|" if parent_ns else ""
    low = f"{FLOW_PREFIX}{_escape(thread_id)}/{_escape(below)}"
    if len(low) + len(task_id) + 2 > MAX_FLOW_ID_LENGTH or "\x00" in low + task_id:
        return None
    return low, low[:-1] + chr(ord(low[-1]) + 1), f":{_escape(task_id)}"


def writes_event_type(channels: list[str]) -> str:
    """The event type of a task's writes: resumes, interrupts and failures are named in the log."""
    if RESUME in channels:
        return RESUME_RECORDED
    if INTERRUPT in channels:
        return INTERRUPT_RECORDED
    if ERROR in channels:
        return TASK_FAILED
    return WRITES_SAVED


def encode_blob(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def decode_blob(text: Any) -> bytes | None:
    return None if text is None else base64.b64decode(text)
