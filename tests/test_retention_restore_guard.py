"""A pruned flow, or one a restore cut short has put only partly back, takes no append at any revision."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from eventstore import EventStore, FlowPruned, NewEvent
from eventstore.cli import main
from eventstore.exportfile import Progress
from eventstore.retention import restore
from eventstore.stats import log_stats
from projections import FlowService
from projections.service import Lease

from .conftest import Target
from .test_import_marker import cli_env, cli_prefix
from .test_retention import DAY, T0, flows, retain

__all__ = ["flows"]  # the fixture, used by name


class Cut(Exception):
    """Stops a restore part way, as a crash or Ctrl-C would."""


def cut_after_first_batch(progress: Progress) -> None:
    """Reported every 1,000 rows read; the first batch of 1,000 is written a few rows after the first."""
    if progress.phase == "importing" and progress.done >= 2000:
        raise Cut


def test_a_half_restored_flow_takes_no_append_until_the_restore_finishes(
    flows: EventStore, tmp_path: Path
) -> None:
    service = FlowService(flows)
    service.start_flow("long", controller_id="c", goal="g", owner_session_key="s")
    flows.append("long", [NewEvent("T", {"i": i}) for i in range(2100)])
    service.finish("long")
    archive_id = retain(flows, tmp_path, T0 + 40 * DAY).archive_id
    assert archive_id is not None
    with pytest.raises(Cut):
        restore(flows, archive_id, ["long"], progress=cut_after_first_batch)
    assert flows.revision("long") == 1000
    last = flows.last_position()
    for expected in (None, 1000, 16):
        with pytest.raises(FlowPruned, match=f"'long': was pruned by retention into archive '{archive_id}'"):
            if expected is None:
                flows.append("long", [NewEvent("T", {})])
            else:
                flows.append("long", [NewEvent("T", {})], expected_revision=expected)
    with pytest.raises(FlowPruned, match="'long': was pruned"), flows.transaction() as tx:
        tx.append("long", [NewEvent("T", {})], expected_revision=1000)
    with pytest.raises(FlowPruned, match="'long': was pruned"):
        service.advance("long", state_patch={"late": True})
    assert flows.last_position() == last and flows.verify().ok
    assert restore(flows, archive_id, ["long"]).events == 2102 - 1000
    assert flows.revision("long") == 2102 and flows.verify().ok
    assert flows.append("long", [NewEvent("T", {})]).revision == 2103


def test_an_append_expecting_a_revision_of_a_pruned_flow_says_it_was_pruned(
    flows: EventStore, tmp_path: Path
) -> None:
    archive_id = retain(flows, tmp_path, T0 + 40 * DAY).archive_id
    with pytest.raises(FlowPruned, match=f"'f1': was pruned by retention into archive '{archive_id}'"):
        flows.append("f1", [NewEvent("T", {})], expected_revision=3)
    assert flows.revision("f1") == 0 and flows.verify().ok


def every_command(service: FlowService) -> dict[str, Callable[[], object]]:
    """Each FlowService command on flow 'f1' (step 'a'), with arguments it would take on a live flow."""
    lease = Lease("owner", 1, T0)
    return {
        "start_flow": lambda: service.start_flow("f1", controller_id="c", goal="g", owner_session_key="s"),
        "advance": lambda: service.advance("f1", state_patch={"late": True}),
        "advance expecting": lambda: service.advance("f1", expected_revision=3),
        "wait": lambda: service.wait("f1", waiting_for="x"),
        "resume": lambda: service.resume("f1"),
        "request_cancel": lambda: service.request_cancel("f1", by="x"),
        "cancel": lambda: service.cancel("f1"),
        "finish": lambda: service.finish("f1"),
        "fail": lambda: service.fail("f1", error="e"),
        "acquire_lease": lambda: service.acquire_lease("f1", owner_token="o", ttl_seconds=5),
        "release_lease": lambda: service.release_lease("f1", lease),
        "record_decision": lambda: service.record_decision("f1", actor="a", decision="d"),
        "schedule_step": lambda: service.schedule_step("f1", step_id="b", name="b", run_id="r2"),
        "schedule_step again": lambda: service.schedule_step("f1", step_id="a", name="a", run_id="run-f1"),
        "start_step": lambda: service.start_step("f1", "a"),
        "start_step unknown": lambda: service.start_step("f1", "zz"),
        "complete_step": lambda: service.complete_step("f1", "a"),
        "fail_step": lambda: service.fail_step("f1", "a", error="e"),
        "skip_step": lambda: service.skip_step("f1", "a"),
        "time_out_step": lambda: service.time_out_step("f1", "a"),
        "retry_step": lambda: service.retry_step("f1", "a"),
        "open_gate": lambda: service.open_gate("f1", "a", prompt="p"),
        "approve_gate": lambda: service.approve_gate("f1", "a", by="x"),
        "reject_gate": lambda: service.reject_gate("f1", "a", by="x"),
    }


def refused_as_pruned(store: EventStore, archive_id: str) -> list[str]:
    """The commands that do not raise FlowPruned naming ``archive_id`` on 'f1' (and write nothing)."""
    last, wrong = store.last_position(), []
    for name, command in every_command(FlowService(store)).items():
        try:
            command()
            wrong.append(f"{name}: no error")
        except FlowPruned as error:
            if error.archive_id != archive_id or "'f1': was pruned by retention" not in str(error):
                wrong.append(f"{name}: {error}")
        except Exception as error:
            wrong.append(f"{name}: {type(error).__name__}: {error}")
    assert store.last_position() == last
    return wrong


def test_every_command_on_a_pruned_flow_says_it_was_pruned(flows: EventStore, tmp_path: Path) -> None:
    archive_id = retain(flows, tmp_path, T0 + 40 * DAY).archive_id
    assert archive_id is not None
    assert refused_as_pruned(flows, archive_id) == []


def test_every_command_on_a_half_restored_flow_says_it_was_pruned(flows: EventStore, tmp_path: Path) -> None:
    """Its read model holds only part of its history: no refusal or no-op decided on that is true."""
    flows.append("f1", [NewEvent("T", {"i": i}) for i in range(2100)])
    archive_id = retain(flows, tmp_path, T0 + 40 * DAY).archive_id
    assert archive_id is not None
    with pytest.raises(Cut):
        restore(flows, archive_id, ["f1"], progress=cut_after_first_batch)
    assert 0 < flows.revision("f1") < 2103
    assert refused_as_pruned(flows, archive_id) == []


def test_a_half_restored_flow_is_shown_as_back_only_in_part(
    flows: EventStore, target: Target, tmp_path: Path
) -> None:
    """Reads of it give the part that is back: stats and the CLI's history say it is only a part."""
    flows.append("f1", [NewEvent("T", {"i": i}) for i in range(2100)])
    archive_id = retain(flows, tmp_path, T0 + 40 * DAY).archive_id
    assert archive_id is not None
    with pytest.raises(Cut):
        restore(flows, archive_id, ["f1"], progress=cut_after_first_batch)
    have = flows.revision("f1")
    (partial,) = log_stats(flows).partly_restored
    assert (partial.flow_id, partial.archive_id, partial.revision, partial.last_revision) == (
        "f1",
        archive_id,
        have,
        2103,
    )
    hint = f"`eventstore archive restore {archive_id} f1`"

    def run(*args: str) -> Result:
        return CliRunner().invoke(main, [*cli_prefix(target), *args], env=cli_env(target))

    shown = json.loads(run("stats", "--json").stdout)["partly_restored"]
    assert shown == [{"flow_id": "f1", "archive_id": archive_id, "revision": have, "last_revision": 2103}]
    (line,) = [line for line in run("stats").stdout.splitlines() if line.startswith("restore")]
    assert "PARTIAL" in line and f"{have:,} of 2,103" in line and hint in line
    history = run("history", "f1")
    assert history.exit_code == 0 and f"back only in part: revisions 1 to {have} of 2103" in history.stderr
    assert hint in history.stderr

    restore(flows, archive_id, ["f1"])
    assert log_stats(flows).partly_restored == ()
    assert json.loads(run("stats", "--json").stdout)["partly_restored"] == []
    assert run("history", "f1").stderr == ""
