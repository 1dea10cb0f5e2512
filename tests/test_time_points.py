"""A time for ``state_at`` or ``diff`` (``--at``) must exist in UTC: else InvalidInput, not a traceback."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from eventstore import EventStore, InvalidInput, NewEvent
from eventstore.cli import main
from eventstore.timetravel import diff, state_at

BEFORE_YEAR_ONE = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))  # 0000-12-31 in UTC
AFTER_YEAR_9999 = datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-14)))


@pytest.mark.parametrize("moment", [BEFORE_YEAR_ONE, AFTER_YEAR_9999])
def test_a_time_out_of_range_in_utc_is_invalid_input(store: EventStore, moment: datetime) -> None:
    store.append("a", [NewEvent("Noted", {})])
    with pytest.raises(InvalidInput, match="out of range"):
        state_at(store, "a", at=moment)
    with pytest.raises(InvalidInput, match="out of range"):
        diff(store, "a", moment, 1)


def test_the_state_command_says_so_without_a_traceback(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    with EventStore.open(url) as store:
        store.append("a", [NewEvent("Noted", {})])
    result = CliRunner().invoke(main, ["--url", url, "state", "a", "--at", "0001-01-01T00:00:00+14:00"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "error: " in result.output and "out of range" in result.output
