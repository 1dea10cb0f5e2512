"""Typed events, the registry, and upcasting old versions on read."""

from __future__ import annotations

import re
import uuid
from typing import Any, ClassVar

import pytest

from eventstore import Event, EventRegistry, EventStore, InvalidInput, NewEvent, RecordedEvent, UpcastError


class StepCompleted(Event):
    step_id: str
    result: dict[str, Any]


class Renamed(Event):
    event_type: ClassVar[str] = "agent.step.renamed"
    step_id: str


class Decision(Event):
    """Version 3: `why` was called `reason` in v1, and v2 had no confidence."""

    schema_version: ClassVar[int] = 3
    decision: str
    why: str
    confidence: float


def to_v2(data: dict[str, Any]) -> dict[str, Any]:
    data["why"] = data.pop("reason")
    return data


def to_v3(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "confidence": 1.0}


class TestTypedEvents:
    @pytest.mark.parametrize(
        ("result", "message"),
        [
            ({"x": float("nan")}, "data at $.result.x is nan"),
            ({"x": float("-inf")}, "data at $.result.x is -inf"),
            ({"b": b"\xff"}, "cannot be serialised"),
        ],
    )
    def test_a_value_json_cannot_hold_is_refused_not_stored_as_null(
        self, store: EventStore, result: dict[str, Any], message: str
    ) -> None:
        """A dict or Any field takes NaN, infinity and bytes; pydantic's JSON dump would have made
        NaN a null and failed on bytes that are not UTF-8. Refused, and nothing is written."""
        with pytest.raises(InvalidInput, match=re.escape(message)):
            store.append("f", [StepCompleted(step_id="s", result=result)])
        assert store.last_position() == 0

    def test_type_name_defaults_to_the_class_name(self, store: EventStore) -> None:
        store.append("f", [StepCompleted(step_id="s1", result={"n": 5}), Renamed(step_id="s1")])
        first, second = store.read_flow("f")
        assert (first.type, first.data) == ("StepCompleted", {"step_id": "s1", "result": {"n": 5}})
        assert second.type == "agent.step.renamed"

    def test_recorded_event_decodes_to_its_model(self, store: EventStore) -> None:
        original = StepCompleted(step_id="s1", result={"n": 5})
        store.append("f", [original])
        (recorded,) = store.read_flow("f")
        assert store.decode(recorded) == original
        assert store.decode(recorded).event_id == original.event_id

    def test_recorded_events_are_frozen(self, store: EventStore) -> None:
        store.append("f", [NewEvent("A", {})])
        (recorded,) = store.read_flow("f")
        with pytest.raises(AttributeError):
            recorded.type = "B"  # type: ignore[misc]

    def test_unknown_types_read_as_raw_records(self, store: EventStore) -> None:
        store.append("f", [NewEvent("SomethingNew", {"x": 1})])
        (recorded,) = store.read_flow("f")
        assert isinstance(recorded, RecordedEvent) and recorded.data == {"x": 1}
        with pytest.raises(UpcastError, match="no model is registered"):
            store.decode(recorded)

    def test_typed_event_ids_make_retries_idempotent(self, store: EventStore) -> None:
        event = StepCompleted(step_id="s1", result={}, event_id=uuid.UUID(int=7))
        assert store.append("f", [event]) == store.append("f", [event])
        assert store.revision("f") == 1

    def test_one_type_name_cannot_name_two_models(self) -> None:
        class Other(Event):
            event_type: ClassVar[str] = "StepCompleted"

        registry = EventRegistry([StepCompleted])
        with pytest.raises(InvalidInput, match="already registered"):
            registry.register(Other)


class TestUpcasting:
    def store_with_history(self, store: EventStore) -> None:
        store.append(
            "f",
            [
                NewEvent("Decision", {"decision": "retry", "reason": "timeout"}, schema_version=1),
                NewEvent("Decision", {"decision": "stop", "why": "budget"}, schema_version=2),
                Decision(decision="go", why="approved", confidence=0.7),
            ],
        )

    def test_old_versions_read_as_the_current_model(self, target) -> None:  # type: ignore[no-untyped-def]
        registry = EventRegistry([Decision])
        registry.add_upcaster("Decision", 1, to_v2)
        registry.add_upcaster("Decision", 2, to_v3)
        with target.open(registry=registry) as store:
            self.store_with_history(store)
            decoded = [store.decode(e) for e in store.read_flow("f")]
        assert [(d.decision, d.why, d.confidence) for d in decoded] == [
            ("retry", "timeout", 1.0),
            ("stop", "budget", 1.0),
            ("go", "approved", 0.7),
        ]

    def test_stored_data_stays_as_written(self, store: EventStore) -> None:
        self.store_with_history(store)
        first = next(store.read_flow("f"))
        assert (first.schema_version, first.data) == (1, {"decision": "retry", "reason": "timeout"})
        assert store.verify().ok

    def test_missing_upcaster_is_a_clear_error(self, store: EventStore) -> None:
        store.registry.register(Decision)
        self.store_with_history(store)
        with pytest.raises(UpcastError, match="at version 1 after upcasting, but the model is at version 3"):
            store.decode(next(store.read_flow("f")))

    def test_failing_upcaster_is_wrapped(self, store: EventStore) -> None:
        store.registry.register(Decision)
        store.registry.add_upcaster("Decision", 1, lambda data: data["missing"])
        self.store_with_history(store)
        with pytest.raises(UpcastError, match="from version 1 to 2 failed"):
            store.decode(next(store.read_flow("f")))

    @pytest.mark.parametrize("returned", [None, ["decision"], "data"])
    def test_an_upcaster_that_returns_no_dict_is_an_upcast_error(
        self, store: EventStore, returned: Any
    ) -> None:
        store.registry.register(Decision)
        store.registry.add_upcaster("Decision", 1, lambda data: returned)
        self.store_with_history(store)
        with pytest.raises(UpcastError, match=r"from version 1 to 2 returned .*, not the data as a dict"):
            store.decode(next(store.read_flow("f")))

    def test_decode_takes_a_recorded_event(self, store: EventStore) -> None:
        for value in (None, {"type": "Decision"}):
            with pytest.raises(InvalidInput, match="decode takes a RecordedEvent"):
                store.decode(value)  # type: ignore[arg-type]
