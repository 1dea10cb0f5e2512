"""A clock that steps back (an NTP correction): a time names a prefix of the log, the only states there were.

Event 3 is recorded at 10:00:30, after event 2 at 10:01:00. At 10:00:45 the
flow, in log order, had only event 1: event 2 came later, and event 3 after it.
So its state then is revision 1, never "events 1 and 3 without 2".
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from click.testing import CliRunner
from freezegun import freeze_time

from eventstore import EventStore
from eventstore.cli import main
from eventstore.retention import RetentionPolicy, run_retention
from eventstore.timetravel import diff, state_at
from projections import FlowProjection, FlowQueries, FlowService

from .conftest import Target
from .readmodels import assert_matches_rebuild

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
BETWEEN = T0 + timedelta(seconds=45)  # after event 3's time, before event 2's


def stepped_back(target: Target) -> EventStore:
    """A flow whose third event's time is earlier than its second's: the clock stepped back."""
    with freeze_time(T0):
        store = target.open(projections=[FlowProjection()])
        flows = FlowService(store)
        flows.start_flow("f", controller_id="c", goal="g", owner_session_key="s", state={"n": 0})
    with freeze_time(T0 + timedelta(minutes=1)):
        flows.advance("f", state_patch={"n": 1})
    with freeze_time(T0 + timedelta(seconds=30)):
        flows.advance("f", state_patch={"n": 2})
    return store


def test_state_at_a_time_stops_at_the_first_event_past_it(target: Target) -> None:
    with stepped_back(target) as store:
        view = state_at(store, "f", at=BETWEEN)
        assert view.flow is not None and view.flow.revision == 1 and view.flow.state == {"n": 0}
        later = state_at(store, "f", at=T0 + timedelta(minutes=1))
        assert later.flow is not None and later.flow.revision == 3


def test_diff_by_time_compares_prefixes(target: Target) -> None:
    with stepped_back(target) as store:
        result = diff(store, "f", T0, BETWEEN)
        assert result.events == [] and result.changes == []


def test_the_state_command_at_a_time_shows_a_prefix(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    stepped_back(Target(url)).close()
    result = CliRunner().invoke(main, ["--url", url, "state", "f", "--at", BETWEEN.isoformat(), "--json"])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.output)["flow"]["revision"] == 1


def test_a_prune_recounts_a_sessions_activity_as_a_rebuild_does(target: Target, tmp_path: Path) -> None:
    """The session's last activity is its latest event's time, also when that is not its flows' last event."""
    with freeze_time(T0), stepped_back(target) as store:
        flows = FlowService(store)
        flows.start_flow("old", controller_id="c", goal="g", owner_session_key="s")
        flows.finish("old")
        with freeze_time(T0 + timedelta(days=31)):
            report = run_retention(store, RetentionPolicy(finished=timedelta(days=30)), tmp_path / "archives")
        assert report.pruned == ("old",)
        assert FlowQueries(store).session("s").last_activity_at == T0 + timedelta(minutes=1)
        assert_matches_rebuild(store)
