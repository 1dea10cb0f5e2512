"""`demo` and `import` make a store in an empty PostgreSQL schema, as they do a SQLite file."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from eventstore import EventStore
from eventstore.cli import main
from projections import FlowProjection, FlowService

from .conftest import Target
from .test_cli_exits import tail_export


def invoke(target: Target, *args: str) -> tuple[int, str]:
    prefix = ["--url", target.url, "--schema", target.options["schema"]]
    result = CliRunner().invoke(main, [*prefix, *args], env={"EVENTSTORE_ARCHIVE_DIR": None})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def schema_revision(target: Target) -> str | None:
    with EventStore.open(target.url, schema=target.options["schema"], check_schema=False) as bare:
        return bare.schema_revision()


def test_demo_creates_the_store_in_an_empty_schema(pg_target: Target) -> None:
    code, out = invoke(pg_target, "demo", "--flow", "d")
    assert code == 0, out
    code, out = invoke(pg_target, "flows")
    assert code == 0 and "d-retry" in out


def test_import_creates_the_store_in_an_empty_schema_only_from_a_file_that_verifies(
    pg_target: Target, tmp_path: Path
) -> None:
    source = Target(f"sqlite:///{tmp_path / 'source.db'}")
    with source.open(projections=[FlowProjection()]) as store:
        FlowService(store).start_flow("f", controller_id="c", goal="g", owner_session_key="s")
    export = tmp_path / "f.jsonl"
    CliRunner().invoke(main, ["--url", source.url, "export", str(export)], catch_exceptions=False)
    sound = export.read_bytes()
    export.write_bytes(sound.replace(b'"revision":1', b'"revision":2'))
    code, out = invoke(pg_target, "import", str(export))
    assert code == 1 and "does not verify" in out
    assert schema_revision(pg_target) is None  # nothing made from a file that does not verify
    export.write_bytes(sound)
    code, out = invoke(pg_target, "import", str(export))
    assert code == 0 and "imported 1 event of 1 flow" in out, out
    assert invoke(pg_target, "show", "f")[0] == 0


def test_import_makes_no_store_in_an_empty_schema_from_an_export_it_cannot_start(
    pg_target: Target, tmp_path: Path
) -> None:
    code, out = invoke(pg_target, "import", str(tail_export(tmp_path)))
    assert code == 1 and "cannot import flow 'f': the export starts at revision 2" in out, out
    assert schema_revision(pg_target) is None


def test_other_commands_still_refuse_an_empty_schema(pg_target: Target) -> None:
    code, out = invoke(pg_target, "flows")
    assert code == 1 and "no event store here yet" in out
    assert schema_revision(pg_target) is None
