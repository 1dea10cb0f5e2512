"""What every subject writes: agent-event payloads, flows, and the planned appends.

All subjects get the same payloads (a pool of realistic agent events, 200-400
bytes of JSON each), the same flows, and the same sequence of appends; only
the code that stores them differs.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eventstore.events import new_event_id
from eventstore.integrity import GENESIS, chain_hash, digest, format_time
from eventstore.serialization import canonical

SAMPLE_COUNT = 512
FLOWS_PER_WORKLOAD = 10

# Flow numbers: each workload (and each concurrent writer) has a range of its own.
FILL_FLOWS = 0
SINGLE_FLOWS = 10_000_000
BATCH_FLOWS = 20_000_000
WRITER_FLOWS = 30_000_000
WRITER_STRIDE = 100_000

_WORDS = [
    "the",
    "agent",
    "retrieved",
    "three",
    "candidate",
    "documents",
    "and",
    "ranked",
    "them",
    "by",
    "relevance",
    "before",
    "summarising",
    "the",
    "quarterly",
    "revenue",
    "figures",
    "for",
    "the",
    "finance",
    "team",
    "while",
    "the",
    "planner",
    "delegated",
    "a",
    "follow-up",
    "search",
    "about",
    "supplier",
    "contracts",
    "invoices",
    "and",
    "overdue",
    "payments",
    "then",
    "asked",
    "the",
    "reviewer",
    "to",
    "confirm",
    "the",
    "draft",
    "reply",
    "to",
    "the",
    "customer",
]
_MODELS = ("gpt-4o-mini", "claude-3-5-sonnet", "llama-3.1-70b", "mistral-large")
_TOOLS = ("web_search", "sql_query", "send_email", "read_file", "calendar_lookup")
_ACTORS = ("agent:planner", "agent:researcher", "agent:writer", "user:alice", "system:scheduler")


@dataclass(frozen=True, slots=True)
class Sample:
    """One agent event: its type, its data, and the data's canonical JSON and digest."""

    type: str
    data: dict[str, Any]
    data_json: bytes
    data_hash: bytes


@dataclass(frozen=True, slots=True)
class Step:
    """One append: ``samples`` to flow number ``flow``, which is at ``revision`` before it."""

    flow: int
    revision: int
    samples: list[Sample]


@dataclass(frozen=True, slots=True)
class Decoded:
    """What the eventsourcing reader decodes each notification into."""

    position: int
    originator_id: uuid.UUID
    version: int
    topic: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    timestamp: datetime


def flow_name(number: int) -> str:
    return f"flow-{number:08d}"


def flow_uuid(number: int) -> uuid.UUID:
    return uuid.UUID(int=(0xA6E47 << 96) | number)


def metadata_for(number: int) -> dict[str, str]:
    """The small per-append metadata: who acted, in which session."""
    return {
        "actor": _ACTORS[number % len(_ACTORS)],
        "session_id": f"sess-{number:08d}-{number * 7919 % 10_000:04d}",
    }


def make_samples(count: int = SAMPLE_COUNT, *, seed: int = 7) -> list[Sample]:
    rng = random.Random(seed)
    samples = []
    for i in range(count):
        event_type, data = _payload(rng, i)
        encoded = canonical(data)
        samples.append(Sample(event_type, data, encoded, digest(encoded)))
    return samples


def _text(rng: random.Random, low: int, high: int) -> str:
    words: list[str] = []
    target = rng.randint(low + 50, high + 60)
    while sum(len(w) + 1 for w in words) < target:
        words.append(rng.choice(_WORDS))
    return " ".join(words)


def _payload(rng: random.Random, i: int) -> tuple[str, dict[str, Any]]:
    step = f"step-{rng.randint(1, 60):04d}"
    call = uuid.UUID(int=rng.getrandbits(128)).hex[:16]
    kind = i % 6
    if kind == 0:
        return "LLMCallCompleted", {
            "step_id": step,
            "model": rng.choice(_MODELS),
            "prompt_tokens": rng.randint(200, 4000),
            "completion_tokens": rng.randint(20, 800),
            "latency_ms": rng.randint(300, 9000),
            "finish_reason": "stop",
            "summary": _text(rng, 80, 180),
        }
    if kind == 1:
        return "ToolCalled", {
            "step_id": step,
            "tool": rng.choice(_TOOLS),
            "call_id": call,
            "arguments": {"query": _text(rng, 60, 140), "max_results": rng.randint(3, 20)},
        }
    if kind == 2:
        return "ToolReturned", {
            "step_id": step,
            "tool": rng.choice(_TOOLS),
            "call_id": call,
            "status": "ok",
            "result_preview": _text(rng, 100, 200),
            "bytes": rng.randint(500, 90_000),
            "latency_ms": rng.randint(20, 4000),
        }
    if kind == 3:
        return "DecisionMade", {
            "step_id": step,
            "agent": "planner",
            "decision": rng.choice(["delegate", "answer", "retry"]),
            "rationale": _text(rng, 80, 180),
            "confidence": round(rng.random(), 3),
            "next_step": f"step-{rng.randint(1, 60):04d}",
        }
    if kind == 4:
        return "HumanApproved", {
            "step_id": step,
            "approver": "user:alice@example.com",
            "request_id": call,
            "approved": True,
            "comment": _text(rng, 60, 160),
            "waited_ms": rng.randint(1000, 600_000),
        }
    return "StepFailed", {
        "step_id": step,
        "attempt": rng.randint(1, 3),
        "will_retry": rng.random() < 0.7,
        "error": {
            "type": rng.choice(["TimeoutError", "RateLimited", "ToolError"]),
            "message": _text(rng, 80, 180),
        },
    }


class Planner:
    """Appends of ``size`` events, round-robin over ``flows`` flows, tracking their revisions."""

    def __init__(self, samples: list[Sample], *, first_flow: int, flows: int, size: int) -> None:
        self._samples = samples
        self._flows = [first_flow + i for i in range(flows)]
        self._revisions = dict.fromkeys(self._flows, 0)
        self._size = size
        self._turn = 0
        self._sample = 0

    def take(self, count: int) -> list[Step]:
        steps = []
        samples, n = self._samples, len(self._samples)
        for _ in range(count):
            flow = self._flows[self._turn % len(self._flows)]
            self._turn += 1
            picked = [samples[(self._sample + k) % n] for k in range(self._size)]
            self._sample += self._size
            steps.append(Step(flow, self._revisions[flow], picked))
            self._revisions[flow] += self._size
        return steps


def fill_plan(samples: list[Sample], total: int, *, flow_size: int = 100) -> Iterator[Step]:
    """The steps that build a read store: ``total`` events in new flows of ``flow_size``."""
    n = len(samples)
    for flow in range(FILL_FLOWS, FILL_FLOWS + (total + flow_size - 1) // flow_size):
        size = min(flow_size, total - (flow - FILL_FLOWS) * flow_size)
        start = flow * flow_size
        yield Step(flow, 0, [samples[(start + k) % n] for k in range(size)])


class RowMaker:
    """``flow_events`` rows exactly as eventstore writes them, for the raw-driver ceiling.

    Positions, revisions and the hash chain are computed here, before the
    clock starts: the raw subjects only insert.
    """

    def __init__(self, *, postgres: bool, first_position: int = 1) -> None:
        self._postgres = postgres
        self._position = first_position
        self._heads: dict[int, bytes] = {}
        self._meta: dict[int, tuple[bytes, bytes]] = {}

    def rows(self, step: Step) -> list[tuple[Any, ...]]:
        now = datetime.now(UTC)
        recorded_at = format_time(now)
        meta = self._meta.get(step.flow)
        if meta is None:
            encoded = canonical(metadata_for(step.flow))
            meta = self._meta[step.flow] = (encoded, digest(encoded))
        meta_json, meta_hash = meta
        flow_id = flow_name(step.flow)
        prev = self._heads.get(step.flow, GENESIS)
        rows = []
        for offset, sample in enumerate(step.samples):
            revision = step.revision + 1 + offset
            event_id = new_event_id()  # what eventstore makes: time-ordered
            digest_ = chain_hash(
                prev,
                flow_id,
                revision,
                str(event_id),
                sample.type,
                1,
                recorded_at,
                sample.data_hash,
                meta_hash,
            )
            if self._postgres:
                row = (
                    self._position,
                    flow_id,
                    revision,
                    event_id,
                    sample.type,
                    1,
                    sample.data_json.decode(),
                    meta_json.decode(),
                    now,
                    sample.data_hash,
                    meta_hash,
                    prev,
                    digest_,
                )
            else:
                row = (
                    self._position,
                    flow_id,
                    revision,
                    event_id.bytes,
                    sample.type,
                    1,
                    sample.data_json,
                    meta_json,
                    recorded_at,
                    sample.data_hash,
                    meta_hash,
                    prev,
                    digest_,
                )
            rows.append(row)
            self._position += 1
            prev = digest_
        self._heads[step.flow] = prev
        return rows
