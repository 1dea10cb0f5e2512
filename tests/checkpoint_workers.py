"""Child processes for the checkpoint race tests: each runs the ``eventstore checkpoint`` command."""

from __future__ import annotations

from typing import Any

import orjson
from click.testing import CliRunner

from eventstore.cli import main

from .workers import BARRIER_TIMEOUT


def checkpoint_by_cli(url: str, options: dict[str, Any], key: str, start: Any) -> dict[str, Any]:
    """``eventstore checkpoint --key KEY --json`` once every sibling is ready; its answer, parsed."""
    schema = options.get("schema")
    prefix = ["--url", url, *(["--schema", schema] if schema else [])]
    start.wait(BARRIER_TIMEOUT)
    result = CliRunner().invoke(main, [*prefix, "checkpoint", "--key", key, "--json"])
    assert result.exit_code == 0, result.output
    answer: dict[str, Any] = orjson.loads(result.output)
    return answer
