"""A flow's steps as time travel holds them: in parts, read from a snapshot only when asked for.

A snapshot of a long flow is mostly steps, and most of them finished long
ago. So a snapshot stores its steps in *parts*: the steps in the order they
were scheduled, ``PART_SIZE`` to a part, each part stored once under the
SHA-256 of its canonical JSON (``snapshot_parts``). The snapshot itself (its
*head*) holds the flow's own state and the list of its parts with their
step ids. Consecutive snapshots share every part whose steps did not change,
and a snapshot read back loads a part only when one of its steps is asked
for, after checking the part against the hash its head names.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

from .flow_fold import StepState, step_from_dict, step_to_dict
from .integrity import digest
from .serialization import canonical

PART_SIZE = 256
"""Steps per part: small enough that reading one step reads little, large
enough that a flow of 25,000 steps has only ~100 parts to list."""

PartLoader = Callable[[list[tuple[bytes, list[str]]]], dict[str, StepState]]
"""Loads the steps of stored parts, given as (hash, step ids), each checked against its hash."""


@dataclass(slots=True)
class _Part:
    ids: list[str]
    hash: bytes | None  # the stored part these steps still match; None once one may have changed
    loaded: bool


class Steps(MutableMapping[str, StepState]):
    """A flow's steps by id, in scheduling order; parts of a snapshot load on first use.

    Reading a step hands out the state itself, which a fold changes in place,
    so reading marks its part changed: the next snapshot stores that part
    anew (or finds it unchanged by its hash).
    """

    __slots__ = ("_loader", "_parts", "_states", "_where")

    def __init__(self, steps: Iterable[StepState] = (), *, loader: PartLoader | None = None) -> None:
        self._parts: list[_Part] = []
        self._where: dict[str, int] = {}
        self._states: dict[str, StepState] = {}
        self._loader = loader
        for step in steps:
            self[step.step_id] = step

    @classmethod
    def stored(cls, parts: list[tuple[bytes, list[str]]], loader: PartLoader) -> Steps:
        """The steps of a snapshot's parts, none loaded yet."""
        steps = cls(loader=loader)
        for number, (part_hash, ids) in enumerate(parts):
            steps._parts.append(_Part(list(ids), part_hash, loaded=False))
            steps._where.update(dict.fromkeys(ids, number))
        return steps

    # -- the mapping -------------------------------------------------------------
    def __getitem__(self, step_id: str) -> StepState:
        number = self._where[step_id]
        part = self._parts[number]
        if not part.loaded:
            self._load(part)
        part.hash = None  # the caller may change the state it gets
        return self._states[step_id]

    def __setitem__(self, step_id: str, state: StepState) -> None:
        number = self._where.get(step_id)
        if number is None:  # a new step joins the last part, or starts one
            if not self._parts or len(self._parts[-1].ids) >= PART_SIZE:
                self._parts.append(_Part([], None, loaded=True))
            number = len(self._parts) - 1
        part = self._parts[number]
        if not part.loaded:
            self._load(part)  # before its ids change: they are what it loads
        if step_id not in self._where:
            part.ids.append(step_id)
            self._where[step_id] = number
        part.hash = None
        self._states[step_id] = state

    def __delitem__(self, step_id: str) -> None:
        part = self._parts[self._where[step_id]]
        if not part.loaded:
            self._load(part)
        part.ids.remove(step_id)
        part.hash = None
        del self._where[step_id], self._states[step_id]

    def __iter__(self) -> Iterator[str]:
        for part in self._parts:
            yield from part.ids

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, step_id: object) -> bool:
        return step_id in self._where

    def __repr__(self) -> str:
        loaded = sum(part.loaded for part in self._parts)
        return f"<Steps: {len(self)} in {len(self._parts)} parts, {loaded} loaded>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MutableMapping):
            return NotImplemented
        return dict(self.items()) == dict(other.items())

    __hash__ = None  # type: ignore[assignment]  # mutable, like dict

    def __deepcopy__(self, memo: dict[int, Any]) -> Steps:
        """A self-contained copy: every part is read first, so the copy never needs the store.

        A copy is what callers keep (``replay`` hands out copies), possibly
        after the store is closed. Reading the parts needs it open, so copy
        while it is; the parts read stay loaded here too.
        """
        self.load_all()
        clone = Steps()
        clone._parts = [_Part(list(p.ids), p.hash, loaded=True) for p in self._parts]
        clone._where = dict(self._where)
        clone._states = copy.deepcopy(self._states, memo)
        return clone

    def _load(self, part: _Part) -> None:
        assert self._loader is not None and part.hash is not None  # only stored parts are unloaded
        self._states.update(self._loader([(part.hash, part.ids)]))
        part.loaded = True

    def load_all(self) -> None:
        """Read every part not read yet, at once: before using all the steps, or closing the store."""
        unloaded = [part for part in self._parts if not part.loaded]
        if unloaded:
            assert self._loader is not None  # only stored parts are unloaded
            self._states.update(self._loader([(part.hash, part.ids) for part in unloaded if part.hash]))
            for part in unloaded:
                part.loaded = True

    # -- snapshots ---------------------------------------------------------------
    def encode_parts(self) -> tuple[list[tuple[str, list[str]]], dict[bytes, str]]:
        """The head's part list (hex hash, ids) and the bodies of parts changed since stored.

        Parts that still match their stored hash are not encoded again.
        """
        listed: list[tuple[str, list[str]]] = []
        bodies: dict[bytes, str] = {}
        for part in self._parts:
            if not part.ids:
                continue
            if part.hash is None:
                body = canonical({step_id: step_to_dict(self._states[step_id]) for step_id in part.ids})
                part.hash = digest(body)
                bodies[part.hash] = body.decode()
            listed.append((part.hash.hex(), list(part.ids)))
        return listed, bodies


def decode_part(body: str | bytes, ids: list[str]) -> dict[str, StepState]:
    """The steps ``ids`` of a part's JSON body."""
    import orjson

    data = orjson.loads(body)
    return {step_id: step_from_dict(data[step_id]) for step_id in ids}
