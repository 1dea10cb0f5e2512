"""docs/cli.md is the --help of every command: regenerated here, it must not differ."""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
from pathlib import Path

import click

from eventstore.cli import main
from eventstore.cli.docs import reference

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "cli.md"
FIX = "run `python -m eventstore.cli.docs` and commit docs/cli.md"


def command_paths(group: click.Group, prefix: str = "eventstore") -> list[str]:
    paths = []
    for name, command in sorted(group.commands.items()):
        if not command.hidden:
            paths.append(f"{prefix} {name}")
            if isinstance(command, click.Group):
                paths += command_paths(command, f"{prefix} {name}")
    return paths


def test_every_command_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    missing = [path for path in command_paths(main) if f"## `{path}`" not in text]
    assert not missing, f"undocumented commands {missing}: {FIX}"


def test_the_reference_is_current() -> None:
    current, expected = DOC.read_text(encoding="utf-8"), reference()
    diff = list(
        difflib.unified_diff(current.splitlines(), expected.splitlines(), "docs/cli.md", "--help", n=1)
    )
    assert not diff, f"docs/cli.md is stale ({FIX}):\n" + "\n".join(diff[:40])


def test_the_generator_ignores_the_terminal(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "eventstore.cli.docs", "--check", str(DOC)],
        env={**os.environ, "COLUMNS": "40", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    stale = tmp_path / "cli.md"
    stale.write_text("# old\n", encoding="utf-8")
    assert (
        subprocess.run(
            [sys.executable, "-m", "eventstore.cli.docs", "--check", str(stale)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            check=False,
        ).returncode
        == 1
    )
