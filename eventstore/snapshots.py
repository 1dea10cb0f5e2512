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

from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .errors import IntegrityViolation
from .flow_fold import StepState, copy_step, step_from_dict, step_to_dict
from .integrity import digest
from .serialization import canonical

PART_SIZE = 256
"""Steps per part: small enough that reading one step reads little, large
enough that a flow of 25,000 steps has only ~100 parts to list."""


class Loaded(NamedTuple):
    """What a ``PartLoader`` read for a list of parts."""

    bodies: dict[bytes, str]  # by hash: the parts' JSON, checked against the hash, decoded when first used
    steps: dict[str, StepState]  # the steps of parts missing or edited, folded from the log instead


PartLoader = Callable[[list[tuple[bytes, list[str]]]], Loaded]
"""Reads stored parts, given as (hash, step ids), each checked against its hash."""


@dataclass(slots=True)
class _Part:
    """Up to ``PART_SIZE`` steps, with their states once loaded.

    A part is either one ``Steps``' own, which it changes in place, or
    *shared* by a ``Steps`` and its copies, which none of them changes: one
    that would, takes a copy of the part first (``Steps._own``). States too
    may be held by two parts, the copy of a part and the part it came from:
    those are *borrowed*, and copied before being handed out.
    """

    ids: list[str]
    hash: bytes | None  # the stored part these steps still match; None once one may have changed
    loaded: bool  # read from the store: its states, or its body to decode them from
    states: dict[str, StepState] = field(default_factory=dict)
    body: str | None = None  # the stored JSON, checked against its hash, while its states are not decoded
    shared: bool = False
    borrowed: set[str] = field(default_factory=set)  # ids whose states another part holds too
    lent: set[str] = field(default_factory=set)  # ids whose states went to a caller, who may change them


class _Where:
    """Step id to part number, cheap to copy: a large base that copies share, and the ids added since.

    Copying a ``Steps`` must not copy an entry per step, so a copy shares the
    base and copies only the recent additions, at most ``PART_SIZE`` of them;
    past that they join a base of their own. Removals, rare (the fold never
    removes a step), take a base of their own at once.
    """

    __slots__ = ("_base", "_recent", "_shared")

    def __init__(self, base: dict[str, int] | None = None) -> None:
        self._base: dict[str, int] = {} if base is None else base
        self._recent: dict[str, int] = {}
        self._shared = False  # the base is a copy's too: replace it, never change it

    def get(self, step_id: str) -> int | None:
        number = self._recent.get(step_id)
        return self._base.get(step_id) if number is None else number

    def __contains__(self, step_id: object) -> bool:
        return step_id in self._recent or step_id in self._base

    def __len__(self) -> int:
        return len(self._base) + len(self._recent)

    def add(self, step_id: str, number: int) -> None:
        self._recent[step_id] = number
        if len(self._recent) >= PART_SIZE:
            self._merge()

    def remove(self, step_id: str) -> None:
        self._merge()
        del self._base[step_id]

    def copy(self) -> _Where:
        clone = _Where(self._base)
        clone._recent = dict(self._recent)
        self._shared = clone._shared = True
        return clone

    def _merge(self) -> None:
        if self._shared:
            self._base, self._shared = {**self._base, **self._recent}, False
        else:
            self._base.update(self._recent)
        self._recent = {}


class Steps(MutableMapping[str, StepState]):
    """A flow's steps by id, in scheduling order; parts of a snapshot load on first use.

    Reading a step hands out the state itself, which a fold changes in place,
    so reading marks its part changed: the next snapshot stores that part
    anew (or finds it unchanged by its hash).

    A copy (``copy.deepcopy``, ``FlowView.copy``) shares what neither side
    changed: it costs the parts and the steps handed out since the last
    copy, not a copy of every step. Whichever side then hands out a shared
    step copies that one step first, so a change to one never shows in the
    other.
    """

    __slots__ = ("_loader", "_parts", "_where")

    def __init__(self, steps: Iterable[StepState] = (), *, loader: PartLoader | None = None) -> None:
        self._parts: list[_Part] = []
        self._where = _Where()
        self._loader = loader
        for step in steps:
            self[step.step_id] = step

    @classmethod
    def stored(cls, parts: list[tuple[bytes, list[str]]], loader: PartLoader) -> Steps:
        """The steps of a snapshot's parts, none loaded yet."""
        steps = cls(loader=loader)
        where: dict[str, int] = {}
        for number, (part_hash, ids) in enumerate(parts):
            steps._parts.append(_Part(list(ids), part_hash, loaded=False))
            where.update(dict.fromkeys(ids, number))
        steps._where = _Where(where)
        return steps

    # -- the mapping -------------------------------------------------------------
    def __getitem__(self, step_id: str) -> StepState:
        number = self._where.get(step_id)
        if number is None:
            raise KeyError(step_id)
        return _hand_out(self._ready(self._own(number)), step_id)

    def __setitem__(self, step_id: str, state: StepState) -> None:
        number = self._where.get(step_id)
        if number is None:  # a new step joins the last part, or starts one
            if not self._parts or len(self._parts[-1].ids) >= PART_SIZE:
                self._parts.append(_Part([], None, loaded=True))
            number = len(self._parts) - 1
        part = self._ready(self._own(number))  # before its ids change: they are what it loads
        if step_id not in part.states:
            part.ids.append(step_id)
            self._where.add(step_id, number)
        part.hash = None
        part.states[step_id] = state
        part.borrowed.discard(step_id)
        part.lent.add(step_id)  # the caller still holds it

    def __delitem__(self, step_id: str) -> None:
        number = self._where.get(step_id)
        if number is None:
            raise KeyError(step_id)
        part = self._ready(self._own(number))
        part.ids.remove(step_id)
        part.hash = None
        del part.states[step_id]
        part.borrowed.discard(step_id)
        part.lent.discard(step_id)
        self._where.remove(step_id)

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
        mine = dict(self.read_items())
        return mine == dict(other.read_items() if isinstance(other, Steps) else other.items())

    __hash__ = None  # type: ignore[assignment]  # mutable, like dict

    def read_items(self) -> Iterator[tuple[str, StepState]]:
        """``(step id, state)`` in order, every part read first, for reading only.

        Unlike ``items()``, this hands out states a copy may share, without
        copying them: change none (``items()`` gives states to change).
        """
        self.load_all()
        for part in self._parts:
            states = _decoded(part).states
            for step_id in part.ids:
                yield step_id, states[step_id]

    def __deepcopy__(self, memo: dict[int, Any]) -> Steps:
        """A self-contained copy: every part is read first, so the copy never needs the store.

        A copy is what callers keep (``replay`` hands out copies), possibly
        after the store is closed. Reading the parts needs it open, so copy
        while it is; the parts read stay loaded here too. The two then share
        every part: only the states handed out from one, which a caller may
        still change, are copied for the other.
        """
        self.load_all()
        clone = Steps()
        clone._where = self._where.copy()
        clone._parts = [self._share(part) for part in self._parts]
        return clone

    def _share(self, part: _Part) -> _Part:
        """``part`` as a copy of this ``Steps`` gets it: shared, with copies of the states handed out."""
        if not part.lent:
            part.shared = True
            return part
        states = {
            step_id: copy_step(state) if step_id in part.lent else state
            for step_id, state in part.states.items()
        }
        part.borrowed = set(part.states) - part.lent
        return _Part(list(part.ids), part.hash, loaded=True, states=states, shared=True)

    def _own(self, number: int) -> _Part:
        """Part ``number``, this ``Steps``' own to change: a shared one is copied.

        The copy borrows the shared part's states; or, if they are still to be
        decoded, takes its body and decodes states of its own from it.
        """
        part = self._parts[number]
        if part.shared:
            if part.body is not None:
                part = _Part(list(part.ids), part.hash, True, body=part.body)
            else:
                part = _Part(list(part.ids), part.hash, True, dict(part.states), borrowed=set(part.states))
            self._parts[number] = part
        return part

    def _ready(self, part: _Part) -> _Part:
        """``part`` with its states: read from the store, or decoded from its body, if not yet."""
        if not part.loaded:
            assert self._loader is not None and part.hash is not None  # only stored parts are unloaded
            _fill(part, self._loader([(part.hash, part.ids)]))
        return _decoded(part)

    def load_all(self) -> None:
        """Read every part not read yet, at once: before using all the steps, or closing the store.

        Each part read is checked against its hash now; its steps are decoded
        from it when first used, which needs no store.
        """
        unloaded = [part for part in self._parts if not part.loaded]
        if unloaded:
            assert self._loader is not None  # only stored parts are unloaded
            loaded = self._loader([(part.hash, part.ids) for part in unloaded if part.hash])
            for part in unloaded:
                _fill(part, loaded)

    # -- snapshots ---------------------------------------------------------------
    def encode_parts(self) -> tuple[list[tuple[str, list[str]]], dict[bytes, str]]:
        """The head's part list (hex hash, ids) and the bodies of parts changed since stored.

        Parts that still match their stored hash are not encoded again. The hash is kept on the
        part, which copies share: after one copy's call, another's leaves out the bodies the
        first returned. ``state_at`` calls it once, on a view it folded itself.
        """
        listed: list[tuple[str, list[str]]] = []
        bodies: dict[bytes, str] = {}
        for part in self._parts:
            if not part.ids:
                continue
            if part.hash is None:  # changed, so decoded
                body = canonical({step_id: step_to_dict(part.states[step_id]) for step_id in part.ids})
                part.hash = digest(body)
                bodies[part.hash] = body.decode()
            listed.append((part.hash.hex(), list(part.ids)))
        return listed, bodies


def _fill(part: _Part, loaded: Loaded) -> None:
    """Give ``part``, not read yet, what the loader read for it."""
    assert part.hash is not None  # only stored parts are read
    body = loaded.bodies.get(part.hash)
    if body is None:  # missing or edited in the store
        part.states = {step_id: loaded.steps[step_id] for step_id in part.ids}
    part.body = body
    part.loaded = True


def _decoded(part: _Part) -> _Part:
    """``part``, its states decoded from its body if they were not yet."""
    if part.body is not None:
        part.states, part.body = decode_part(part.body, part.ids), None
    return part


def _hand_out(part: _Part, step_id: str) -> StepState:
    """The state of ``step_id`` in ``part`` (one's own, loaded), for a caller that may change it."""
    state = part.states[step_id]
    if step_id in part.borrowed:  # another part holds it too: the caller gets one of its own
        state = part.states[step_id] = copy_step(state)
        part.borrowed.discard(step_id)
    part.lent.add(step_id)
    part.hash = None  # the caller may change the state it gets
    return state


def decode_part(body: str | bytes, ids: list[str]) -> dict[str, StepState]:
    """The steps ``ids`` of a part's JSON body."""
    import orjson

    # Its hash matched, and so did the snapshot's that lists it: anything wrong here means the
    # cache was rewritten whole, hashes and all.
    altered = (
        "the snapshot was altered; delete the flow's snapshots (they are a cache) and `eventstore verify` "
        "the log"
    )
    try:
        data = orjson.loads(body)
        if missing := [step_id for step_id in ids if step_id not in data]:
            raise IntegrityViolation(
                f"a snapshot part lists step {missing[0]!r} but holds no state for it: {altered}"
            )
        return {step_id: step_from_dict(data[step_id]) for step_id in ids}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise IntegrityViolation(f"a snapshot part cannot be read ({type(exc).__name__}): {altered}") from exc
