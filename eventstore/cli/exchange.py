"""Command-line commands for moving history between stores: export, import, abandon-import,
verify-export.

Each is one library call (``eventstore.exporting``, ``eventstore.importing``, ``eventstore.exportfile``)
plus formatting; progress goes to standard error, ``--json`` gives the
result as one JSON document on standard output.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa

from ..errors import ExportInvalid, ImportConflict, InvalidInput
from ..exportfile import Progress, verify_export
from ..exporting import export_events
from ..importing import import_events
from ..manifest import Manifest, manifest_path
from ..schema import projection_checkpoints
from ..store import EventStore
from ..unfinished_import import abandon_import
from ..wording import counted
from .output import echo, echo_json, parse_time, printable, problem_dict
from .params import FilePath


@contextmanager
def phase_progress(quiet: bool) -> Iterator[Callable[[Progress], None]]:
    """Report ``Progress`` on stderr: a line per phase, updated in place on a terminal."""
    stream = sys.stderr
    live = stream.isatty()
    current: list[Progress] = []

    def line(item: Progress) -> str:
        total = f"/{item.total:,}" if item.total is not None else ""
        return f"{item.phase}: {item.done:,}{total}"

    def end() -> None:
        if current:
            click.echo(("\r" if live else "") + line(current[0]), err=True)
            current.clear()

    def update(item: Progress) -> None:
        if quiet:
            return
        if current and current[0].phase != item.phase:
            end()
        current[:] = [item]
        if live:
            click.echo("\r" + line(item), err=True, nl=False)

    try:
        yield update
    finally:
        end()


def _not_folded(store: Any) -> list[str]:
    """The inline projections of this store the command line does not know, so did not update."""
    c = projection_checkpoints.c
    with store.reading() as conn:
        inline = conn.execute(sa.select(c.name).where(c.kind == "inline").order_by(c.name)).scalars()
        return [name for name in inline if name not in {p.name for p in store.projections}]


def _makes_a_store(url: str, options: dict[str, Any]) -> bool:
    """Whether opening ``url`` creates the store: a SQLite file (which a failed import would leave
    behind, empty), or the tables in an empty PostgreSQL database or schema."""
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        return False  # opening it says what is wrong
    database = parsed.database
    if parsed.get_backend_name() == "postgresql":
        with EventStore.open(url, **options, create=False, check_schema=False) as bare:
            return bare.schema_revision() is None
    if parsed.get_backend_name() != "sqlite" or database in (None, "", ":memory:") or "uri" in parsed.query:
        return False
    return not os.path.exists(database)  # not Path.exists: a name too long is refused later, cleanly


def _refuse_unstartable(manifest: Manifest | None) -> None:
    """Refuse, before a store is made for it, an export whose flows do not all start at revision 1.

    A new store has none of the revisions before them, so the import could only fail, and
    leave behind an empty store where the URL named none.
    """
    late = [segment for segment in manifest.flows if segment.first_revision != 1] if manifest else []
    if late:
        more = f" (and {counted(len(late) - 1, 'more flow')})" if len(late) > 1 else ""
        raise ImportConflict(
            late[0].flow_id,
            f"the export starts at revision {late[0].first_revision}, and there is no store here to "
            f"continue it{more}: nothing was created",
        )


def register(main: click.Group, open_store: Any, errors: Any) -> None:
    """Add the commands to the ``eventstore`` group."""

    @main.command("export")
    @click.argument("path", type=FilePath())
    @click.option("--flow", "flow_id", default=None, help="Export this flow.")
    @click.option("--session", default=None, help="Export the flows this session owns.")
    @click.option("--since", default=None, help="Events recorded at or after this time (ISO 8601, date, 7d).")
    @click.option("--until", default=None, help="Events recorded before this time.")
    @click.option("--force", is_flag=True, help="Replace PATH and its manifest if they exist.")
    @click.option("--json", "as_json", is_flag=True, help="The manifest as JSON.")
    @click.pass_context
    def export(
        ctx: click.Context,
        path: Path,
        flow_id: str | None,
        session: str | None,
        since: str | None,
        until: str | None,
        force: bool,
        as_json: bool,
    ) -> None:
        """Write events to PATH as JSON Lines (gzip if PATH ends in .gz), and PATH.manifest.json.

        Without a selection, the whole log. docs/exchange.md describes the format.
        An existing PATH is refused without --force; the store's own database always is.
        While an import is unfinished the export goes ahead, with a warning (and a note
        in its manifest) that it may lack the rest of that import.
        """
        with open_store(ctx) as store, errors(), phase_progress(as_json) as progress:
            now = store.clock()
            try:
                manifest = export_events(
                    store,
                    path,
                    flow=flow_id,
                    session=session,
                    since=None if since is None else parse_time(since, now=now),
                    until=None if until is None else parse_time(until, now=now),
                    overwrite=force,
                    progress=progress,
                )
            except InvalidInput as exc:  # said in the library's terms (overwrite=True): say it in the CLI's
                taken = [file for file in (path, manifest_path(path)) if file.exists()]
                if force or not taken or "exists already" not in str(exc):
                    raise
                raise InvalidInput(
                    f"{taken[0]} exists already: export to a new file, or replace it with --force"
                ) from exc
        for warning in manifest.warnings:
            echo(f"warning: {printable(warning)}", err=True)
        if as_json:
            echo_json(
                {
                    "path": str(path),
                    "manifest": str(manifest.path),
                    **manifest.to_dict(),
                    "warnings": list(manifest.warnings),
                }
            )
            return
        events, flows = counted(manifest.event_count, "event"), counted(len(manifest.flows), "flow")
        echo(f"exported {events} of {flows} to {path}")
        echo(f"manifest {manifest.path} (sha256 {manifest.sha256[:16]}…)")

    @main.command("import")
    @click.argument("path", type=FilePath())
    @click.option("--json", "as_json", is_flag=True, help="The report as JSON.")
    @click.pass_context
    def import_(ctx: click.Context, path: Path, as_json: bool) -> None:
        """Import an export into this store after verifying every chain (nothing is written otherwise).

        Events keep their ids, revisions, times and hashes and take new
        positions. Flows this store already has must be continued exactly.
        The flow read models are updated as the events go in. An import cut
        short is recorded until it is run again to its end, or given up with
        `abandon-import` (`verify` and `stats` show it); meanwhile another
        export's import is refused.
        """
        with errors():
            makes_a_store = _makes_a_store(ctx.obj["url"], ctx.obj["options"])
        if makes_a_store:  # only for a file that verifies
            with errors(), phase_progress(as_json) as progress:
                verified = verify_export(path, progress=progress)
                if not verified.ok:
                    raise ExportInvalid(str(path), verified.problems)
                _refuse_unstartable(verified.manifest)
        with open_store(ctx, may_create=True) as store, errors(), phase_progress(as_json) as progress:
            report = import_events(store, path, progress=progress)
            behind = _not_folded(store) if report.events_imported else []
        for warning in report.warnings:
            echo(f"warning: {printable(warning)}", err=True)
        if as_json:
            echo_json({**dataclasses.asdict(report), "projections_not_updated": behind})
            return
        where = (
            f" (positions {report.first_position}-{report.last_position})" if report.events_imported else ""
        )
        events, flows = counted(report.events_imported, "event"), counted(len(report.flows_imported), "flow")
        echo(f"imported {events} of {flows}{where}")
        if report.events_skipped:
            were = "was" if report.events_skipped == 1 else "were"
            echo(f"{counted(report.events_skipped, 'event')} {were} here already")
        for name in behind:
            echo(f"note: projection {name!r} was not updated: rebuild it (`eventstore rebuild`)", err=True)

    @main.command("abandon-import")
    @click.argument("sha256")
    @click.option("--by", "by", required=True, help="Who gives the import up.")
    @click.option("--reason", required=True, help="Why it cannot be finished (say, its file is lost).")
    @click.option("--json", "as_json", is_flag=True, help="The abandoned import as JSON.")
    @click.pass_context
    def abandon_import_command(ctx: click.Context, sha256: str, by: str, reason: str, as_json: bool) -> None:
        """Give up the unfinished import of the export with this SHA-256 (8 digits or more).

        Only for an import that cannot be finished: importing its file again
        finishes it. The events it wrote stay; `verify` no longer reports it,
        and the flow $system-imports records who gave it up and why.
        """
        with open_store(ctx) as store, errors():
            abandoned = abandon_import(store, sha256, by=by, reason=reason)
        if as_json:
            echo_json(dataclasses.asdict(abandoned))
            return
        echo(
            f"abandoned the import of {printable(abandoned.events_file)} "
            f"({abandoned.events_imported:,} of {abandoned.event_count:,} events are in)"
        )

    @main.command("verify-export")
    @click.argument("path", type=FilePath())
    @click.option("--json", "as_json", is_flag=True, help="The report as JSON.")
    def verify_export_command(path: Path, as_json: bool) -> None:
        """Check an export from its two files alone (exit status 2 if it does not verify)."""
        with errors(), phase_progress(as_json) as progress:
            report = verify_export(path, progress=progress)
        for warning in report.manifest.warnings if report.manifest is not None else ():
            echo(f"warning: {printable(warning)}", err=True)
        if as_json:
            echo_json(
                {
                    "ok": report.ok,
                    "events_checked": report.events_checked,
                    "flows_checked": report.flows_checked,
                    "checkpoint_checked": report.checkpoint_checked,
                    "problems": [problem_dict(problem) for problem in report.problems],
                    "warnings": list(report.manifest.warnings if report.manifest is not None else ()),
                }
            )
        else:
            for problem in report.problems:
                echo(f"BROKEN {printable(problem)}")
            verdict = "OK" if report.ok else counted(len(report.problems), "problem")
            checkpoint = ", checkpoint root matches" if report.checkpoint_checked else ""
            checked = f"{counted(report.events_checked, 'event')} in {counted(report.flows_checked, 'flow')}"
            echo(f"{verdict}: {checked}{checkpoint}")
        if not report.ok:
            sys.exit(2)
