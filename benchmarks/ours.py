"""The subject under test: eventstore's public API, as an application would call it."""

from __future__ import annotations

from collections.abc import Iterable

from eventstore import EventStore, NewEvent

from .workload import Step, flow_name, metadata_for

Op = tuple[str, list[NewEvent], int, dict[str, str]]


class Ours:
    """``EventStore.append`` with an explicit expected revision; ``read_all`` to read."""

    label = "eventstore"

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._append = store.append

    @classmethod
    def open(cls, target: str) -> Ours:
        """``target`` is a SQLite file path or a PostgreSQL URL of a scratch database."""
        if target.startswith("postgresql"):
            return cls(EventStore.open(target, create=True))
        return cls(EventStore.open(f"sqlite:///{target}", synchronous="NORMAL"))

    @classmethod
    def writer(cls, target: str, worker: int) -> Ours:
        return cls.open(target)

    def prepare(self, steps: Iterable[Step]) -> list[Op]:
        return [
            (
                flow_name(s.flow),
                [NewEvent(x.type, x.data) for x in s.samples],
                s.revision,
                metadata_for(s.flow),
            )
            for s in steps
        ]

    def apply(self, op: Op) -> None:
        flow_id, events, revision, metadata = op
        self._append(flow_id, events, expected_revision=revision, metadata=metadata)

    def fill(self, steps: Iterable[Step], *, per_commit: int = 10) -> None:
        """Bulk load: several whole-flow batch appends per transaction."""
        pending: list[Op] = []
        for op in self.prepare(steps):
            pending.append(op)
            if len(pending) == per_commit:
                self._commit(pending)
                pending = []
        if pending:
            self._commit(pending)

    def _commit(self, ops: list[Op]) -> None:
        with self.store.transaction() as tx:
            for flow_id, events, revision, metadata in ops:
                tx.append(flow_id, events, expected_revision=revision, metadata=metadata)

    def read_all(self, limit: int | None = None) -> int:
        count = 0
        for _event in self.store.read_all(limit=limit):
            count += 1
        return count

    def close(self) -> None:
        self.store.close()


def create_schema(target: str) -> None:
    """Create eventstore's schema at ``target`` (the raw subjects insert into the same tables)."""
    Ours.open(target).close()
