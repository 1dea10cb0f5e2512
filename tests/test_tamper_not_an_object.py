"""An edit that leaves an event's data or metadata something other than a JSON object is a clear
IntegrityViolation on every read, never an AttributeError from deep in a fold or the audit trail."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from eventstore import EventStore, IntegrityViolation
from eventstore.audit import audit_trail
from eventstore.timetravel import replay, state_at

from .conftest import Target
from .test_audit_tamper import approved_by_carol
from .test_exchange import run
from .test_tamper import drop_guards, sql

UNREADABLE = (
    r"the event (at position 4|inv-1@4) cannot be read \({} is a JSON {}, not an object\)"
    r".*`eventstore verify`"
)


def set_column(store: EventStore, column: str, value: str) -> None:
    """Store ``value`` (JSON text) in the approval's ``column``: what a careless UPDATE leaves."""
    drop_guards(store)
    cast = "::jsonb" if store.dialect == "postgresql" else ""
    sql(store, f"UPDATE flow_events SET {column} = '{value}'{cast} WHERE flow_id = 'inv-1' AND revision = 4")


READS: dict[str, Callable[[EventStore], Any]] = {
    "read_flow": lambda store: list(store.read_flow("inv-1")),
    "read_all": lambda store: list(store.read_all()),
    "audit_trail": lambda store: list(audit_trail(store, flow_id="inv-1")),
    "replay": lambda store: list(replay(store, "inv-1")),
    "state_at, lean read": lambda store: state_at(store, "inv-1"),
    "state_at, saving snapshots": lambda store: state_at(store, "inv-1", snapshot_every=2),
}


@pytest.mark.parametrize("read", READS.values(), ids=READS.keys())
@pytest.mark.parametrize(("value", "kind"), [("[1, 2]", "array"), ('"approved"', "string")])
def test_data_that_is_no_object_is_an_integrity_violation(
    flow_store: EventStore, read: Callable[[EventStore], Any], value: str, kind: str
) -> None:
    approved_by_carol(flow_store)
    set_column(flow_store, "data", value)
    with pytest.raises(IntegrityViolation, match=UNREADABLE.format("data", kind)) as caught:
        read(flow_store)
    assert (caught.value.flow_id, caught.value.revision) == ("inv-1", 4)
    assert [p.kind for p in flow_store.verify().problems] == ["data-edited"]


@pytest.mark.parametrize("read", ["read_flow", "audit_trail"])
def test_metadata_that_is_no_object_is_an_integrity_violation(flow_store: EventStore, read: str) -> None:
    approved_by_carol(flow_store)
    set_column(flow_store, "metadata", "[1]")
    with pytest.raises(IntegrityViolation, match=UNREADABLE.format("metadata", "array")):
        READS[read](flow_store)


def test_the_commands_say_so_in_one_line(flow_store: EventStore, target: Target) -> None:
    approved_by_carol(flow_store)
    set_column(flow_store, "data", "[1, 2]")
    for command in ("history inv-1", "audit --flow inv-1", "state inv-1", "diff inv-1 1 4"):
        output = run(target, *command.split(), code=1)
        assert output.startswith("error: the event ") and "is a JSON array, not an object" in output, output
    assert "data-edited" in run(target, "verify", code=2)
