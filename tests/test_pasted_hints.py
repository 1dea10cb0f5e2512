"""A command printed as a hint works when pasted into a shell, whatever the ids it holds."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from eventstore import EventStore, FlowArchived, ImportUnfinished, NewEvent
from eventstore.cli import main
from eventstore.retention import restore
from eventstore.stats import log_stats
from projections import FlowService

from .conftest import Target
from .test_import_marker import cli_env, cli_prefix
from .test_retention import DAY, T0, flows, retain
from .test_retention_restore_guard import Cut, cut_after_first_batch

__all__ = ["flows"]  # the fixture, used by name

ODD = "-x b$HOME;echo 'hi'"


def pasted(hint: str) -> list[str]:
    """The arguments a shell gives ``eventstore`` for the one command quoted in ``hint``."""
    (command,) = re.findall(r"`(eventstore [^`]*)`", hint)
    program, *arguments = shlex.split(command)
    assert program == "eventstore"
    return arguments


def test_a_partly_restored_flows_hint_restores_it_when_pasted(
    flows: EventStore, target: Target, tmp_path: Path
) -> None:
    service = FlowService(flows)
    service.start_flow(ODD, controller_id="c", goal="g", owner_session_key="s")
    flows.append(ODD, [NewEvent("T", {"i": i}) for i in range(2100)])
    service.finish(ODD)
    archive_id = retain(flows, tmp_path, T0 + 40 * DAY).archive_id
    assert archive_id is not None
    with pytest.raises(FlowArchived) as archived:
        flows.verify(ODD)
    assert pasted(str(archived.value))[-2:] == [archive_id, ODD]

    def run(*args: str) -> Result:
        return CliRunner().invoke(main, [*cli_prefix(target), *args], env=cli_env(target))

    with pytest.raises(Cut):
        restore(flows, archive_id, [ODD], progress=cut_after_first_batch)
    (partial,) = log_stats(flows).partly_restored
    (line,) = [line for line in run("stats").stdout.splitlines() if line.startswith("restore")]
    assert pasted(line) == pasted(partial.warning())
    ran = run(*pasted(line))
    assert ran.exit_code == 0, ran.output
    assert log_stats(flows).partly_restored == ()


def test_an_unfinished_imports_hint_quotes_its_file() -> None:
    error = ImportUnfinished("-my exports/a b.jsonl", "ab" * 32, 1, 2, "2026-01-01T00:00:00Z")
    assert pasted(str(error).split("), or give")[0] + ")") == ["import", "--", "-my exports/a b.jsonl"]
