"""A subgraph's question, passed up by its parent: found, so that an audit trail shows it once.

A node that runs a subgraph stops when the subgraph calls ``interrupt()``:
LangGraph saves the question among the subgraph's writes, in its namespace
(its own flow, ``eventstore.graph_checkpoints.flow_id_for``), then again,
with the same interrupt ids, as the writes of the parent's task that ran it.
``relayed`` tells the second kind from a question of the parent's own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import sqlalchemy as sa

from .events import RecordedEvent
from .graph_checkpoints import INTERRUPT, INTERRUPT_RECORDED, flow_id_for, namespace_flows
from .schema import READ_COLUMNS, flow_events
from .store import EventStore

_c = flow_events.c


def relayed(store: EventStore, events: list[RecordedEvent], shown: list[Any]) -> set[int]:
    """The positions of the ``InterruptRecorded`` events among ``events`` that pass a subgraph's
    question up: shown once, where the subgraph's task asked it, not again as a question of its own.

    A node that runs a subgraph stops when the subgraph asks: LangGraph saves the question among
    the subgraph's writes, in its namespace (``<node>:<task id>`` under the node's, or ``<node>``
    for a subgraph with a checkpointer of its own), then again, with the same interrupt ids, as
    the writes of the node's task (for a task run by a ``Send``, whose path names no node, any
    namespace ``<node>:<task id>``). Such a task's question is a relay when earlier
    ``InterruptRecorded`` events of those namespaces hold each of its ids (one read per page)
    and are ``shown`` in the trail: a window that starts after the subgraph asked shows the relay.
    """
    asked: dict[int, tuple[set[str], set[str]]] = {}
    pushed: dict[int, tuple[set[str], tuple[str, str, str]]] = {}
    for event in events:
        data = event.data
        thread, ns, task = (data.get(key) for key in ("thread_id", "checkpoint_ns", "task_id"))
        path = str(data.get("task_path") or "")
        ids = _interrupt_ids(event)
        if not (ids and isinstance(thread, str) and isinstance(ns, str) and isinstance(task, str)):
            continue
        if path.startswith(_PUSHED):  # a task run for a Send: its path names no node
            if (namespaces := namespace_flows(thread, ns, task)) is not None:
                pushed[event.position] = (ids, namespaces)
        elif node := path.rpartition(", ")[2]:
            below = f"{ns}|" if ns else ""
            asked[event.position] = (
                ids,
                {flow_id_for(thread, f"{below}{node}:{task}"), flow_id_for(thread, below + node)},
            )
    if not asked and not pushed:
        return set()
    questions = sa.select(*READ_COLUMNS).where(
        _c.type == _INTERRUPT_RECORDED, _c.position < max([*asked, *pushed]), *shown
    )
    wheres: list[Any] = []
    if asked:
        wheres.append(_c.flow_id.in_(sorted(set().union(*(subgraphs for _, subgraphs in asked.values())))))
    wheres += [
        sa.and_(_c.flow_id >= low, _c.flow_id < high) for low, high, _ in {s for _, s in pushed.values()}
    ]
    seen: dict[str, list[tuple[int, set[str]]]] = {}
    for where in wheres:
        for question in store.query_events(questions.where(where)):
            seen.setdefault(question.flow_id, []).append((question.position, _interrupt_ids(question)))

    def held(position: int, ids: set[str], flows: Iterable[str]) -> bool:
        """Whether every id was asked in ``flows`` before ``position`` (a node whose subgraph ran two
        ``Send`` tasks relays both questions at once)."""
        asked_before = [got for flow in flows for before, got in seen.get(flow, ()) if before < position]
        return ids <= set().union(*asked_before)

    relays = {position for position, (ids, subgraphs) in asked.items() if held(position, ids, subgraphs)}
    for position, (ids, (low, _, suffix)) in pushed.items():
        flows = (flow for flow in seen if flow.startswith(low) and flow.endswith(suffix))
        if held(position, ids, flows):
            relays.add(position)
    return relays


_PUSHED = "~__pregel_push,"
"""How the path of a task run for a ``Send`` begins (LangGraph's ``PUSH``, as the saver writes paths)."""


def _interrupt_ids(event: RecordedEvent) -> set[str]:
    """The interrupt ids of an ``InterruptRecorded`` event's ``__interrupt__`` writes (none of any other)."""
    if event.type != INTERRUPT_RECORDED:
        return set()
    return {
        item["id"]
        for value in written(event.data, INTERRUPT)
        if isinstance(value, list)
        for item in value
        if isinstance(item, dict) and isinstance(item.get("id"), str)
    }


_INTERRUPT_RECORDED = sa.literal_column(f"'{INTERRUPT_RECORDED}'", sa.String)
"""In the SQL, so that the audit index by flow answers ``relayed``'s read (its predicate implied)."""


def written(data: Mapping[str, Any], channel: str) -> Iterator[Any]:
    """The readable values (``value``) of a LangGraph task's writes to ``channel``."""
    writes = data.get("writes")
    for write in writes if isinstance(writes, list) else []:
        if isinstance(write, dict) and write.get("channel") == channel and "value" in write:
            yield write["value"]
