"""Verify the hash chains of the events written since a position, and record what is wrong.

``verify`` checks every flow from revision 1; a nightly job on a large log
needs only the events written since its last run. Each new event is checked
as ``verify`` checks it (its payload digests, its envelope hash, and its link
to its flow's previous event, read from the log when that one is older), and
every position handed out must hold an event or be accounted for by a prune
(``pruned_events``). An import cut short (``unfinished_imports``) is a
problem on every run until it is finished or abandoned: the log lacks the
rest of an export, though every chain it holds is whole. Problems are logged at ERROR and recorded as an
``IntegrityProblemsFound`` event in the flow ``$system-integrity``, so they
stay on record even if nobody reads the logs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from .backends.base import VERIFY_COLUMNS
from .events import AppendResult, Event
from .integrity import Problem, StoredRow, check_chains
from .schema import flow_events, pruned_events
from .store import EventStore
from .unfinished_import import unfinished_import
from .wording import counted

SYSTEM_INTEGRITY_FLOW = "$system-integrity"
"""The flow that records integrity problems found by maintenance."""

MAX_RECORDED = 100  # problems listed in one event; the count covers them all

log = logging.getLogger("eventstore.integrity")


class IntegrityProblemsFound(Event):
    """Incremental verification found broken links among the events at these positions."""

    from_position: int
    to_position: int
    problem_count: int
    problems: list[dict[str, Any]]


@dataclass(slots=True)
class IncrementalReport:
    """What ``verify_since`` checked: positions after ``after_position`` up to ``to_position``."""

    after_position: int
    to_position: int
    events_checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_since(
    store: EventStore,
    after_position: int,
    *,
    batch_size: int = 2000,
    on_batch: Callable[[int, list[Problem]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> IncrementalReport:
    """Check the events at positions after ``after_position``, up to the current last position.

    ``on_batch(position, problems)`` is called after each batch, with the
    position checked up to and that batch's problems, before the next is read:
    record the problems there before remembering the position. When
    ``should_stop()`` turns true it stops before the next batch; the report's
    ``to_position`` is then the position checked up to. An unfinished import
    is among the report's problems (after the batches', and never handed to
    ``on_batch``: it is found again by every run until it is finished).
    """
    head = store.last_position()
    report = IncrementalReport(after_position, head)
    if head < after_position:  # the count of positions adds up again only if the counter was set back
        detail = (
            f"positions were handed out up to {after_position} when they were verified, but now only up "
            f"to {head}: events were deleted and the position counter set back"
        )
        report.problems.append(Problem("", after_position, 0, "missing-events", detail))
        if on_batch is not None:
            on_batch(head, report.problems)
        return _with_unfinished_import(store, report)
    carry: dict[str, StoredRow] = {}  # the last row seen per flow in this run
    cursor = after_position
    while cursor < head:
        if should_stop is not None and should_stop():
            report.to_position = cursor
            break
        page = (
            sa.select(*VERIFY_COLUMNS)
            .where(flow_events.c.position > cursor, flow_events.c.position <= head)
            .order_by(flow_events.c.position)
            .limit(batch_size)
        )
        # The store's own page reader and row decoder: the rows ``verify`` checks.
        rows = [store._backend.stored_row(row) for row in store._fetch(page)]
        end = rows[-1].position if len(rows) == batch_size else head
        found = _missing_positions(store, cursor, end, {row.position for row in rows})
        found += _broken_links(store, rows, carry, cursor)
        report.events_checked += len(rows)
        report.problems += found
        if len(carry) > 100_000:
            carry.clear()  # bounded memory: predecessors are read from the log again
        cursor = end
        if on_batch is not None:
            on_batch(cursor, found)
    return _with_unfinished_import(store, report)


def _with_unfinished_import(store: EventStore, report: IncrementalReport) -> IncrementalReport:
    unfinished = unfinished_import(store)
    if unfinished is not None:
        report.problems.append(unfinished.problem())
    return report


def _broken_links(
    store: EventStore, rows: Sequence[StoredRow], carry: dict[str, StoredRow], cursor: int
) -> list[Problem]:
    by_flow: dict[str, list[StoredRow]] = {}
    for row in rows:
        by_flow.setdefault(row.flow_id, []).append(row)
    wanted = []
    for flow_id, flow_rows in by_flow.items():
        flow_rows.sort(key=lambda r: r.revision)
        first = flow_rows[0]
        known = carry.get(flow_id)
        if first.revision > 1 and (known is None or known.revision != first.revision - 1):
            wanted.append((flow_id, first.revision - 1))
    previous = {**carry, **_rows_at(store, wanted)}
    problems: list[Problem] = []
    for flow_id, flow_rows in by_flow.items():
        before = previous.get(flow_id)
        chain = (
            flow_rows
            if before is None or before.revision != flow_rows[0].revision - 1
            else [before, *flow_rows]
        )
        problems += [p for p in check_chains(chain) if isinstance(p, Problem) and p.position > cursor]
        carry[flow_id] = flow_rows[-1]
    return problems


def _rows_at(store: EventStore, keys: list[tuple[str, int]]) -> dict[str, StoredRow]:
    """The stored rows at these (flow, revision) keys, by flow."""
    found: dict[str, StoredRow] = {}
    key = sa.tuple_(flow_events.c.flow_id, flow_events.c.revision)
    for start in range(0, len(keys), 500):
        query = sa.select(*VERIFY_COLUMNS).where(key.in_(keys[start : start + 500]))
        for raw in store._fetch(query):
            row = store._backend.stored_row(raw)
            found[row.flow_id] = row
    return found


def _missing_positions(store: EventStore, cursor: int, end: int, seen: set[int]) -> list[Problem]:
    """Positions in ``(cursor, end]`` that hold no event and were not pruned by retention."""
    if len(seen) == end - cursor:
        return []
    pruned_query = sa.select(pruned_events.c.position).where(
        pruned_events.c.position > cursor, pruned_events.c.position <= end
    )
    accounted = seen | {int(row[0]) for row in store._fetch(pruned_query)}
    problems = []
    position = cursor + 1
    while position <= end:
        if position in accounted:
            position += 1
            continue
        last = position
        while last + 1 <= end and last + 1 not in accounted:
            last += 1
        detail = f"positions {position} to {last} were handed out but hold no event and were not pruned"
        problems.append(Problem("", position, 0, "missing-events", detail))
        position = last + 1
    return problems


def record_problems(
    store: EventStore, after_position: int, to_position: int, problems: list[Problem]
) -> AppendResult:
    """Log the problems at ERROR and append them to ``$system-integrity``.

    ``to_position`` is below ``after_position`` when the log has lost the
    positions between them (``verify_since``): those are the ones recorded.
    """
    after_position, to_position = min(after_position, to_position), max(after_position, to_position)
    log.error(
        "integrity: %s among positions %d to %d; recorded in flow %r",
        counted(len(problems), "problem"),
        after_position + 1,
        to_position,
        SYSTEM_INTEGRITY_FLOW,
    )
    for problem in problems[:MAX_RECORDED]:
        log.error("integrity: %s", problem)
    event = IntegrityProblemsFound(
        from_position=after_position + 1,
        to_position=to_position,
        problem_count=len(problems),
        problems=[
            {
                "flow_id": p.flow_id,
                "position": p.position,
                "revision": p.revision,
                "kind": p.kind,
                "detail": p.detail,
            }
            for p in problems[:MAX_RECORDED]
        ],
    )
    return store.append(SYSTEM_INTEGRITY_FLOW, [event], metadata={"actor": "eventstore:maintenance"})
