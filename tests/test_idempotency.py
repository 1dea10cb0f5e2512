"""Retrying an append with the same event ids is safe."""

from __future__ import annotations

import uuid

import pytest

from eventstore import DuplicateEventId, EventStore, NewEvent, RevisionMismatch


class TestIdempotentRetry:
    def test_retry_with_same_expected_revision_returns_the_first_result(self, store: EventStore) -> None:
        batch = [NewEvent("A", {"x": 1}), NewEvent("B", {"x": 2})]
        first = store.append("f", batch, expected_revision=0)
        again = store.append("f", batch, expected_revision=0)
        assert again == first
        assert store.revision("f") == 2
        assert store.last_position() == 2

    def test_retry_with_any_returns_the_first_result(self, store: EventStore) -> None:
        batch = [NewEvent("A", {"x": 1})]
        first = store.append("f", batch)
        store.append("f", [NewEvent("B", {})])
        assert store.append("f", batch) == first
        assert store.revision("f") == 2

    def test_retry_inside_a_transaction(self, store: EventStore) -> None:
        batch = [NewEvent("A", {})]
        first = store.append("f", batch, expected_revision=0)
        with store.transaction() as tx:
            assert tx.append("f", batch, expected_revision=0) == first
            tx.append("g", [NewEvent("B", {})], expected_revision=0)
        assert store.revision("f") == 1
        assert store.revision("g") == 1

    def test_same_id_with_different_data_is_an_error(self, store: EventStore) -> None:
        event_id = uuid.uuid4()
        store.append("f", [NewEvent("A", {"x": 1}, event_id=event_id)])
        with pytest.raises(DuplicateEventId, match="different content") as caught:
            store.append("f", [NewEvent("A", {"x": 2}, event_id=event_id)], expected_revision=0)
        assert caught.value.event_id == event_id
        assert store.revision("f") == 1

    def test_same_id_in_another_flow_is_an_error(self, store: EventStore) -> None:
        event = NewEvent("A", {})
        store.append("f", [event])
        with pytest.raises(DuplicateEventId, match="already written to flow 'f'"):
            store.append("g", [event])
        assert store.revision("g") == 0

    def test_a_known_id_mixed_with_new_ones_is_an_error(self, store: EventStore) -> None:
        known = NewEvent("A", {})
        store.append("f", [known])
        with pytest.raises(DuplicateEventId, match="not with the other events"):
            store.append("f", [NewEvent("B", {}), known])
        with pytest.raises(DuplicateEventId):
            store.append("f", [known, NewEvent("B", {})])
        assert store.revision("f") == 1
        assert store.last_position() == 1

    def test_a_genuinely_stale_append_is_still_a_mismatch(self, store: EventStore) -> None:
        store.append("f", [NewEvent("A", {})])
        with pytest.raises(RevisionMismatch):
            store.append("f", [NewEvent("B", {})], expected_revision=0)

    def test_ids_repeated_within_one_append_are_refused(self, store: EventStore) -> None:
        event = NewEvent("A", {})
        with pytest.raises(Exception, match="appears twice"):
            store.append("f", [event, event])

    def test_a_retry_of_an_append_larger_than_a_statements_parameters(self, store: EventStore) -> None:
        batch = [NewEvent("A", {}) for _ in range(2**16)]  # PostgreSQL binds at most 65535 parameters
        first = store.append("f", batch, expected_revision=0)
        assert store.append("f", batch, expected_revision=0) == first
        with pytest.raises(RevisionMismatch):
            store.append("f", [NewEvent("B", {}) for _ in range(2**16)], expected_revision=0)
        assert store.last_position() == 2**16
