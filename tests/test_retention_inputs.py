"""Bad retention input is refused alike on every backend, before anything is written, never a traceback."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time

from eventstore import EventStore, InvalidInput
from eventstore.retention import (
    SYSTEM_RETENTION_FLOW,
    RetentionPolicy,
    hold,
    list_archives,
    list_holds,
    release,
    restore,
    run_retention,
)

from .conftest import Target
from .test_retention import DAY, T0, flows, retain, run, table_count

__all__ = ["flows"]  # the fixture, used by name


class TestPolicyBounds:
    @pytest.mark.parametrize("days", [float("nan"), float("inf"), -1, 36_526, 1_000_000, 10**30])
    def test_days_outside_0_to_a_century_are_refused(self, days: float) -> None:
        with pytest.raises(InvalidInput, match=r"from 0 to 36,525 \(a century\)"):
            RetentionPolicy.from_days({"finished": days})

    def test_a_century_is_the_longest(self) -> None:
        assert RetentionPolicy.from_days({"failed": 36_525}).failed == timedelta(days=36_525)
        with pytest.raises(InvalidInput, match="from 0 to 36,525 days"):
            RetentionPolicy(cancelled=timedelta.max)

    def test_a_status_given_twice_is_refused(self) -> None:
        with pytest.raises(InvalidInput, match="'finished=1': the days to keep finished flows are given"):
            RetentionPolicy.parse(["finished=30", "failed=2", "finished=1"])

    @pytest.mark.parametrize(
        ("spec", "said"),
        [
            ("finished=nan", "not nan"),
            ("failed=999999", "not 999999\n"),
            ("running=3", "not a terminal status"),
        ],
    )
    def test_prune_takes_a_bad_policy_as_a_usage_error(
        self, flows: EventStore, target: Target, spec: str, said: str
    ) -> None:
        out = run(target, "prune", "--policy", spec, "--dry-run", code=2)
        assert "Invalid value for '--policy'" in out and said in out and "Traceback" not in out

    @pytest.mark.parametrize("typed", ["-1", "999999", "1e6", "-0.5"])
    def test_prune_shows_the_days_as_typed(self, flows: EventStore, target: Target, typed: str) -> None:
        out = run(target, "prune", "--policy", f"finished={typed}", "--dry-run", code=2)
        assert out.endswith(
            f"the days to keep finished flows must be from 0 to 36,525 (a century), not {typed}\n"
        )

    def test_prune_refuses_a_repeated_policy(self, flows: EventStore, target: Target) -> None:
        out = run(target, "prune", "--policy", "finished=30", "--policy", "finished=1", "--dry-run", code=2)
        assert "given twice" in out


class TestHoldTexts:
    @pytest.mark.parametrize(
        ("reason", "by", "said"),
        [
            ("a\x00b", "ann", "the 'reason' of a legal hold must be valid UTF-8 text without NUL"),
            ("audit", "x\x00y", "the 'by' of a legal hold must be valid UTF-8 text without NUL"),
            ("bad\udcff", "ann", "the 'reason' of a legal hold must be valid UTF-8"),
            ("audit", "\udcfe", "the 'by' of a legal hold must be valid UTF-8"),
            ("audit", "x" * 201, "the 'by' of a legal hold may have at most 200 characters, not 201"),
        ],
    )
    def test_a_bad_reason_or_by_is_refused_before_anything_is_written(
        self, flows: EventStore, reason: str, by: str, said: str
    ) -> None:
        last = flows.last_position()
        with pytest.raises(InvalidInput, match=said):
            hold(flows, "f1", reason=reason, by=by)
        assert list_holds(flows) == [] and flows.last_position() == last
        assert table_count(flows, "legal_holds") == 0 and flows.revision(SYSTEM_RETENTION_FLOW) == 0

    def test_by_of_200_characters_is_stored_on_every_backend(self, flows: EventStore) -> None:
        assert hold(flows, "f1", reason="audit", by="x" * 200).held_by == "x" * 200
        with pytest.raises(InvalidInput, match="the 'reason' of releasing a legal hold must be valid UTF-8"):
            release(flows, "f1", by="ann", reason="\udcff")
        assert release(flows, "f1", by="y" * 200)

    def test_the_commands_say_so_in_one_line(self, flows: EventStore, target: Target) -> None:
        for args in (
            ["hold", "f1", "--reason", "bad\udcff", "--by", "x"],
            ["hold", "f1", "--reason", "ok", "--by", "\udcfe"],
            ["hold", "f1", "--reason", "ok", "--by", "x" * 201],
            ["archive", "restore", "\udcfe"],
        ):
            out = run(target, *args, code=1)
            assert out.startswith("error: ") and out.count("\n") == 1, out
        assert "an archive id must be valid UTF-8 text" in out


class TestArgumentKinds:
    POLICY = RetentionPolicy(finished=timedelta(days=30))

    @pytest.mark.parametrize("policy", ["finished=30", None, 30, ["finished=30"]])
    def test_a_policy_that_is_no_policy_or_mapping_is_refused(self, flows: EventStore, policy: Any) -> None:
        with freeze_time(T0 + 40 * DAY), pytest.raises(InvalidInput, match="a retention policy must be"):
            run_retention(flows, policy, "archives", dry_run=True)

    @pytest.mark.parametrize("directory", ["archives\x00x", 5, None, b"archives"])
    def test_an_archive_dir_that_is_no_path_is_refused_before_anything_is_written(
        self, flows: EventStore, directory: Any
    ) -> None:
        last = flows.last_position()
        with freeze_time(T0 + 40 * DAY), pytest.raises(InvalidInput, match="archive_dir must be"):
            run_retention(flows, self.POLICY, directory)
        assert (flows.last_position(), list_archives(flows)) == (last, [])

    @pytest.mark.parametrize(
        ("options", "said"),
        [
            ({"progress": 5}, "progress must be callable or None, not 5"),
            ({"pruners": 5}, "pruners must be a list of functions"),
            ({"pruners": [print, "prune"]}, "pruners must be a list of functions"),
            ({"dry_run": "no"}, "dry_run must be True or False, not 'no'"),
        ],
    )
    def test_a_bad_callback_or_flag_is_refused_before_an_archive_is_written(
        self, flows: EventStore, tmp_path: Path, options: dict[str, Any], said: str
    ) -> None:
        with freeze_time(T0 + 40 * DAY), pytest.raises(InvalidInput, match=said):
            run_retention(flows, self.POLICY, tmp_path / "archives", **options)
        assert (list_archives(flows), (tmp_path / "archives").exists()) == ([], False)

    def test_restore_of_no_flow_ids_is_refused_as_such(self, flows: EventStore, tmp_path: Path) -> None:
        archive_id = retain(flows, tmp_path, T0 + 40 * DAY).archive_id  # prunes f1 and f2
        with pytest.raises(InvalidInput, match=r"flow_ids is empty: name the flows to restore, or give None"):
            restore(flows, archive_id, [])  # not "no flow of the archive is pruned": both are

    def test_restore_takes_a_list_of_flow_ids_not_a_string(self, flows: EventStore, tmp_path: Path) -> None:
        archive_id = retain(flows, tmp_path, T0 + 40 * DAY).archive_id  # prunes f1 and f2
        with pytest.raises(InvalidInput, match="flow_ids is a list of flow ids, not the string 'f1'"):
            restore(flows, archive_id, "f1")  # its characters named no pruned flow: a wrong error
        with pytest.raises(InvalidInput, match="flow_ids must be a list of flow ids, not 1"):
            restore(flows, archive_id, 1)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="archive_dir must be"):
            restore(flows, archive_id, archive_dir="a\x00")
        assert flows.revision("f1") == 0
