"""A LangGraph thread's flow, met by a command that expects a flow ``FlowService`` started.

The saver writes each thread (and checkpoint namespace) to a flow of its own
(``graph_checkpoints.flow_id_for``): its events are checkpoints and writes,
so it has no flow state. ``show``, ``state``, ``fork`` and the like say so,
and point to what reads a thread, instead of calling it missing or empty; a
bare thread id given where its flow id was meant gets a hint. Each check is
one or two primary-key reads, made only on the path that would have failed.
"""

from __future__ import annotations

from .errors import InvalidInput, ThreadNotAFlow, command_line
from .graph_checkpoints import GRAPH_EVENTS, flow_id_for
from .store import EventStore


def thread_not_a_flow(store: EventStore, flow_id: str) -> ThreadNotAFlow | None:
    """``ThreadNotAFlow`` if ``flow_id`` holds a LangGraph thread's events, else None.

    Told by the flow's first event: a flow ``FlowService`` starts begins with
    ``FlowStarted`` or ``FlowForked``, a thread's with one of the saver's events.
    """
    try:
        first = next(iter(store.read_flow(flow_id, to_revision=1)), None)
    except InvalidInput:  # not a flow id at all: the caller's own error says so
        return None
    if first is None or first.type not in GRAPH_EVENTS:
        return None
    thread_id = first.data.get("thread_id")
    return ThreadNotAFlow(flow_id, thread_id if isinstance(thread_id, str) else "?")


def thread_hint(store: EventStore, flow_id: str) -> str | None:
    """What to say when ``flow_id`` has no events but is the id of a LangGraph thread that has."""
    try:
        stream = flow_id_for(flow_id)
    except InvalidInput:
        return None
    if stream == flow_id or store.revision(stream) == 0:
        return None
    return (
        f"{flow_id!r} is a LangGraph thread, whose events are flow {stream!r} "
        f"(`{command_line('history', stream)}`)"
    )


def refuse_thread(store: EventStore, flow_id: str) -> None:
    """Raise ``ThreadNotAFlow`` if ``flow_id`` is a LangGraph thread's flow."""
    found = thread_not_a_flow(store, flow_id)
    if found is not None:
        raise found
