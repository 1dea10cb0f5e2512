"""Questions over the flow read models: a flow, its steps, step history, sessions; paged.

``FlowQueries`` reads the tables ``FlowProjection`` (``flows.py``) folds the
log into. A page and its total come from one snapshot, and a reader racing a
rebuild's swap sees the old tables or the new ones whole, never a mix.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, Generic, TypeVar

import sqlalchemy as sa

from eventstore import EventStore, InvalidInput
from eventstore.checks import check_page, check_store, check_text
from eventstore.errors import SessionNotFound, StepNotFound
from eventstore.flow_fold import FLOW_STATUSES, STEP_STATUSES, FlowState, StepState
from eventstore.preparation import check_flow_id
from eventstore.tombstones import flow_not_found

from .corruption import find_corrupt
from .flows import FlowProjection


@contextmanager
def _snapshot(conn: sa.Connection, tables: Iterable[sa.FromClause]) -> Iterator[None]:
    """The reads inside see one snapshot of ``tables`` (a page and its total agree).

    On PostgreSQL the tables are locked (ACCESS SHARE) before the snapshot is
    taken: a rebuild's swap that holds them (ACCESS EXCLUSIVE) is then waited
    for before the snapshot, and the reads see the new tables as it committed
    them. Taken after, the snapshot would predate the swap and miss what it
    folded into the renamed tables. They are locked in ``Projection.tables``
    order, the swap's, so a reader and a swap never wait for each other.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        read = set(tables)
        names = [conn.dialect.identifier_preparer.quote(t.name) for t in _live().values() if t in read]
        conn.exec_driver_sql(f"LOCK TABLE {', '.join(names)} IN ACCESS SHARE MODE")  # takes no snapshot
        yield
        return
    conn.exec_driver_sql("BEGIN")  # reads are autocommit on SQLite: one transaction holds the snapshot
    try:
        yield
    except Exception:
        if not conn.invalidated:  # a lost connection is dropped: a ROLLBACK would fail and hide why
            conn.exec_driver_sql("ROLLBACK")
        raise
    except BaseException:
        # An interruption (a cancelled task) is raised as it is: the read connection rolls back and
        # drops the connection it cut into (``base.abandon``). A ROLLBACK here would fail on one
        # SQLAlchemy invalidated, and its error would take the interruption's place.
        raise
    conn.exec_driver_sql("ROLLBACK")


@contextmanager
def _text_checked() -> Iterator[None]:
    """Text the drivers cannot encode (a lone surrogate) is the caller's ``InvalidInput``."""
    try:
        yield
    except UnicodeEncodeError as exc:
        raise InvalidInput(
            f"text must be valid UTF-8 (it holds {exc.object[exc.start : exc.end]!r})"
        ) from exc


def _decoded(conn: sa.Connection, query: sa.Select[Any]) -> list[Any]:
    """The rows of ``query``; a row a hand, a migration or a restore left undecodable (a JSON column
    that is not JSON, a time that is not one) is the projection's ``ReadModelCorrupt``."""
    try:
        return list(conn.execute(query))
    except (ValueError, TypeError) as exc:  # TypeError: a number where a time belongs (SQLite keeps it)
        found = None if isinstance(exc, UnicodeError) else find_corrupt(conn, query, FlowProjection.name)
        if found is None:
            raise
        raise found from exc


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a query, with what is needed to ask for the next."""

    items: list[T]
    total: int
    offset: int
    limit: int

    @property
    def has_next(self) -> bool:
        return self.offset + len(self.items) < self.total


@dataclass(frozen=True, slots=True)
class Session:
    session_key: str
    running: int
    waiting: int
    finished: int
    failed: int
    cancelled: int
    event_count: int
    first_activity_at: datetime
    last_activity_at: datetime


@cache
def _live() -> dict[str, sa.Table]:
    return FlowProjection().tables


class FlowQueries:
    """Read-only questions over the flow read models."""

    def __init__(self, store: EventStore) -> None:
        check_store(store)
        self.store = store

    def _rows(self, query: sa.Select[Any]) -> list[Any]:
        with _text_checked(), self.store.reading() as conn:  # the store translates driver errors
            return _decoded(conn, query)

    def _page(
        self, query: sa.Select[Any], order: Sequence[Any], offset: int, limit: int
    ) -> tuple[list[Any], int]:
        """A page of rows and the total, both from one snapshot of the tables."""
        check_page(offset, limit)
        with _text_checked(), self.store.reading() as conn, _snapshot(conn, query.get_final_froms()):
            total = conn.execute(sa.select(sa.func.count()).select_from(query.subquery())).scalar_one()
            rows = _decoded(conn, query.order_by(*order).offset(offset).limit(limit))
        return rows, total

    def flow(self, flow_id: str) -> FlowState:
        check_flow_id(flow_id)
        flows = _live()["flows"]
        rows = self._rows(sa.select(flows).where(flows.c.flow_id == flow_id))
        if not rows:
            raise flow_not_found(self.store, flow_id)  # pruned by retention: says from which archive
        return FlowState(**rows[0]._mapping)

    def flows(
        self, *, owner: str | None = None, status: str | None = None, offset: int = 0, limit: int = 50
    ) -> Page[FlowState]:
        """Flows, oldest first, optionally of one owner session and/or one status."""
        flows = _live()["flows"]
        query = sa.select(flows)
        if owner is not None:
            query = query.where(flows.c.owner_session_key == check_text("owner", owner))
        if status is not None:
            if status not in FLOW_STATUSES:
                raise InvalidInput(f"unknown flow status {status!r}; one of {', '.join(FLOW_STATUSES)}")
            query = query.where(flows.c.status == status)
        rows, total = self._page(query, [flows.c.created_at, flows.c.flow_id], offset, limit)
        return Page([FlowState(**r._mapping) for r in rows], total, offset, limit)

    def steps(self, flow_id: str) -> list[StepState]:
        """The flow's steps in order (position, then step id)."""
        steps = _live()["flow_steps"]
        query = sa.select(steps).where(steps.c.flow_id == check_flow_id(flow_id))
        query = query.order_by(steps.c.position, steps.c.step_id)
        return [StepState(**r._mapping) for r in self._rows(query)]

    def step(self, flow_id: str, step_id: str) -> StepState:
        check_flow_id(flow_id)
        check_text("step_id", step_id)
        steps = _live()["flow_steps"]
        rows = self._rows(sa.select(steps).where(steps.c.flow_id == flow_id, steps.c.step_id == step_id))
        if not rows:
            raise StepNotFound(flow_id, step_id)
        return StepState(**rows[0]._mapping)

    def step_by_run(self, flow_id: str, run_id: str) -> StepState:
        check_flow_id(flow_id)
        check_text("run_id", run_id)
        steps = _live()["flow_steps"]
        query = (
            sa.select(steps)
            .where(steps.c.flow_id == flow_id, steps.c.run_id == run_id)
            .order_by(steps.c.scheduled_at.asc().nulls_first(), steps.c.scheduled_revision, steps.c.step_id)
            .limit(1)
        )
        rows = self._rows(query)
        if not rows:
            raise StepNotFound(flow_id, f"run {run_id}")
        return StepState(**rows[0]._mapping)

    def step_history(
        self,
        flow_id: str,
        *,
        from_position: int | None = None,
        to_position: int | None = None,
        status: str | None = None,
        name: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> Page[StepState]:
        """The flow's steps filtered by position range, status and name, a page at a time."""
        check_flow_id(flow_id)
        if status is not None and status not in STEP_STATUSES:
            raise InvalidInput(f"unknown step status {status!r}; one of {', '.join(STEP_STATUSES)}")
        if name is not None:
            check_text("name", name)
        for what, bound in (("from_position", from_position), ("to_position", to_position)):
            if bound is not None and (type(bound) is not int or not -(2**31) <= bound < 2**31):
                raise InvalidInput(f"{what} must be None or an int from -2**31 to 2**31 - 1, not {bound!r}")
        steps = _live()["flow_steps"]
        query = sa.select(steps).where(steps.c.flow_id == flow_id)
        if from_position is not None:
            query = query.where(steps.c.position >= from_position)
        if to_position is not None:
            query = query.where(steps.c.position <= to_position)
        if status is not None:
            query = query.where(steps.c.status == status)
        if name is not None:
            query = query.where(steps.c.name == name)
        rows, total = self._page(query, [steps.c.position, steps.c.step_id], offset, limit)
        return Page([StepState(**r._mapping) for r in rows], total, offset, limit)

    def sessions(self, *, offset: int = 0, limit: int = 50) -> Page[Session]:
        """Sessions, most recently active first."""
        sessions = _live()["sessions"]
        rows, total = self._page(
            sa.select(sessions), [sessions.c.last_activity_at.desc(), sessions.c.session_key], offset, limit
        )
        return Page([Session(**r._mapping) for r in rows], total, offset, limit)

    def session(self, session_key: str) -> Session:
        check_text("session_key", session_key)
        sessions = _live()["sessions"]
        rows = self._rows(sa.select(sessions).where(sessions.c.session_key == session_key))
        if not rows:
            raise SessionNotFound(session_key)
        return Session(**rows[0]._mapping)

    def _now(self, now: datetime | None) -> datetime:
        """``now``, a timezone-aware time, or the store's clock."""
        if now is None:
            return self.store.clock()
        if not isinstance(now, datetime) or now.tzinfo is None:
            raise InvalidInput(f"now must be a timezone-aware datetime, not {now!r}")
        return now

    def interrupted(
        self, *, now: datetime | None = None, offset: int = 0, limit: int = 50
    ) -> Page[FlowState]:
        """Open flows (running or waiting) whose worker's lease expired unreleased: nobody works on them.

        Oldest expiry first. ``now`` defaults to the store's clock. Resume one by
        acquiring its lease (the new generation fences the old worker off) and
        carrying on from its steps (docs/operations.md).
        """
        flows = _live()["flows"]
        query = sa.select(flows).where(*_interrupted(flows, self._now(now), self.store.dialect))
        rows, total = self._page(query, [flows.c.lease_expires_at, flows.c.flow_id], offset, limit)
        return Page([FlowState(**r._mapping) for r in rows], total, offset, limit)

    def expired_steps(
        self, *, now: datetime | None = None, after: tuple[str, str] | None = None, limit: int = 500
    ) -> list[StepState]:
        """Steps still running in open flows whose lease expired, in (flow, step) order after ``after``."""
        if type(limit) is not int or not 1 <= limit <= 1000:
            raise InvalidInput("limit must be an int from 1 to 1000")
        flows, steps = _live()["flows"], _live()["flow_steps"]
        moment = self._now(now)
        if after is not None and (
            not isinstance(after, tuple) or len(after) != 2 or not all(isinstance(k, str) for k in after)
        ):
            raise InvalidInput(f"after must be a (flow_id, step_id) pair, not {after!r}")
        if after is not None:
            check_text("after's flow id", after[0])
            check_text("after's step id", after[1])
        query = (
            sa.select(steps)
            .join(flows, flows.c.flow_id == steps.c.flow_id)
            .where(steps.c.status == "running", *_expired_lease(flows, moment))
        )
        if after is not None:
            query = query.where(sa.tuple_(steps.c.flow_id, steps.c.step_id) > sa.tuple_(*after))
        query = query.order_by(steps.c.flow_id, steps.c.step_id).limit(limit)
        return [StepState(**r._mapping) for r in self._rows(query)]


def _expired_lease(flows: sa.Table, now: datetime) -> list[sa.ColumnElement[bool]]:
    """An open flow whose lease expired (at ``expires_at <= now``, as ``FlowService`` judges it)."""
    return [
        flows.c.status.in_(("running", "waiting")),
        flows.c.lease_owner.is_not(None),
        flows.c.lease_expires_at <= now,
    ]


def _interrupted(flows: sa.Table, now: datetime, dialect: str) -> list[sa.ColumnElement[bool]]:
    """``_expired_lease`` written as ix_flows_interrupted's WHERE is (``flows.OPEN_LEASED``): its rows,
    in its order. SQLite uses a partial index only for a query whose WHERE has the index's terms, and
    a bound parameter is not one: the statuses are literals, and on SQLite ``+status``, which picks no
    index on status (SQLite without statistics would prefer ``ix_flows_status``, then sort).
    ``expired_steps`` keeps ``_expired_lease``: joined to the steps, SQLite would then scan them all."""
    plus = "+" if dialect == "sqlite" else ""
    status: sa.ColumnElement[str] = sa.literal_column(f"{plus}{flows.name}.status")
    return [
        status.in_([sa.literal_column("'running'"), sa.literal_column("'waiting'")]),
        *_expired_lease(flows, now)[1:],
    ]
