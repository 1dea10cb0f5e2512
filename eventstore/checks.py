"""Checks of the public API's arguments: anything else is the caller's ``InvalidInput``."""

from __future__ import annotations

from typing import Any

from .errors import InvalidInput

MAX_COUNT = 2**63 - 1
"""The largest position, revision, offset or size a backend stores (a signed 64-bit integer)."""


def check_count(name: str, value: Any, *, minimum: int = 0) -> int:
    """``value``, an int from ``minimum`` to ``MAX_COUNT`` (a bool is not a count)."""
    if type(value) is not int or value < minimum:
        raise InvalidInput(f"{name} must be an int >= {minimum}, not {value!r}")
    if value > MAX_COUNT:
        raise InvalidInput(f"{name} must be at most 2**63 - 1, not {value!r}")
    return value
