"""Write docs/cli.md, the command-line reference, from the ``--help`` of every command.

    python -m eventstore.cli.docs            # rewrite docs/cli.md
    python -m eventstore.cli.docs --check    # exit 1 if docs/cli.md is out of date

Every registered command is included, so a new command only needs this run
again; tests/test_cli_docs.py fails while the file is stale.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import click

WIDTH = 88
DEFAULT_PATH = Path("docs") / "cli.md"

INTRO = """\
# Command-line reference

`eventstore` (also `python -m eventstore`) is a thin layer over the library:
each command is one library call plus formatting. This page is generated from
the commands' `--help` by `python -m eventstore.cli.docs`; a test fails when
it is out of date, so rerun that after changing or adding a command.

Conventions shared by every command:

* **Store**: `--url` (or `EVENTSTORE_URL`) names the store, by default the
  SQLite file `eventstore.db` in the current directory; `--schema` (or
  `EVENTSTORE_SCHEMA`) picks a PostgreSQL schema, and with a SQLite URL is
  a usage error (SQLite has no schemas). Both go before the
  command: `eventstore --url postgresql://... flows`. Only `db upgrade`,
  `demo` and `import` create a SQLite file that is not there, or create or
  upgrade the schema in one; every other command refuses a missing file, or
  one that holds no store (`error: no store at ...`), so a mistyped path is
  never taken for an empty store, and a store at an older schema version
  asks for `eventstore db upgrade`.
* **Output**: people get tables, timelines and colour; `--json` gives the
  same answer for scripts, as one JSON object, or one per line for commands
  that stream (`history`, `audit`, `tail`). Times in JSON are UTC to the
  microsecond with a `Z`, `2030-01-01T09:00:00.000000Z`, as the store and
  export files write them; problems found by `verify` and `verify-export`
  are objects (`flow_id`, `position`, `revision`, `kind`, `detail`).
  Colour is used only on a terminal, and never when `NO_COLOR` is set.
  Progress bars (`verify`, `rebuild`) go to stderr, and only when it is a
  terminal. `export`, `import`, `verify-export`, `prune` and `archive
  restore` print their progress to stderr as a line per phase (updated in
  place on a terminal), unless `--json` is given.
* **Times** (`--since`, `--until`, `--at`): ISO 8601 with a zone
  (`2030-01-01T09:00Z`); `--since` and `--until` also take a date
  (`2030-01-01`, midnight UTC) or an age (`15m`, `2h`, `7d`).
* **Exit status**: 0 on success; 1 with one line `error: ...` on stderr when
  the library refuses (unknown flow, bad time, bad URL, unreachable
  database), never a traceback; 2 for a usage error, and when a check finds
  a problem: `verify` (a broken chain, or an unfinished import),
  `verify-export`, `checkpoint --verify`, and a proof, signature or
  checkpoint that does not verify (`prove`, taking a `checkpoint`: a line
  `FAILED: ...`); 130 after Ctrl-C, from the moment the command starts
  (also while it loads), with one line `interrupted` on stderr (`tail`
  says first how many events it printed and where to go on from). Output
  cut short by its reader (`eventstore history FLOW | head`) is not an
  error: exit status 0, nothing on stderr.
"""


def _commands(
    command: click.Command, ctx: click.Context
) -> Iterator[tuple[str, click.Command, click.Context]]:
    """Every command under ``command``, depth first, in name order, with its context."""
    yield ctx.command_path, command, ctx
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                child = click.Context(
                    sub, info_name=name, parent=ctx, terminal_width=WIDTH, max_content_width=WIDTH
                )
                yield from _commands(sub, child)


def reference(group: click.Group | None = None) -> str:
    """The Markdown of the reference for ``group`` (default: the ``eventstore`` command)."""
    if group is None:
        from . import main

        group = main
    root = click.Context(group, info_name="eventstore", terminal_width=WIDTH, max_content_width=WIDTH)
    entries = list(_commands(group, root))
    out = [INTRO, "## Commands", ""]
    for path, command, _ctx in entries[1:]:
        out.append(f"- [`{path}`](#{_anchor(path)}): {command.get_short_help_str(limit=WIDTH)}")
    for path, command, ctx in entries:
        out += ["", f"## `{path}`", "", "```text", command.get_help(ctx).rstrip(), "```"]
    return "\n".join(out) + "\n"


def _anchor(path: str) -> str:
    return path.replace(" ", "-").lower()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eventstore.cli.docs",
        description="Write the command-line reference, generated from the --help of every command.",
    )
    parser.add_argument(
        "path",
        nargs="?",
        type=Path,
        default=DEFAULT_PATH,
        help=f"where to write it (default: {DEFAULT_PATH})",
    )
    parser.add_argument("--check", action="store_true", help="write nothing: exit 1 if PATH is out of date")
    args = parser.parse_args(argv)
    path: Path = args.path
    text = reference()
    if args.check:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            print(f"{path} is out of date: run python -m eventstore.cli.docs", file=sys.stderr)
            return 1
        return 0
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
