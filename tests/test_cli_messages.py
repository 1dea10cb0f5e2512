"""What commands say in odd cases: a pruned flow, a newer schema, an empty page, a checkpoint not taken."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from eventstore import NewEvent
from eventstore.checkpoints import generate_key, save_key_pair
from eventstore.cli import main
from projections import FlowProjection, FlowService

from .conftest import Target


def schema_of(target: Target) -> list[str]:
    schema = target.options.get("schema")
    return ["--schema", schema] if schema else []


def run(target: Target, *args: str, code: int = 0) -> str:
    prefix = ["--url", target.url, *schema_of(target)]
    result = CliRunner().invoke(main, [*prefix, *args], env={"EVENTSTORE_ARCHIVE_DIR": None})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == code, result.output
    return result.output


@pytest.fixture
def finished(target: Target) -> Target:
    """Flow f, finished."""
    with target.open(projections=[FlowProjection()]) as store:
        FlowService(store).start_flow("f", controller_id="c", goal="g", owner_session_key="s")
        FlowService(store).finish("f")
    return target


def test_show_and_hold_of_a_pruned_flow_name_its_archive(finished: Target, tmp_path: Path) -> None:
    run(finished, "prune", "--policy", "finished=0", "--archive-dir", str(tmp_path))
    (archive,) = orjson.loads(run(finished, "archive", "list", "--json"))
    for args in (["show", "f"], ["hold", "f", "--reason", "r", "--by", "ann"]):
        out = run(finished, *args, code=1)
        assert archive["archive_id"] in out and "eventstore archive restore" in out


def test_release_of_an_unknown_flow_fails_like_hold(finished: Target) -> None:
    assert run(finished, "release", "nope", "--by", "ann", code=1) == "error: flow 'nope' does not exist\n"
    assert run(finished, "release", "f", "--by", "ann") == "f was not held\n"


def test_prune_max_flows_is_a_count(finished: Target) -> None:
    assert "0 is not in the range x>=1" in run(
        finished, "prune", "--policy", "finished=0", "--max-flows", "0", code=2
    )


def test_db_current_knows_a_newer_database(finished: Target) -> None:
    with finished.open() as store, store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    out = run(finished, "db", "current")
    assert "newer than this library: upgrade agent-eventstore" in out and "db upgrade" not in out


def test_db_current_check_fails_a_deploy_unless_the_schema_is_this_librarys(finished: Target) -> None:
    assert "(up to date)" in run(finished, "db", "current", "--check")
    assert run(finished, "db", "current", "--check", "--json").startswith('{"current":')
    with finished.open() as store, store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0020'")
    assert "needs `eventstore db upgrade`" in run(finished, "db", "current", "--check", code=2)
    assert "needs `eventstore db upgrade`" in run(finished, "db", "current")  # without --check: 0
    with finished.open() as store, store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    assert "newer than this library" in run(finished, "db", "current", "--check", code=2)


def test_maintain_does_not_log_alembic_chatter(finished: Target) -> None:
    out = run(finished, "maintain", "--once", "sweep-leases")
    assert "sweep-leases" in out and "alembic" not in out


class TestThreads:
    @pytest.fixture
    def saved(self, target: Target) -> Target:
        from langgraph.checkpoint.conformance.test_utils import generate_checkpoint

        from eventstore.integrations.langgraph import EventStoreSaver

        with EventStoreSaver.from_url(target.url, **target.options) as saver:
            for thread in ("a" * 24 + "\x1b" + "b" * 10, "t2"):
                config = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
                saver.put(config, generate_checkpoint(), {"source": "loop"}, {})
        return target

    def test_a_long_id_is_cut_whole_escapes_only(self, saved: Target) -> None:
        assert "a" * 24 + "…" in run(saved, "threads")

    def test_a_page_past_the_end_says_how_many_there_are(self, saved: Target) -> None:
        assert run(saved, "threads", "--offset", "100") == "no threads at --offset 100: 2 in all\n"

    def test_json_is_a_line_per_thread(self, saved: Target) -> None:
        assert len(run(saved, "threads", "--json").splitlines()) == 2

    def test_json_of_no_threads_says_so_on_stderr(self, finished: Target) -> None:
        result = CliRunner().invoke(main, ["--url", finished.url, *schema_of(finished), "threads", "--json"])
        assert (result.stdout, result.stderr) == ("", "no LangGraph threads in this store\n")


class TestCheckpointNotGrown:
    def test_a_second_key_signs_nothing_and_says_so(self, finished: Target, tmp_path: Path) -> None:
        first, second = tmp_path / "k1", tmp_path / "k2"
        save_key_pair(generate_key(), first)
        save_key_pair(generate_key(), second)
        assert orjson.loads(run(finished, "checkpoint", "--key", str(first), "--json"))["new"] is True
        out = run(finished, "checkpoint", "--key", str(second))
        assert out.startswith("the log has not grown since checkpoint 2 (signed by key ")
        assert out.endswith("): nothing new signed\n")
        assert orjson.loads(run(finished, "checkpoint", "--key", str(second), "--json"))["new"] is False


@pytest.mark.parametrize("option", ["--actor", "--session", "--correlation"])
def test_audit_text_no_backend_can_compare_is_a_clean_error(finished: Target, option: str) -> None:
    out = run(finished, "audit", option, "\udcff", code=1)  # what $'\xff' in a UTF-8 shell becomes
    assert out.startswith("error: ") and "must be valid UTF-8 text" in out and "Traceback" not in out


def _why_cases(ids: list[uuid.UUID]) -> dict[str, tuple[list[str | None], str]]:
    """Causation ids of events w@1, w@2, w@3 (ids[0..2]), and what --why w@3 says it stopped at."""
    a, b, c = (str(i) for i in ids)
    return {
        "a-cycle": ([None, c, b], f"  ... {c}, which is w@3 again: a cycle"),
        "itself": ([None, None, c], f"  ... {c}, which is w@3 again: a cycle"),
        "the-limit": ([None, a, b], f"  ... {a}, not followed: --why follows 1 causes at most"),
        "an-unknown-id": ([None, None, str(uuid.UUID(int=7))], f"  ... {uuid.UUID(int=7)}, which is not"),
        "another-spelling": ([None, None, b.upper()], f"  ... {b.upper()}, not followed: a causation id"),
        "not-an-id": ([None, None, "message-7"], "  ... message-7, which is not an event id"),
    }


@pytest.mark.parametrize("case", list(_why_cases([uuid.uuid4()] * 3)))
def test_why_says_where_the_walk_back_stopped_and_why(
    target: Target, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [uuid.uuid4() for _ in range(3)]
    causations, said = _why_cases(ids)[case]
    with target.open() as store:
        for event_id, causation in zip(ids, causations, strict=True):
            metadata = {} if causation is None else {"causation_id": causation}
            store.append("w", [NewEvent("Decided", {}, event_id=event_id)], metadata=metadata)
    if case == "the-limit":
        monkeypatch.setattr("eventstore.cli.audit._CAUSES", 1)  # the most causes --why follows, made small
    lines = run(target, "audit", "--why", "w@3").splitlines()
    assert lines[2] == "what led to it, nearest first:"
    assert any(line.startswith(said) for line in lines), lines


@pytest.mark.parametrize("name", ["a-b", "audit log", "s;drop"])
def test_a_bad_schema_name_is_a_usage_error_naming_the_option(pg_target: Target, name: str) -> None:
    result = CliRunner().invoke(main, ["--url", pg_target.url, "--schema", name, "flows"])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '--schema': not a plain schema name: {name!r}" in result.output
