"""Command-line commands for retention: prune, legal holds, archives and restore.

Each is one library call (``eventstore.retention``) plus formatting; ``--json``
gives the result as one JSON document.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from ..errors import InvalidInput
from ..retention import RetentionPolicy, list_archives, list_holds, restore, run_retention
from ..retention import hold as hold_flow
from ..retention import release as release_flow
from ..wording import counted
from .exchange import phase_progress
from .output import Styled, colour_of, echo, echo_json, printable, table, when
from .params import COUNT

DEFAULT_ARCHIVE_DIR = "archives"


def _archive_dir(given: Path | None) -> Path:
    """``--archive-dir``, else ``EVENTSTORE_ARCHIVE_DIR``, else ./archives (read at the CLI edge only)."""
    return given or Path(os.environ.get("EVENTSTORE_ARCHIVE_DIR") or DEFAULT_ARCHIVE_DIR)


def register(main: click.Group, open_store: Any, errors: Any) -> None:
    """Add the commands to the ``eventstore`` group."""
    archive_dir_option = click.option(
        "--archive-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Where archives are written (default: EVENTSTORE_ARCHIVE_DIR, else ./archives).",
    )

    @main.command()
    @click.option(
        "--policy",
        "policy",
        multiple=True,
        required=True,
        metavar="STATUS=DAYS",
        callback=_policy,
        help="Keep flows that ended in STATUS (finished, failed, cancelled) for DAYS (0 to 36525); "
        "once per status.",
    )
    @archive_dir_option
    @click.option(
        "--max-flows",
        type=COUNT,
        default=10_000,
        show_default=True,
        help="Flows to prune at most in this run.",
    )
    @click.option("--dry-run", is_flag=True, help="Only list the flows that would be pruned.")
    @click.option("--json", "as_json", is_flag=True, help="The report as JSON.")
    @click.pass_context
    def prune(
        ctx: click.Context,
        policy: RetentionPolicy,
        archive_dir: Path | None,
        max_flows: int,
        dry_run: bool,
        as_json: bool,
    ) -> None:
        """Archive flows that ended longer ago than their policy allows, verify the archive, then prune them.

        Flows under legal hold are never pruned. An earlier run cut short is finished first.
        """
        with open_store(ctx) as store, errors(), phase_progress(as_json) as progress:
            report = run_retention(
                store,
                policy,
                _archive_dir(archive_dir),
                max_flows=max_flows,
                dry_run=dry_run,
                progress=progress,
                pruners=_flow_pruners(),
            )
        if as_json:
            echo_json(report)
            return
        if dry_run:
            echo(f"would prune {counted(len(report.eligible), 'flow')}: {_listed(report.eligible)}")
        else:
            echo(f"pruned {counted(len(report.pruned), 'flow')} ({counted(report.events_pruned, 'event')})")
            if report.archive_path:
                echo(f"archive {printable(report.archive_id)}: {printable(report.archive_path)}")
        for label, items in (
            ("kept under legal hold", report.held),
            ("archived but not pruned (changed or held since)", report.skipped),
            ("finished earlier archives", report.repaired),
            ("archives that no longer verify (marked failed, nothing pruned)", report.failed),
            ("removed half-written archives of runs that died", report.removed_partials),
        ):
            if items:
                echo(f"{label}: {_listed(items)}")

    @main.command()
    @click.argument("flow_id")
    @click.option("--reason", required=True, help="Why the flow must be kept.")
    @click.option("--by", "by", required=True, help="Who placed the hold (at most 200 characters).")
    @click.option("--json", "as_json", is_flag=True, help="The hold as JSON.")
    @click.pass_context
    def hold(ctx: click.Context, flow_id: str, reason: str, by: str, as_json: bool) -> None:
        """Put FLOW_ID under legal hold: retention never prunes it until `release`.

        The hold is recorded in the flow $system-retention.
        """
        with open_store(ctx) as store, errors():
            placed = hold_flow(store, flow_id, reason=reason, by=by)
        if as_json:
            echo_json(placed)
        else:
            held = f"since {when(placed.held_at)} by {printable(placed.held_by)}: {printable(placed.reason)}"
            echo(f"{printable(flow_id)} is held {held}")

    @main.command()
    @click.argument("flow_id")
    @click.option("--by", "by", required=True, help="Who lifts the hold.")
    @click.option("--reason", default=None, help="Why the hold is lifted.")
    @click.option("--json", "as_json", is_flag=True, help="The result as JSON.")
    @click.pass_context
    def release(ctx: click.Context, flow_id: str, by: str, reason: str | None, as_json: bool) -> None:
        """Lift the legal hold on FLOW_ID (recorded in the flow $system-retention)."""
        with open_store(ctx) as store, errors():
            released = release_flow(store, flow_id, by=by, reason=reason)
        if as_json:
            echo_json({"flow_id": flow_id, "released": released})
        else:
            shown = printable(flow_id)
            echo(f"released the hold on {shown}" if released else f"{shown} was not held")

    @main.command()
    @click.option("--json", "as_json", is_flag=True, help="The holds as JSON.")
    @click.pass_context
    def holds(ctx: click.Context, as_json: bool) -> None:
        """List the flows under legal hold."""
        with open_store(ctx) as store, errors():
            found = list_holds(store)
        if as_json:
            echo_json(found)
            return
        if not found:
            echo("no holds: no flow is under legal hold")
            return
        rows = [(h.flow_id, when(h.held_at), h.held_by, printable(h.reason)) for h in found]
        for line in table(["FLOW", "HELD AT", "BY", "REASON"], rows):
            echo(line)

    @main.group()
    def archive() -> None:
        """Retention archives: list them, restore pruned flows from them."""

    @archive.command("list")
    @click.option("--json", "as_json", is_flag=True, help="The archives as JSON.")
    @click.pass_context
    def archive_list(ctx: click.Context, as_json: bool) -> None:
        """Every archive: its status, how many of its flows are pruned now, and its file."""
        with open_store(ctx) as store, errors():
            found = list_archives(store)
        if as_json:
            echo_json(found)
            return
        rows = [
            (
                a.archive_id,
                Styled(a.status, fg=colour_of(a.status)),
                f"{a.flows_pruned}/{a.flows}",
                f"{a.events:,}",
                when(a.created_at),
                printable(a.path),
            )
            for a in found
        ]
        for line in table(["ARCHIVE", "STATUS", "PRUNED", "EVENTS", "CREATED", "FILE"], rows, max_width=80):
            echo(line)

    @archive.command("restore")
    @click.argument("archive_id")
    @click.argument("flow_ids", nargs=-1)
    @click.option(
        "--archive-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Look for the archive file here, by name (default: the path recorded when it was written).",
    )
    @click.option("--json", "as_json", is_flag=True, help="The report as JSON.")
    @click.pass_context
    def archive_restore(
        ctx: click.Context,
        archive_id: str,
        flow_ids: tuple[str, ...],
        archive_dir: Path | None,
        as_json: bool,
    ) -> None:
        """Put pruned flows back from ARCHIVE_ID: the FLOW_IDS given, or all still pruned.

        --archive-dir finds the file there by name, if it was moved.
        """
        with open_store(ctx) as store, errors(), phase_progress(as_json) as progress:
            report = restore(store, archive_id, flow_ids or None, archive_dir=archive_dir, progress=progress)
        if as_json:
            echo_json(report)
        else:
            echo(
                f"restored {counted(len(report.flows), 'flow')} ({counted(report.events, 'event')}) "
                f"from {printable(archive_id)}"
            )


def _policy(ctx: click.Context, param: click.Parameter, specs: tuple[str, ...]) -> RetentionPolicy:
    """``--policy`` as a ``RetentionPolicy``: a malformed, out-of-range or repeated one is a usage error."""
    try:
        return RetentionPolicy.parse(specs)
    except InvalidInput as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc


def _listed(items: Sequence[object]) -> str:
    """Flow ids, archive ids or paths, comma-separated (``-`` for none)."""
    return ", ".join(printable(item) for item in items) or "-"


def _flow_pruners() -> list[Any]:
    """The flow read models' pruner (the CLI is the composition root: it may import projections)."""
    from projections.pruning import prune_flow_read_models

    return [prune_flow_read_models]
