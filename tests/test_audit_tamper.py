"""An audit trail does not print an edited row as fact: each entry is checked against its hashes."""

from __future__ import annotations

import orjson
from click.testing import CliRunner

from eventstore import EventStore
from eventstore.audit import audit_trail
from eventstore.cli import main
from projections import FlowProjection, FlowService

from .conftest import Target
from .test_tamper import drop_guards, sql


def approved_by_carol(store: EventStore) -> None:
    flows = FlowService(store)
    flows.start_flow("inv-1", controller_id="bot", goal="pay", owner_session_key="s")
    flows.schedule_step("inv-1", step_id="pay", name="pay", run_id="inv-1/1")
    flows.open_gate("inv-1", "pay", prompt="Pay?", actor="agent:bot")
    flows.approve_gate("inv-1", "pay", by="human:carol")


def make_mallory_the_approver(store: EventStore) -> None:
    drop_guards(store)
    if store.dialect == "postgresql":
        edit = "data = jsonb_set(data, '{by}', '\"human:mallory\"')"
    else:
        edit = "data = json_set(data, '$.by', 'human:mallory')"
    sql(store, f"UPDATE flow_events SET {edit} WHERE type = 'GateApproved'")


def cli(target: Target, *args: str) -> tuple[str, str]:
    schema = target.options.get("schema")
    prefix = ["--url", target.url, *(["--schema", schema] if schema else [])]
    result = CliRunner().invoke(main, [*prefix, *args])
    assert result.exit_code == 0, result.output
    return result.stdout, result.stderr


def test_an_edited_entry_is_marked_tampered_and_the_others_intact(target: Target) -> None:
    with target.open(projections=[FlowProjection()]) as store:
        approved_by_carol(store)
        assert [entry.tampered for entry in audit_trail(store, flow_id="inv-1")] == [(), ()]
        make_mallory_the_approver(store)
        opened, approved = audit_trail(store, flow_id="inv-1")
    assert (approved.actor, approved.tampered) == ("human:mallory", ("data-edited",))
    assert opened.tampered == ()


def test_the_command_marks_the_edited_entry_and_sends_the_reader_to_verify(target: Target) -> None:
    with target.open(projections=[FlowProjection()]) as store:
        approved_by_carol(store)
        make_mallory_the_approver(store)
    out, err = cli(target, "audit", "--flow", "inv-1")
    marked = [line for line in out.splitlines() if "TAMPERED" in line]
    assert len(marked) == 1 and "inv-1@4" in marked[0] and "data-edited" in marked[0]
    assert "1 entry marked TAMPERED" in err and "run `eventstore verify`" in err
    lines = [orjson.loads(line) for line in cli(target, "audit", "--flow", "inv-1", "--json")[0].splitlines()]
    assert [line["tampered"] for line in lines] == [[], ["data-edited"]]


def test_an_untouched_trail_has_no_mark(target: Target) -> None:
    with target.open(projections=[FlowProjection()]) as store:
        approved_by_carol(store)
    out, err = cli(target, "audit", "--flow", "inv-1")
    assert "TAMPERED" not in out + err
