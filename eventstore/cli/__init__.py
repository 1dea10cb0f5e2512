"""The ``eventstore`` command line: each command is one library call plus formatting.

The CLI is the composition root: it is the one place in ``eventstore`` that
imports ``projections`` (lazily, inside the commands that need read models).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import sqlalchemy as sa

from .. import migrate
from ..errors import EventStoreError, IntegrityViolation, InvalidInput, SchemaError, command_line
from ..opening import check_schema_name
from ..schema import projection_checkpoints
from ..store import DEFAULT_URL, EventStore
from ..tombstones import flow_not_found
from ..wording import counted
from . import audit, browse, demo, exchange, integrity, maintenance, retention, threads, timetravel
from .output import echo_json, live_line, printable, problem_dict, progress, table, when
from .params import load_projection

if TYPE_CHECKING:
    from projections.status import ProjectionStatus


@contextmanager
def _errors() -> Iterator[None]:
    """A library error becomes one clear line and exit status 1, never a traceback."""
    try:
        yield
    except SchemaError as exc:
        said = exc if exc.required is None else _schema_problem(exc.current, exc.required)
        click.echo(f"error: {printable(said)}", err=True)
        sys.exit(1)
    except EventStoreError as exc:
        click.echo(f"error: {printable(exc)}", err=True)
        sys.exit(1)
    except sa.exc.SQLAlchemyError as exc:  # a read-model query (FlowQueries runs its own SQL)
        click.echo(f"error: the database failed: {printable(str(exc).splitlines()[0])}", err=True)
        sys.exit(1)


def _schema_problem(current: str | None, required: str) -> str:
    """What to do about a store whose schema is not this version's, said in commands, not in API terms."""
    if current is None:
        return (
            "no event store here yet (an empty database or schema): create one with `eventstore db upgrade`"
        )
    if migrate.known_revision(current):
        return (
            f"the store's schema is at {current}, this library needs {required}: run `eventstore db upgrade`"
        )
    return (
        f"the store's schema is at {current}, newer than this library ({required}): "
        "upgrade agent-eventstore to use it"
    )


def _open(ctx: click.Context, *, may_create: bool = False, **kwargs: object) -> EventStore:
    """Open the store; it is created (or its schema upgraded) only when ``may_create``, on SQLite
    and PostgreSQL alike (the library's default creates only on SQLite).

    Otherwise a SQLite file that does not exist is refused, and so is one that
    is not a store at this schema version (an empty file, another program's
    database): SQLite's default of creating the schema would write the event
    store's tables into it, from a command that only reads.
    """
    url = ctx.obj["url"]
    options = _store_options(ctx)
    with _errors():
        _require_sqlite_file(url, may_create=may_create)
        kwargs = {"create": may_create, **kwargs}
        return EventStore.open(url, **{**options, **kwargs})


def _store_options(ctx: click.Context) -> dict[str, Any]:
    """The group's options for ``EventStore.open``: ``--schema`` with a SQLite URL is a usage error.

    SQLite has no schemas, so the option would be ignored: a store other than
    the one meant (an ``EVENTSTORE_SCHEMA`` left set, a URL that fell back to
    the default) must not be used as if it were.
    """
    options: dict[str, Any] = ctx.obj["options"]
    if "schema" in options and _backend_of(ctx.obj["url"]) == "sqlite":
        raise click.UsageError(
            f"--schema {options['schema']!r} (or EVENTSTORE_SCHEMA) is for PostgreSQL, and {ctx.obj['url']} "
            "is a SQLite store, which has no schemas: drop it, or give a postgresql:// --url",
            ctx.find_root(),
        )
    return options


def _backend_of(url: str) -> str | None:
    """``sqlite`` or ``postgresql`` (or another name); None for what is not a URL (``open`` says why)."""
    try:
        return sa.make_url(url).get_backend_name()
    except (sa.exc.ArgumentError, ValueError):
        return None


def _require_sqlite_file(url: str, *, empty: bool = False, may_create: bool = False) -> None:
    """Refuse a SQLite URL whose file does not exist: SQLite would create it, empty (a typo's store).

    Refuse too a file without the store's schema (checked read-only), but with
    ``empty`` one that holds nothing at all (`db current` reports it). Only the
    commands that make a store (`db upgrade`, `demo`, `import`) may create one
    (``may_create``), in a directory that exists. A directory is refused by
    name (SQLite says only "unable to open database file").
    """
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        return  # EventStore.open says what is wrong with it
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or database in (None, "", ":memory:") or "uri" in parsed.query:
        return
    try:
        _check_sqlite_file(database, empty=empty, may_create=may_create)
    except OSError as exc:  # a name too long for the file system, say: Path's checks raise
        raise InvalidInput(
            f"cannot use {database} as a SQLite file: {exc.strerror or exc}; check --url"
        ) from exc


def _check_sqlite_file(database: str, *, empty: bool, may_create: bool) -> None:
    path = Path(database)
    if path.is_dir():
        raise InvalidInput(f"{database} is a directory, not a SQLite file: check --url")
    if may_create:  # a missing directory to create it in: EventStore.open says so
        return
    if not path.exists():
        raise InvalidInput(f"no store at {database}: check --url, or create one with `eventstore db upgrade`")
    if path.is_file() and not _has_schema(path, empty=empty):
        raise InvalidInput(
            f"no store at {database}: the file holds no event store (empty, or another program's "
            "database); check --url, or create one with `eventstore db upgrade`"
        )


def _has_schema(path: Path, *, empty: bool = False) -> bool:
    """Whether the SQLite file at ``path`` has a migrated schema (or, with ``empty``, nothing), asked
    read-only, without touching a file that may be another program's.

    A file SQLite cannot read at all counts as having one: opening it says what is wrong.
    """
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            names = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
            return "alembic_version" in names or (empty and not names)
    except sqlite3.Error:
        return True


INTERRUPTED = 130
"""The exit status after Ctrl-C (128 + SIGINT, as shells report it)."""


class _Main(click.Group):
    """The ``eventstore`` group: every command ends the same way on a closed pipe or Ctrl-C."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:  # `eventstore history f | head`: the reader has what it wanted
            # Python flushes stdout again at exit: into /dev/null, so it does not fail a second time.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except (KeyboardInterrupt, click.Abort):
            click.echo("interrupted", err=True)
            sys.exit(INTERRUPTED)


def _schema_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--schema`` (or EVENTSTORE_SCHEMA): a name that is not plain is a usage error naming the option."""
    if value:
        try:
            check_schema_name(value)
        except InvalidInput as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc
    return value


@click.group(cls=_Main)
@click.option(
    "--url",
    envvar="EVENTSTORE_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="Store URL (sqlite:///file.db or postgresql://...); also EVENTSTORE_URL.",
)
@click.option(
    "--schema",
    envvar="EVENTSTORE_SCHEMA",
    default=None,
    callback=_schema_name,
    help="PostgreSQL schema to use (search_path); also EVENTSTORE_SCHEMA.",
)
@click.pass_context
def main(ctx: click.Context, url: str, schema: str | None) -> None:
    """agent-eventstore: an audit log for agent workflows."""
    ctx.obj = {"url": url, "options": {"schema": schema} if schema else {}}
    ctx.with_resource(_no_pool_tracebacks())


@contextmanager
def _no_pool_tracebacks() -> Iterator[None]:
    """Keep SQLAlchemy's pool from writing a traceback on the terminal of a command that logs nothing.

    A connection given back to the pool is rolled back; when the server went away after a page was
    read, that fails, and the pool logs "Exception during reset or similar" with a traceback at
    ERROR, which Python's last-resort handler writes to stderr. The pool drops the connection, and
    the command's next read fails with its own one-line error (or, after its last read, the command
    is done). A handler of its own keeps the last-resort one quiet; ``maintain``'s handler on the
    root logger still writes the record, in one line.
    """
    pool = logging.getLogger("sqlalchemy.pool")
    quiet = logging.NullHandler()
    pool.addHandler(quiet)
    try:
        yield
    finally:
        pool.removeHandler(quiet)


@main.group()
def db() -> None:
    """Schema migrations."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Create the schema or upgrade it to this version."""
    with _open(ctx, may_create=True, create=True) as store, _errors():
        click.echo(f"schema at {store.schema_revision()}")


@db.command("current")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--check",
    is_flag=True,
    help="Exit with status 2 unless the database is at this library's version (for deploy scripts).",
)
@click.pass_context
def db_current(ctx: click.Context, as_json: bool, check: bool) -> None:
    """Show the schema version of the database and of this library."""
    with _bare(ctx) as store, _errors():
        current = store.schema_revision()
    head = migrate.head_revision()
    if as_json:
        echo_json({"current": current, "head": head})
    else:
        if current == head:
            state = "up to date"
        elif current is None or migrate.known_revision(current):
            state = "needs `eventstore db upgrade`"
        else:
            state = "the database is newer than this library: upgrade agent-eventstore"
        click.echo(f"database: {current or '(empty)'}  library: {head}  ({state})")
    if check and current != head:
        sys.exit(2)


@contextmanager
def _bare(ctx: click.Context) -> Iterator[EventStore]:
    """A store opened without checking the schema (for inspecting it)."""
    options = _store_options(ctx)
    with _errors():
        _require_sqlite_file(ctx.obj["url"], empty=True)
        store = EventStore.open(ctx.obj["url"], **options, create=False, check_schema=False)
    try:
        yield store
    finally:
        store.close()


@main.command()
@click.argument("flow_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def verify(ctx: click.Context, flow_id: str | None, as_json: bool) -> None:
    """Re-compute the hash chains (of one flow, or all) and report what does not add up.

    Edited events and broken links; for the whole log also missing events and retention
    records that do not add up; and an import cut short. Exit status 2 if any is found.
    """
    with _open(ctx) as store, _errors():
        try:
            total = store.revision(flow_id) if flow_id is not None else store.last_position()
        except IntegrityViolation:
            total = 0  # the position counter's row is gone: verify reports it; the bar has no end
        if flow_id is not None and total == 0:
            raise flow_not_found(store, flow_id)
        with progress(0 if as_json else total, "verifying") as update:
            report = store.verify(flow_id, progress=update)
    if as_json:
        echo_json(
            {
                "ok": report.ok,
                "events_checked": report.events_checked,
                "flows_checked": report.flows_checked,
                "problems": [problem_dict(p) for p in report.problems],
            }
        )
    else:
        for problem in report.problems:  # an import cut short broke nothing: the log lacks its rest
            label = "UNFINISHED" if problem.kind == "import-unfinished" else "BROKEN"
            click.echo(f"{label} {printable(problem)}")
        verdict = "OK" if report.ok else counted(len(report.problems), "problem")
        checked = f"{counted(report.events_checked, 'event')} in {counted(report.flows_checked, 'flow')}"
        click.echo(f"{verdict}: {checked} checked")
    if not report.ok:
        sys.exit(2)


@main.command()
@click.argument("projection", default="flows")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def rebuild(ctx: click.Context, projection: str, as_json: bool) -> None:
    """Rebuild a projection from the log, then swap it in (readers never see a gap).

    PROJECTION is `flows` (the built-in flow, step and session read models) or
    `package.module:ClassName` for your own Projection subclass, imported from
    the current directory, PYTHONPATH or the installed packages.
    """
    from projections import FlowProjection, Progress
    from projections import rebuild as rebuild_projection

    if projection == "flows":
        target = FlowProjection()
    else:
        target = load_projection(projection, "PROJECTION", usage="`flows` or `package.module:ClassName`")

    live = not as_json and sys.stderr.isatty()  # progress only on a terminal: pipes and logs stay clean
    shown = printable(target.name)  # a name may hold a terminal's escape sequence
    line = live_line()

    def show(progress: Progress) -> None:
        if live:
            line(f"{shown}: {progress.done:,}/{progress.total:,} events, {progress.rate:,.0f} events/s")

    with _open(ctx) as store, _errors():
        done = rebuild_projection(store, target, progress=show)
    if as_json:
        echo_json({"projection": target.name, "events": done.done, "seconds": done.seconds})
    else:
        if live:
            click.echo(err=True)  # end the progress line
        click.echo(f"rebuilt {shown} from {counted(done.done, 'event')} in {done.seconds:.2f}s", err=True)


@main.group("projections", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="The projections as JSON.")
@click.pass_context
def projections_(ctx: click.Context, as_json: bool) -> None:
    """List the store's projections: version, kind, how far behind the log, rebuilds.

    A catch-up projection is behind by the events after the last position it
    applied (its next runs apply them); an inline one is folded in every
    append's transaction and is never behind. A projection whose first build
    holds a claim is listed too, with no version yet.

    REBUILD shows a rebuild's claim: running (its process holds the rebuild
    lock, so it is alive), under way by its lease (claimed without that lock:
    see when it was last renewed), died (its process no longer holds the
    lock) or expired (its lease ran out): a claim that died or expired holds
    nothing, and the next rebuild takes it over. With it, the events the
    rebuild had folded when it last renewed its claim.

    `eventstore projections retire NAME` drops one the code no longer has.
    """
    if ctx.invoked_subcommand is not None:
        return
    from projections.status import projection_statuses

    with _open(ctx) as store, _errors():
        found = projection_statuses(store)
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo("no projections: none has been built in this store")
        return
    rows = []
    for status in found:
        kind = "inline" if status.kind == "inline" else "catch-up" if status.kind else "-"
        at = "every append" if status.kind == "inline" else _number(status.position)
        behind = "-" if status.behind is None or status.kind == "inline" else counted(status.behind, "event")
        version = _number(status.version)
        rows.append((status.name, kind, version, at, behind, when(status.updated_at), _rebuild_shown(status)))
    for line in table(["PROJECTION", "KIND", "VERSION", "APPLIED TO", "BEHIND", "UPDATED", "REBUILD"], rows):
        click.echo(line)


@projections_.command("retire")
@click.argument("name")
@click.option("--by", "by", required=True, help="Who retires it (recorded in the flow $system-projections).")
@click.option("--reason", default=None, help="Why (say, it was renamed).")
@click.option("--dry-run", is_flag=True, help="Only say what would be dropped; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="What was (or would be) dropped, as JSON.")
@click.pass_context
def projections_retire(
    ctx: click.Context, name: str, by: str, reason: str | None, dry_run: bool, as_json: bool
) -> None:
    """Drop projection NAME, renamed or dropped from the code: its tables, checkpoint and claims.

    All in one transaction, recorded with --by and --reason in the flow
    $system-projections. Refused for the built-in read models, and while a
    live rebuild of it holds its claim. A runner or a store that still folds
    it is refused from then on, rather than build it again; `eventstore
    rebuild` builds it again on purpose. Try it with --dry-run first.
    """
    from projections import retire

    with _open(ctx) as store, _errors():
        done = retire(store, name, by=by, reason=reason, dry_run=dry_run)
    if as_json:
        echo_json(done)
        return
    tables = (
        f"its tables {', '.join(printable(table) for table in done.tables)}" if done.tables else "no tables"
    )
    at = "" if done.version is None else f" (version {done.version}, {done.kind})"
    types = ", ".join(printable(type_) for type_ in done.types)
    tables += f" and the enum types {types} only they used" if types else ""
    claim = "; and a rebuild's claim that had died or expired" if done.claim else ""
    verb = "would drop" if dry_run else "dropped"
    click.echo(f"{'would retire' if dry_run else 'retired'} {printable(name)}{at}: {verb} {tables}{claim}")


@projections_.command("make-catch-up")
@click.argument("name")
@click.option("--by", "by", required=True, help="Who hands it over (recorded in $system-projections).")
@click.option("--reason", default=None, help="Why (say, it was opened inline by mistake).")
@click.option("--json", "as_json", is_flag=True, help="Its checkpoint as JSON.")
@click.pass_context
def projections_make_catch_up(
    ctx: click.Context, name: str, by: str, reason: str | None, as_json: bool
) -> None:
    """Hand inline projection NAME to a runner: mark it catch-up from the log's head.

    Opening a store with a projection makes it inline for good; this undoes
    that, recorded with --by and --reason in the flow $system-projections.
    Stores still opened with it inline are refused at their next
    append: open them without it, and keep it with a CatchUpRunner (or
    `eventstore maintain --catch-up`). Events that writers opened without it
    appended while it was inline are in no fold: unless every writer had it,
    rebuild it (`eventstore rebuild MODULE:CLASS`) after this.
    """
    from projections import make_catch_up
    from projections.checkpoints import read_checkpoint

    with _open(ctx) as store, _errors():
        with store.reading() as conn:
            before = read_checkpoint(conn, name)
        checkpoint = make_catch_up(store, name, by=by, reason=reason)
    if as_json:
        echo_json(checkpoint)
    elif before is not None and before.kind == "catchup":  # make_catch_up returns it as it is
        click.echo(
            f"{printable(name)} is catch-up already, at position {checkpoint.position:,}: nothing changed"
        )
    else:
        click.echo(
            f"{printable(name)} is catch-up from position {checkpoint.position:,}: run it with a runner; "
            "rebuild it first unless every writer had it open while it was inline"
        )


def _number(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _rebuild_shown(status: ProjectionStatus) -> str:
    """The REBUILD cell: what a rebuild's claim says, and how stale it is."""
    rebuild = status.rebuild
    if rebuild is None:
        return "-"
    what = "first build" if status.version is None else "rebuild"
    folded = f"{counted(rebuild.folded, 'event')} folded"
    renewed = when(rebuild.renewed_at)
    if rebuild.state == "running":
        return f"{what} running: {folded}, renewed {renewed}"
    if rebuild.state == "leased":
        return (
            f"{what} under way by its lease (until {when(rebuild.lease_until)}): {folded}, renewed {renewed}"
        )
    why = (
        "its process no longer holds the rebuild lock"
        if rebuild.state == "died"
        else f"its lease ran out at {when(rebuild.lease_until)}"
    )
    then = "the next rebuild takes it over"
    if status.version is None:  # a first build: its projection may be gone from the code since
        retiring = command_line("projections retire --by WHO", status.name)
        then += f", or `{printable(retiring)}` drops it"
    return f"{what} {rebuild.state}: {why}; {folded}, last renewed {renewed}; {then}"


def _open_with_read_models(ctx: click.Context, *, may_create: bool = False) -> EventStore:
    return _open(ctx, may_create=may_create, projections=_read_models(ctx, may_create=may_create))


demo.register(main, lambda ctx: _open_with_read_models(ctx, may_create=True), _errors)
timetravel.register(main, _open_with_read_models, _errors)
audit.register(main, _open, _errors)
browse.register(main, _open, _errors)
integrity.register(main, _open, _errors)
threads.register(main, _open, _errors)
maintenance.register(main, _open_with_read_models, _errors)
exchange.register(main, _open_with_read_models, _errors)  # `import` opens it with may_create=True
retention.register(main, _open_with_read_models, _errors)


def _read_models(ctx: click.Context, *, may_create: bool = False) -> list[Any]:
    """The built-in read models, so what a command writes (a fork, an import, a prune) reaches them:
    the flow models always, LangGraph's once a saver has made them in this store."""
    from projections import FlowProjection
    from projections.langgraph import LangGraphProjection

    with _open(ctx, may_create=may_create) as bare, _errors(), bare.reading() as conn:
        built = set(conn.execute(sa.select(projection_checkpoints.c.name)).scalars())
    return [FlowProjection(), *([LangGraphProjection()] if LangGraphProjection.name in built else [])]


if __name__ == "__main__":
    main()
