"""Signed checkpoints and proofs against a real store, on every backend."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from eventstore import EventStore, IntegrityViolation, InvalidInput, InvalidProof, NewEvent
from eventstore import checkpoints as cp
from eventstore.cli import main
from eventstore.integrity import Problem, chain_hash, format_time
from eventstore.merkle import root_hash
from eventstore.retention import restore, run_retention
from eventstore.serialization import canonical

from .conftest import Target
from .test_docs import ROOT, extract_blocks
from .test_tamper import drop_guards, sql

KEY = cp.generate_key()
START = {"controller_id": "c", "goal": "g", "owner_session_key": "s"}


def fill(store: EventStore, flow: str, count: int) -> None:
    store.append(flow, [NewEvent("Step", {"n": n}) for n in range(count)])


def all_leaves(store: EventStore) -> list[bytes]:
    return [bytes.fromhex(event.hash) for event in store.read_all()]


def rewrite_tail(store: EventStore, flow_id: str) -> None:
    """Replace a flow's last event and recompute its hash: the chain stays valid."""
    *_, last = store.read_flow(flow_id)
    data = canonical({"n": "forged"})
    data_hash = hashlib.sha256(data).digest()
    digest = chain_hash(
        bytes.fromhex(last.prev_hash),
        flow_id,
        last.revision,
        str(last.event_id),
        last.type,
        last.schema_version,
        format_time(last.recorded_at),
        data_hash,
        hashlib.sha256(canonical(last.metadata)).digest(),
    )
    drop_guards(store)
    cast = "CAST(:data AS jsonb)" if store.dialect == "postgresql" else ":data"
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(f"UPDATE flow_events SET data = {cast}, data_hash = :dh, hash = :h WHERE position = :p"),
            {"data": data.decode(), "dh": data_hash, "h": digest, "p": last.position},
        )
    assert store.verify().ok, "the rewritten chain is valid: only a checkpoint can show the change"


class TestTaking:
    def test_a_checkpoint_signs_the_root_over_every_event(self, target: Target) -> None:
        moment = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
        with target.open(clock=lambda: moment) as store:
            fill(store, "a", 5)
            taken = cp.take_checkpoint(store, KEY)
            assert (taken.tree_size, taken.timestamp) == (5, moment)
            assert taken.root_hash == root_hash(all_leaves(store))
            assert taken.key_id == hashlib.sha256(taken.public_key).hexdigest()
            cp.verify_checkpoint_signature(taken, KEY.public_key())
            assert cp.list_checkpoints(store) == [taken] and cp.get_checkpoint(store, 5) == taken

    def test_an_unchanged_log_returns_the_latest_checkpoint(self, store: EventStore) -> None:
        fill(store, "a", 2)
        first = cp.take_checkpoint(store, KEY)
        assert cp.take_checkpoint(store, cp.generate_key()) == first
        assert len(cp.list_checkpoints(store)) == 1

    def test_an_empty_log_has_nothing_to_checkpoint(self, store: EventStore) -> None:
        with pytest.raises(InvalidInput, match="the log is empty"):
            cp.take_checkpoint(store, KEY)
        with pytest.raises(InvalidInput, match="no checkpoint has been taken yet"):
            cp.get_checkpoint(store)

    def test_the_cache_makes_large_trees_without_changing_the_root(self, store: EventStore) -> None:
        for flow in "abc":
            fill(store, flow, 230)
        first = cp.take_checkpoint(store, KEY)
        fill(store, "d", 400)
        second = cp.take_checkpoint(store, KEY)
        leaves = all_leaves(store)
        assert first.root_hash == root_hash(leaves[:690]) and second.root_hash == root_hash(leaves)
        for position in (1, 256, 257, 690, 700, 1090):
            cp.inclusion_proof(store, position, second).verify(second)
        cp.consistency_proof(store, first, second).verify(first, second)
        assert cp.verify_checkpoints(store, KEY.public_key()).ok


class TestSignatures:
    def test_a_changed_root_size_time_or_signature_is_refused(self, store: EventStore) -> None:
        fill(store, "a", 3)
        taken = cp.take_checkpoint(store, KEY)
        for change in [
            {"root_hash": bytes(32)},
            {"tree_size": 4},
            {"timestamp_ms": taken.timestamp_ms + 1},
            {"signature": bytes(64)},
        ]:
            with pytest.raises(InvalidProof, match="signature does not verify"):
                cp.verify_checkpoint_signature(dataclasses.replace(taken, **change))

    def test_another_key_is_refused(self, store: EventStore) -> None:
        fill(store, "a", 1)
        taken = cp.take_checkpoint(store, KEY)
        other = cp.generate_key()
        with pytest.raises(InvalidProof, match="not by the trusted key"):
            cp.verify_checkpoint_signature(taken, other.public_key())
        forged = dataclasses.replace(taken, public_key=cp.raw_public_key(other.public_key()))
        with pytest.raises(InvalidProof, match="key_id is not the hash of its public key"):
            cp.verify_checkpoint_signature(forged)

    def test_verify_checkpoints_names_a_checkpoint_by_another_key(self, store: EventStore) -> None:
        fill(store, "a", 2)
        cp.take_checkpoint(store, KEY)
        (problem,) = cp.verify_checkpoints(store, cp.generate_key().public_key()).problems
        assert (problem.kind, problem.position) == ("bad-signature", 2)
        assert problem.detail.startswith("checkpoint 2 is signed by key ")

    def test_exports_round_trip_and_refuse_malformed_documents(self, store: EventStore) -> None:
        fill(store, "a", 4)
        taken = cp.take_checkpoint(store, KEY)
        proof = cp.inclusion_proof(store, 3, taken)
        assert cp.Checkpoint.from_dict(orjson.loads(orjson.dumps(taken.to_dict()))) == taken
        assert cp.InclusionProof.from_dict(proof.to_dict()) == proof
        with pytest.raises(InvalidInput, match="malformed checkpoint export"):
            cp.Checkpoint.from_dict({**taken.to_dict(), "root_hash": "AB" * 32})
        with pytest.raises(InvalidInput, match="format must be"):
            cp.InclusionProof.from_dict(taken.to_dict())


class TestProofs:
    def test_every_event_is_in_every_checkpoint_that_covers_it(self, store: EventStore) -> None:
        fill(store, "a", 3)
        small = cp.take_checkpoint(store, KEY)
        fill(store, "b", 4)
        large = cp.take_checkpoint(store, KEY)
        for event in store.read_all():
            for checkpoint in (small, large):
                if event.position <= checkpoint.tree_size:
                    proof = cp.inclusion_proof(store, event.event_id, checkpoint)
                    assert (proof.leaf.hex(), proof.flow_id, proof.revision) == (
                        event.hash,
                        event.flow_id,
                        event.revision,
                    )
                    proof.verify(checkpoint)
        cp.consistency_proof(store, small, large).verify(small, large)
        with pytest.raises(InvalidProof, match="the proof is for a tree of size 7"):
            cp.inclusion_proof(store, 1, large).verify(small)
        with pytest.raises(InvalidInput, match="after checkpoint 3"):
            cp.inclusion_proof(store, 5, small)

    def test_a_position_past_the_log_is_not_told_to_wait_for_a_checkpoint(self, store: EventStore) -> None:
        fill(store, "a", 3)
        checkpoint = cp.take_checkpoint(store, KEY)
        with pytest.raises(InvalidInput, match=r"no event at position 99: the log ends at position 3$"):
            cp.inclusion_proof(store, 99, checkpoint)

    def test_a_restored_event_is_proved_where_an_older_checkpoint_has_it(
        self, target: Target, tmp_path: Path
    ) -> None:
        now = datetime(2030, 1, 1, tzinfo=UTC)
        with target.open(clock=lambda: now) as store:
            store.append("f", [NewEvent("FlowStarted", START), NewEvent("FlowFinished", {})])
            fill(store, "g", 1)
            before = cp.take_checkpoint(store, KEY)
            now += timedelta(days=40)
            restore(store, run_retention(store, {"finished": 30}, tmp_path).archive_id)
            first = next(iter(store.read_flow("f")))
            assert first.position == 4  # appended again; its leaf at position 1 stays
            proof = cp.inclusion_proof(store, first.event_id, before)
            assert (proof.leaf_index, proof.leaf.hex(), proof.revision) == (0, first.hash, 1)
            proof.verify(before)
            with pytest.raises(InvalidInput, match="after checkpoint 3; it was restored from position 1"):
                cp.inclusion_proof(store, 4, before)
            after = cp.take_checkpoint(store, KEY)
            proof = cp.inclusion_proof(store, first.event_id, after)
            assert proof.leaf_index == 3
            proof.verify(after)

    def test_a_rewritten_event_fails_its_proofs_and_is_not_signed_over(self, store: EventStore) -> None:
        fill(store, "a", 3)
        old = cp.take_checkpoint(store, KEY)
        fill(store, "b", 2)
        new = cp.take_checkpoint(store, KEY)
        rewrite_tail(store, "a")
        with pytest.raises(InvalidProof, match="leaf 2 is not in the tree of size 5"):
            cp.inclusion_proof(store, 3, new).verify(new)
        with pytest.raises(InvalidProof, match="does not lead to the root of the old tree"):
            cp.consistency_proof(store, old, new).verify(old, new)
        fill(store, "b", 1)
        with pytest.raises(IntegrityViolation, match="the log no longer extends checkpoint 5"):
            cp.take_checkpoint(store, KEY)
        problems = cp.verify_checkpoints(store).problems
        assert [(p.kind, p.position) for p in problems] == [("checkpoint-mismatch", n) for n in (3, 5)]
        assert str(problems[0]) == (
            "(position 3): checkpoint-mismatch: "
            "checkpoint 3: the log's root is not the signed root (an event it covers was changed)"
        )

    def test_an_event_edited_under_its_hash_is_not_proven(self, target: Target) -> None:
        """The leaf is the stored hash; the event's content must still hash to it, or nothing is proven."""
        with target.open() as store:
            fill(store, "a", 3)
            taken = cp.take_checkpoint(store, KEY)
            drop_guards(store)
            cast = "CAST(:data AS jsonb)" if store.dialect == "postgresql" else ":data"
            with store.engine.begin() as conn:
                edit = f"UPDATE flow_events SET data = {cast} WHERE position = 2"
                conn.execute(sa.text(edit), {"data": '{"n": "forged"}'})
            with pytest.raises(
                IntegrityViolation, match=r"position 2 does not match its own hash \(data"
            ) as caught:
                cp.inclusion_proof(store, 2, taken)
            assert (caught.value.flow_id, caught.value.revision, caught.value.position) == ("a", 2, 2)
            assert [problem.kind for problem in caught.value.problems] == ["data-edited"]
            cp.inclusion_proof(store, 3, taken).verify(taken)  # the others still prove
        assert "FAILED: the event at position 2 does not match" in run(target, "prove", "2", code=2)

    def test_pruned_events_stay_provable_and_deleted_ones_do_not(self, store: EventStore) -> None:
        fill(store, "a", 3)
        fill(store, "b", 2)
        taken = cp.take_checkpoint(store, KEY)
        drop_guards(store)
        flow_a = "FROM flow_events WHERE flow_id = 'a'"
        sql(store, f"INSERT INTO pruned_events SELECT position, flow_id, revision, hash {flow_a}")
        sql(store, f"DELETE {flow_a}")
        cp.inclusion_proof(store, 2, taken).verify(taken)
        fill(store, "b", 1)
        assert cp.take_checkpoint(store, KEY).tree_size == 6
        assert cp.verify_checkpoints(store, KEY.public_key()).ok
        sql(store, "DELETE FROM flow_events WHERE position = 4")
        with pytest.raises(IntegrityViolation, match="position 4 is missing from the log") as caught:
            cp.inclusion_proof(store, 5, taken)
        assert (caught.value.position, caught.value.flow_id) == (4, None)
        (problem,) = cp.verify_checkpoints(store).problems
        assert (problem.kind, problem.position) == ("unreadable-log", 0)
        assert "position 4 is missing" in problem.detail

    def test_a_tampered_cache_is_reported_and_a_missing_one_is_rebuilt(self, store: EventStore) -> None:
        fill(store, "a", 600)
        taken = cp.take_checkpoint(store, KEY)
        with store.engine.begin() as conn:
            conn.execute(sa.text("UPDATE merkle_subtrees SET hash = :h WHERE start = 256"), {"h": bytes(32)})
        detail = "the cached subtree of leaves 256..511 does not match the log"
        assert cp.verify_checkpoints(store).problems == [Problem("", 0, 0, "cache-mismatch", detail)]
        with pytest.raises(InvalidProof):
            cp.inclusion_proof(store, 1, taken).verify(taken)
        sql(store, "DELETE FROM merkle_subtrees")
        cp.inclusion_proof(store, 1, taken).verify(taken)


@pytest.fixture(scope="module")
def offline() -> dict[str, Any]:
    """The offline verifier as docs/integrity.md defines it."""
    (block,) = [b for b in extract_blocks(ROOT / "docs" / "integrity.md") if "def check_inclusion(" in b.code]
    namespace: dict[str, Any] = {"__name__": "offline_verifier"}
    exec(compile(block.code, block.name, "exec"), namespace)
    return namespace


def test_the_documented_offline_verifier_accepts_exports_and_refuses_edits(
    store: EventStore, offline: dict[str, Any]
) -> None:
    fill(store, "a", 7)
    old = cp.take_checkpoint(store, KEY)
    fill(store, "b", 300)
    new = cp.take_checkpoint(store, KEY)
    trusted = cp.key_id(KEY.public_key())
    old_root = offline["check_checkpoint"](old.to_dict(), trusted)
    new_root = offline["check_checkpoint"](new.to_dict(), trusted)
    for position in (1, 7, 300, 307):
        offline["check_inclusion"](cp.inclusion_proof(store, position, new).to_dict(), 307, new_root)
    extension = cp.consistency_proof(store, old, new).to_dict()
    offline["check_consistency"](extension, old_root, new_root)
    edited = {**extension, "path": [bytes(32).hex(), *extension["path"][1:]]}
    with pytest.raises(ValueError, match="does not extend"):
        offline["check_consistency"](edited, old_root, new_root)
    with pytest.raises(ValueError, match="signature does not verify"):
        offline["check_checkpoint"]({**new.to_dict(), "timestamp_ms": 1}, trusted)


class TestKeyTypes:
    @pytest.mark.parametrize("wrong", [KEY, "k.pub", b"x" * 32])
    def test_a_trusted_key_that_is_no_public_key_is_refused(self, store: EventStore, wrong: Any) -> None:
        expected = r"a trusted key must be an Ed25519PublicKey \(load_public_key\(path\) reads one\), not "
        with pytest.raises(InvalidInput, match=expected):
            cp.verify_checkpoints(store, wrong)  # with no checkpoint to check yet, too
        fill(store, "a", 1)
        taken = cp.take_checkpoint(store, KEY)
        with pytest.raises(InvalidInput, match=expected):
            cp.verify_checkpoints(store, wrong)
        with pytest.raises(InvalidInput, match=expected):
            cp.verify_checkpoint_signature(taken, wrong)

    @pytest.mark.parametrize("wrong", [5, None, KEY.public_key(), b"k.pem"])
    def test_a_signing_key_that_is_no_private_key_or_path_is_refused(
        self, store: EventStore, wrong: Any
    ) -> None:
        fill(store, "a", 1)
        match = r"a signing key must be an Ed25519PrivateKey or the path of its PEM file, not "
        with pytest.raises(InvalidInput, match=match):
            cp.take_checkpoint(store, wrong)
        assert cp.list_checkpoints(store) == []


class TestKeys:
    def test_a_key_pair_round_trips_and_is_never_overwritten(self, tmp_path: Path) -> None:
        private, public = cp.save_key_pair(KEY, tmp_path / "k.pem")
        assert private.stat().st_mode & 0o777 == 0o600 and public.name == "k.pem.pub"
        assert cp.key_id(cp.load_signing_key(private).public_key()) == cp.key_id(cp.load_public_key(public))
        with pytest.raises(InvalidInput, match="exists already"):
            cp.save_key_pair(cp.generate_key(), private)
        with pytest.raises(InvalidInput, match="is not an unencrypted PEM private key"):
            cp.load_signing_key(public)
        with pytest.raises(InvalidInput, match="cannot read key file"):
            cp.load_public_key(tmp_path / "missing.pub")


def run(target: Target, *args: str, code: int = 0, env: dict[str, str] | None = None) -> str:
    schema = target.options.get("schema")
    prefix = ["--url", target.url, *(["--schema", schema] if schema else [])]
    result = CliRunner().invoke(main, [*prefix, *args], env=env)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result.output


def test_cli_round_trip(target: Target, tmp_path: Path) -> None:
    key = str(tmp_path / "log.pem")
    assert "key id" in run(target, "keygen", key)
    with target.open() as store:
        fill(store, "a", 3)
        assert "error: taking a checkpoint needs --key" in run(target, "checkpoint", code=1)
        assert "checkpoint size          3" in run(target, "checkpoint", "--key", key)
        fill(store, "b", 2)
        taken = orjson.loads(run(target, "checkpoint", "--json", env={"EVENTSTORE_SIGNING_KEY": key}))
        assert taken["tree_size"] == 5
        assert len(orjson.loads(run(target, "checkpoint", "--list", "--json"))) == 2
        run(target, "checkpoint", "--export", str(tmp_path / "cp.json"), "--size", "3")
        assert orjson.loads((tmp_path / "cp.json").read_bytes())["tree_size"] == 3
        (event,) = [e for e in store.read_all() if e.position == 2]
        out = run(target, "prove", str(event.event_id), "--public-key", key + ".pub")
        assert "event a@2 at position 2" in out and "verified: the event is in the signed log of 5" in out
        proved = orjson.loads(run(target, "prove", "4", "--checkpoint", "5", "--json"))
        assert proved["verified"] and proved["proof"]["leaf_index"] == 3
        assert "extends the log of 3" in run(target, "prove", "--consistency", "3", "5")
        assert "OK: 2 checkpoints over 5 events" in run(target, "checkpoint", "--verify")
        missing = run(target, "prove", "1", "--checkpoint", "4", code=1)
        assert "error: there is no checkpoint of tree size 4" in missing
        rewrite_tail(store, "a")
    assert "FAILED: leaf 2 is not in the tree" in run(target, "prove", "3", code=2)
    assert "BROKEN checkpoint 3" in run(target, "checkpoint", "--verify", code=2)


def test_checkpoint_verify_json_prints_problem_objects_as_verify_does(target: Target) -> None:
    with target.open() as store:
        fill(store, "a", 3)
        cp.take_checkpoint(store, KEY)
        rewrite_tail(store, "a")
    found = orjson.loads(run(target, "checkpoint", "--verify", "--json", code=2))
    assert (found["ok"], found["checkpoints_checked"], found["events_checked"]) == (False, 1, 3)
    assert found["problems"] == [
        {
            "flow_id": "",
            "position": 3,
            "revision": 0,
            "kind": "checkpoint-mismatch",
            "detail": "checkpoint 3: the log's root is not the signed root (an event it covers was changed)",
        }
    ]
