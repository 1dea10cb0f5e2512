"""Time travel over a tampered log refuses, naming the flow and revision, instead of folding over it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner

from eventstore import EventStore, IntegrityViolation
from eventstore.cli import main
from eventstore.timetravel import diff, replay, state_at, what_if
from projections import FlowService

from .conftest import Target
from .test_tamper import drop_guards, sql

GAP = r"flow 'f' has no event at revision {} though it has later ones: .*`eventstore verify` says where"
UNCHAINED = r"flow 'f' at revision {} does not chain onto revision {}.*`eventstore verify` says where"


@pytest.fixture
def advanced(flow_store: EventStore) -> EventStore:
    """Flow f at revision 8: started, then advanced seven times; the guards against edits dropped."""
    service = FlowService(flow_store)
    service.start_flow("f", controller_id="c", goal="g", owner_session_key="s", state={"n": 0})
    for n in range(1, 8):
        service.advance("f", state_patch={"n": n})
    drop_guards(flow_store)
    return flow_store


def delete(store: EventStore, revision: int) -> None:
    sql(store, f"DELETE FROM flow_events WHERE flow_id = 'f' AND revision = {revision}")


def swap(store: EventStore, a: int, b: int) -> None:
    """Exchange two events' revisions: every revision is there, but the chain runs out of order."""
    sql(store, f"UPDATE flow_events SET revision = 100 WHERE flow_id = 'f' AND revision = {a}")
    sql(store, f"UPDATE flow_events SET revision = {a} WHERE flow_id = 'f' AND revision = {b}")
    sql(store, f"UPDATE flow_events SET revision = {b} WHERE flow_id = 'f' AND revision = 100")


READS: dict[str, Callable[[EventStore], Any]] = {
    "state_at, lean read": lambda store: state_at(store, "f", revision=3),
    "state_at, saving snapshots": lambda store: state_at(store, "f", revision=3, snapshot_every=1),
    "state_at, latest": lambda store: state_at(store, "f"),
    "diff": lambda store: diff(store, "f", 1, 5),
    "what_if": lambda store: what_if(store, "f", without_revisions=[4]),
    "replay": lambda store: list(replay(store, "f")),
    "replay from after the gap": lambda store: list(replay(store, "f", from_revision=3)),
}


class TestADeletedEvent:
    @pytest.mark.parametrize("read", READS.values(), ids=READS.keys())
    def test_every_fold_over_it_is_an_integrity_violation(
        self, advanced: EventStore, read: Callable[[EventStore], Any]
    ) -> None:
        delete(advanced, 2)
        with pytest.raises(IntegrityViolation, match=GAP.format(2)) as caught:
            read(advanced)
        assert (caught.value.flow_id, caught.value.revision, caught.value.position) == ("f", 2, None)

    def test_the_last_revision_asked_for_missing_is_not_the_state_before_it(
        self, advanced: EventStore
    ) -> None:
        delete(advanced, 3)
        with pytest.raises(IntegrityViolation, match=GAP.format(3)):
            state_at(advanced, "f", revision=3)

    def test_the_first_event_after_a_snapshot_missing(self, advanced: EventStore) -> None:
        state_at(advanced, "f", snapshot_every=4)  # a snapshot at 4 and one at 8
        delete(advanced, 5)
        with pytest.raises(IntegrityViolation, match=GAP.format(5)):
            state_at(advanced, "f", revision=7)


class TestEventsOutOfOrder:
    @pytest.mark.parametrize("read", ["what_if", "diff", "replay", "state_at, saving snapshots"])
    def test_a_fold_reading_hashes_finds_the_link_broken(self, advanced: EventStore, read: str) -> None:
        swap(advanced, 2, 3)
        with pytest.raises(IntegrityViolation, match=UNCHAINED.format(2, 1)) as caught:
            READS[read](advanced)
        assert (caught.value.flow_id, caught.value.revision) == ("f", 2)

    @pytest.mark.parametrize("read", ["state_at, lean read", "state_at, latest"])
    def test_the_lean_read_finds_the_link_broken_too(self, advanced: EventStore, read: str) -> None:
        """No snapshot on the way: the fold reads no hashes, and the links are checked apart."""
        swap(advanced, 2, 3)
        with pytest.raises(IntegrityViolation, match=UNCHAINED.format(2, 1)) as caught:
            READS[read](advanced)
        assert (caught.value.flow_id, caught.value.revision) == ("f", 2)

    def test_a_first_event_that_does_not_start_the_chain(self, advanced: EventStore) -> None:
        sql(advanced, "DELETE FROM flow_events WHERE flow_id = 'f' AND revision = 1")
        sql(advanced, "UPDATE flow_events SET revision = 1 WHERE flow_id = 'f' AND revision = 2")
        with pytest.raises(IntegrityViolation, match=r"flow 'f' at revision 1 does not start its chain"):
            state_at(advanced, "f", revision=1)

    def test_links_after_a_snapshot_are_checked_on_the_lean_read(self, advanced: EventStore) -> None:
        state_at(advanced, "f", snapshot_every=4)
        swap(advanced, 6, 7)  # the snapshot at 4 and its link to 5 hold; 6 no longer follows 5
        with pytest.raises(IntegrityViolation, match=UNCHAINED.format(6, 5)):
            state_at(advanced, "f", revision=7)

    def test_the_event_after_a_snapshot_must_chain_onto_it_on_the_lean_read(
        self, advanced: EventStore
    ) -> None:
        state_at(advanced, "f", snapshot_every=4)
        swap(advanced, 5, 6)  # the snapshot at 4 still matches its event; 5 no longer follows it
        with pytest.raises(IntegrityViolation, match=UNCHAINED.format(5, 4)):
            state_at(advanced, "f", revision=7)


def test_state_at_of_a_reordered_log_says_so_in_one_line(advanced: EventStore, target: Target) -> None:
    swap(advanced, 2, 3)
    schema = target.options.get("schema")
    prefix = ["--url", target.url, *(["--schema", schema] if schema else [])]
    result = CliRunner().invoke(main, [*prefix, "state", "f", "--at", "3"])
    assert result.exit_code == 1
    assert result.output.startswith("error: flow 'f' at revision 2 does not chain onto revision 1")


def test_the_commands_say_so_in_one_line(advanced: EventStore, target: Target) -> None:
    delete(advanced, 2)
    schema = target.options.get("schema")
    prefix = ["--url", target.url, *(["--schema", schema] if schema else [])]
    for command in (["state", "f", "--at", "3"], ["diff", "f", "1", "5"]):
        result = CliRunner().invoke(main, [*prefix, *command])
        assert result.exit_code == 1 and "at revision 2" not in result.stdout
        assert result.output.startswith("error: flow 'f' has no event at revision 2 though")
