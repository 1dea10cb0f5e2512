"""What the store needs from an inline projection (the machinery is in ``projections/``).

An inline projection is applied inside every append transaction, with the
events just written, so its read models change together with the log or not
at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Protocol

from .events import RecordedEvent

if TYPE_CHECKING:
    from .store import EventStore, Transaction


class InlineProjection(Protocol):
    name: ClassVar[str]

    def prepare(self, store: EventStore) -> None:
        """Create or check the projection's tables; called once when the store opens."""

    def apply(self, tx: Transaction, events: Sequence[RecordedEvent]) -> None:
        """Fold ``events`` (just appended to one flow) into the read model, within ``tx``."""
