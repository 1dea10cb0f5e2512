"""`eventstore history` does not print an edited row as fact: each event is checked against its hashes,
as the audit trail's entries are."""

from __future__ import annotations

import orjson

from projections import FlowProjection

from .conftest import Target
from .test_audit_tamper import approved_by_carol, cli, make_mallory_the_approver


def test_an_edited_event_is_marked_in_the_table_and_named_on_stderr(target: Target) -> None:
    with target.open(projections=[FlowProjection()]) as store:
        approved_by_carol(store)
        make_mallory_the_approver(store)
    out, err = cli(target, "history", "inv-1", "--events")
    marked = [line for line in out.splitlines() if "TAMPERED" in line]
    assert len(marked) == 2  # the step's span, and under it the approval itself
    assert "TAMPERED step pay" in marked[0] and "TAMPERED GateApproved" in marked[1]
    assert "human:mallory" in marked[1]  # what the row holds now, marked as such
    assert err.splitlines() == [
        "TAMPERED inv-1@4: the stored row does not match its hashes (data-edited); "
        "the table shows what it holds now, not what was recorded",
        "run `eventstore verify inv-1` for the whole check",
    ]


def test_json_names_what_is_wrong_with_each_row(target: Target) -> None:
    with target.open(projections=[FlowProjection()]) as store:
        approved_by_carol(store)
        make_mallory_the_approver(store)
    out, err = cli(target, "history", "inv-1", "--json")
    events = [orjson.loads(line) for line in out.splitlines()]
    assert [(event["revision"], event["tampered"]) for event in events] == [
        (1, []),
        (2, []),
        (3, []),
        (4, ["data-edited"]),
    ]
    assert err == ""


def test_an_intact_flow_has_no_mark(target: Target) -> None:
    with target.open(projections=[FlowProjection()]) as store:
        approved_by_carol(store)
    out, err = cli(target, "history", "inv-1", "--events")
    assert "TAMPERED" not in out and err == ""
