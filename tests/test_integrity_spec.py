"""docs/integrity.md is a specification: these tests hold the code to it.

The standalone verifier is taken from the document itself, not copied, so
the code a third party would copy is the code that is tested.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore import EventStore, InvalidEvent, NewEvent, RecordedEvent
from eventstore.integrity import GENESIS, chain_hash, format_time
from eventstore.serialization import canonical

from .conftest import Target
from .test_docs import ROOT, extract_blocks

Verifier = Callable[[list[dict[str, Any]]], list[str]]
FIELDS = [name for name in RecordedEvent._fields if name != "position"]


@pytest.fixture(scope="module")
def verify_rows() -> Verifier:
    """``verify_rows`` as docs/integrity.md defines it."""
    blocks = [b for b in extract_blocks(ROOT / "docs" / "integrity.md") if "def verify_rows(" in b.code]
    assert len(blocks) == 1, "docs/integrity.md must define verify_rows in exactly one block"
    assert blocks[0].marker is None, "the verifier block must stand alone"
    namespace: dict[str, Any] = {"__name__": "integrity_doc"}
    exec(compile(blocks[0].code, blocks[0].name, "exec"), namespace)
    verifier: Verifier = namespace["verify_rows"]
    return verifier


TRICKY = {
    "floats": [0.1, 1e-7, 1.5e-7, 9.99e-6, 1e-5, 1e15, 1e16, -1e16, 1.8e19, -0.0, 5e-324],
    "more floats": [0.30000000000000004, 2.2250738585072014e-308, 123456789.12345679],
    "ints": [0, -(2**63), 2**63 - 1, 2**64 - 1],
    "text": 'é😀\u2028\t"\\/\x1f\x7f',
    "\U0001f600": 1,
    "\uffff": 2,
    "B": None,
    "nested": {"z": [True, False, {"y": []}], "a": {}},
}


def fill(store: EventStore) -> None:
    store.append("flow-b", [NewEvent("A", {"i": i}) for i in range(3)], metadata={"actor": "agent:x"})
    store.append("flow-a", [NewEvent("Tricky", TRICKY, metadata={"k": [1.5e-7]})])
    with store.transaction() as tx:
        tx.append("flow-b", [NewEvent("B", {})], expected_revision=3)
        tx.append("flow-c", [NewEvent("C", {"x": 1}, schema_version=3)], expected_revision=0)


def export(store: EventStore) -> list[dict[str, Any]]:
    return [{name: getattr(event, name) for name in FIELDS} for event in store.read_all()]


class TestStandaloneVerifier:
    def test_accepts_a_real_store(self, store: EventStore, verify_rows: Verifier) -> None:
        fill(store)
        rows = export(store)
        assert len(rows) == 6
        assert verify_rows(rows) == []
        assert store.verify().ok

    def test_accepts_a_json_export(self, store: EventStore, verify_rows: Verifier) -> None:
        fill(store)
        rows = [
            {**r, "event_id": str(r["event_id"]), "recorded_at": format_time(r["recorded_at"])}
            for r in export(store)
        ]
        assert verify_rows(orjson.loads(orjson.dumps(rows))) == []

    def test_accepts_times_from_any_time_zone(self, target: Target, verify_rows: Verifier) -> None:
        india = timezone(timedelta(hours=5, minutes=30))
        with target.open(clock=lambda: datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=india)) as store:
            fill(store)
            rows = export(store)
        assert verify_rows(rows) == []
        assert format_time(rows[0]["recorded_at"]) == "2030-01-01T21:34:05.000006Z"

    def test_rejects_a_row_edited_in_the_database(self, store: EventStore, verify_rows: Verifier) -> None:
        fill(store)
        with store.engine.begin() as conn:
            if store.dialect == "postgresql":
                conn.exec_driver_sql("DROP TRIGGER flow_events_no_update_delete ON flow_events")
            else:
                conn.exec_driver_sql("DROP TRIGGER flow_events_no_update")
            conn.exec_driver_sql(
                "UPDATE flow_events SET data = '{\"i\":99}' WHERE flow_id = 'flow-b' AND revision = 2"
            )
        assert verify_rows(export(store)) == ["flow-b@2: hash does not match the event's content"]
        assert [(p.revision, p.kind) for p in store.verify().problems] == [(2, "data-edited")]

    @pytest.mark.parametrize(
        ("edit", "expected"),
        [
            (lambda rows: rows[1].update(data={"i": 99}), ["flow-b@2: hash does not match"]),
            (lambda rows: rows[1].update(metadata={}), ["flow-b@2: hash does not match"]),
            (lambda rows: rows[1].update(type="Z"), ["flow-b@2: hash does not match"]),
            (lambda rows: rows[1].update(schema_version=2), ["flow-b@2: hash does not match"]),
            (
                lambda rows: rows[1].update(recorded_at=rows[1]["recorded_at"] + timedelta(microseconds=1)),
                ["flow-b@2: hash does not match"],
            ),
            (lambda rows: rows.pop(1), ["flow-b@3: revisions", "flow-b@3: prev_hash"]),
            (lambda rows: rows.pop(0), ["flow-b@2: revisions", "flow-b@2: prev_hash"]),
            (
                lambda rows: (rows[0].update(revision=2), rows[1].update(revision=1)),
                [
                    "flow-b@1: prev_hash",
                    "flow-b@1: hash",
                    "flow-b@2: prev_hash",
                    "flow-b@2: hash",
                    "flow-b@3: prev_hash",
                ],
            ),
            (lambda rows: rows[1].update(prev_hash="0" * 64), ["flow-b@2: prev_hash", "flow-b@2: hash"]),
        ],
        ids=["data", "metadata", "type", "version", "time", "deleted", "deleted-first", "reordered", "link"],
    )
    def test_rejects_edited_rows(
        self,
        store: EventStore,
        verify_rows: Verifier,
        edit: Callable[[list[dict[str, Any]]], Any],
        expected: list[str],
    ) -> None:
        fill(store)
        rows = export(store)
        edit(rows)
        problems = verify_rows(rows)
        assert len(problems) == len(expected)
        assert all(p.startswith(e) for p, e in zip(problems, expected, strict=True)), problems


STORABLE_TEXT = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
JSON_VALUES = st.recursive(  # only values canonical() must store: test_refusals covers the rest
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    # an integral float is stored as the integer it is, so it must fit the integer range
    | st.floats(min_value=-(2**63), max_value=2**64, exclude_max=True)
    | st.text(STORABLE_TEXT),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(STORABLE_TEXT, max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)


class TestCanonical:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ({"b": 1, "a": 2}, b'{"a":2,"b":1}'),
            (
                {"\U0001f600": 1, "\uffff": 2, "a": 3, "B": 4, "é": 5},
                '{"B":4,"a":3,"é":5,"\uffff":2,"\U0001f600":1}'.encode(),
            ),
            ({"a": [1, {"b": None, "c": True}], "d": False}, b'{"a":[1,{"b":null,"c":true}],"d":false}'),
            ("é😀\u2028\u2029\x7f/", '"é😀\u2028\u2029\x7f/"'.encode()),
            ('"\\\b\t\n\f\r\x01\x1f', b'"\\"\\\\\\b\\t\\n\\f\\r\\u0001\\u001f"'),
            (0.1, b"0.1"),
            (1e-7, b"1e-7"),
            (1.5e-7, b"1.5e-7"),
            (9.99e-6, b"9.99e-6"),
            (1e-5, b"0.00001"),
            (123.0, b"123.0"),
            (1e15, b"1000000000000000.0"),
            (9007199254740993.0, b"9007199254740992.0"),
            (5e-324, b"5e-324"),
            (1e16, b"10000000000000000"),
            (-1e16, b"-10000000000000000"),
            (1.8e19, b"18000000000000000000"),
            (-0.0, b"0.0"),
            ({"x": [-0.0, (-0.0,)]}, b'{"x":[0.0,[0.0]]}'),
            (
                {"n": None, "x": [1.5, {"y": -0.0, "z": 1e16}]},
                b'{"n":null,"x":[1.5,{"y":0.0,"z":10000000000000000}]}',
            ),
            (2**64 - 1, b"18446744073709551615"),
            (-(2**63), b"-9223372036854775808"),
        ],
    )
    def test_known_answers(self, value: Any, expected: bytes) -> None:
        assert canonical(value) == expected

    @pytest.mark.parametrize(
        "value",
        [
            float("nan"),
            float("inf"),
            -float("inf"),
            [1, float("nan")],
            {"a": {"b": float("inf")}},
            "nul\x00",
            {"k\x00": 1},
            {"n": None, "x": [1.5, float("nan")]},
            {"n": None, "k\x00": 1},
            [None, "nul\x00"],
            2**64,
            -(2**63) - 1,
            1e300,
            -1e300,
            1.9e19,
            "\ud800",
            {1: 2},
            object(),
        ],
        ids=[
            "nan",
            "inf",
            "-inf",
            "nested-nan",
            "nested-inf",
            "nul",
            "nul-key",
            "nan-beside-null",
            "nul-key-beside-null",
            "nul-beside-null",
            "2**64",
            "-2**63-1",
            "1e300",
            "-1e300",
            "1.9e19",
            "surrogate",
            "int-key",
            "object",
        ],
    )
    def test_refusals(self, value: Any) -> None:
        with pytest.raises(InvalidEvent):
            canonical(value)

    def test_floats_follow_the_documented_rule(self) -> None:
        rng = random.Random(20261122)
        samples = [rng.random() * 10 ** rng.randint(-30, 30) for _ in range(5000)]
        bits = [f"0x1.{rng.getrandbits(52):013x}p{rng.randint(-1074, 1023)}" for _ in range(5000)]
        samples += [float.fromhex(b) for b in bits]
        for x in samples + [-x for x in samples[:100]]:
            assert orjson.dumps(x).decode() == documented_float(x), x
            if abs(x) < 1e16:
                assert canonical(x).decode() == documented_float(x)

    @settings(max_examples=300, deadline=None)
    @given(JSON_VALUES)
    def test_parsing_and_re_encoding_gives_the_stored_bytes(self, value: Any) -> None:
        stored = canonical(value)  # every generated value is storable: a refusal fails the test
        assert orjson.dumps(orjson.loads(stored), option=orjson.OPT_SORT_KEYS) == stored


def documented_float(x: float) -> str:
    """Rule 7 of docs/integrity.md, from Python's shortest round-trip digits."""
    if x == 0:
        return "0.0"
    sign = "-" if x < 0 else ""
    _, digit_tuple, exponent = Decimal(repr(abs(x))).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    assert isinstance(exponent, int)
    if 1e-5 <= abs(x) < 1e16:
        if exponent >= 0:
            return f"{sign}{digits}{'0' * exponent}.0"
        point = len(digits) + exponent
        if point > 0:
            return f"{sign}{digits[:point]}.{digits[point:]}"
        return f"{sign}0.{'0' * -point}{digits}"
    scientific = len(digits) - 1 + exponent
    mantissa = digits[0] + (f".{digits[1:]}" if len(digits) > 1 else "")
    return f"{sign}{mantissa}e{'-' if scientific < 0 else '+'}{abs(scientific)}"


class TestChain:
    ENVELOPE = (
        b'["0000000000000000000000000000000000000000000000000000000000000000","flow-1",1,'
        b'"00000000-0000-4000-8000-000000000001","StepCompleted",1,"2030-01-02T03:04:05.678901Z",'
        b'"6b6c1aa6eb3958138af7a8f8017acbe3f925209fa3c06a85048f16ef821262e7",'
        b'"26586a1731ae3d2b412a539fd5e93db0ed6983271fb542d7c9b3f73ef1b33494"]'
    )
    HASH = "6899a66fed040beedff7c19ca4b97bb1c27e01c49b147eb1ad349d7fa79f6977"

    def test_payload_digests(self) -> None:
        data = canonical({"step_id": "lookup", "result": {"order": 1042, "amount": 129.5}})
        assert data == b'{"result":{"amount":129.5,"order":1042},"step_id":"lookup"}'
        envelope = orjson.loads(self.ENVELOPE)
        assert hashlib.sha256(data).hexdigest() == envelope[7]
        assert hashlib.sha256(b'{"actor":"agent:refund-bot"}').hexdigest() == envelope[8]
        assert orjson.dumps(envelope) == self.ENVELOPE  # no whitespace, nothing escaped

    def test_chain_hash_is_sha256_of_the_documented_envelope(self) -> None:
        assert hashlib.sha256(self.ENVELOPE).hexdigest() == self.HASH
        got = chain_hash(
            GENESIS,
            "flow-1",
            1,
            "00000000-0000-4000-8000-000000000001",
            "StepCompleted",
            1,
            "2030-01-02T03:04:05.678901Z",
            bytes.fromhex("6b6c1aa6eb3958138af7a8f8017acbe3f925209fa3c06a85048f16ef821262e7"),
            bytes.fromhex("26586a1731ae3d2b412a539fd5e93db0ed6983271fb542d7c9b3f73ef1b33494"),
        )
        assert got.hex() == self.HASH

    def test_second_event_chains_on_the_first(self, store: EventStore) -> None:
        moment = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
        store.clock = lambda: moment
        ids = [uuid.UUID(int=1), uuid.UUID(int=2)]
        store.append("f", [NewEvent("A", {}, event_id=ids[0]), NewEvent("B", {"x": 1}, event_id=ids[1])])
        first, second = store.read_flow("f")
        data_hash, metadata_hash = hashlib.sha256(b'{"x":1}').hexdigest(), hashlib.sha256(b"{}").hexdigest()
        envelope = orjson.dumps(
            [first.hash, "f", 2, str(ids[1]), "B", 1, "2030-01-02T03:04:05.000000Z", data_hash, metadata_hash]
        )
        assert second.prev_hash == first.hash
        assert second.hash == hashlib.sha256(envelope).hexdigest()

    def test_genesis_and_time_format(self) -> None:
        assert bytes(32) == GENESIS
        assert format_time(datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2030-01-02T03:04:05.000000Z"
        assert format_time(datetime(2030, 1, 2, 3, 4, 5, 1, tzinfo=timezone(timedelta(hours=-2)))) == (
            "2030-01-02T05:04:05.000001Z"
        )
        with pytest.raises(ValueError, match="timezone-aware"):
            format_time(datetime(2030, 1, 2))
