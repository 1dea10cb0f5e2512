"""Which parts of a checkpoint the store keeps as plain JSON, and which go through the serde.

JSON is what people and SQL can read in the log; the rest (tuples, dates,
models, ...) is stored as the serde's typed bytes.
"""

from __future__ import annotations

import builtins
import math
from typing import Any

_JSON_KEYS = frozenset({"v", "id", "ts", "channel_versions", "versions_seen", "updated_channels"})
_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1


def _plain_json(value: Any) -> bool:
    """JSON that reads back as the same Python value (no tuples, dates or models), and that the store
    takes: no NUL or lone surrogate in a string or key, no NaN, infinity or integer beyond 64 bits,
    and no integral float of 1e16 or more, which it stores as an int (``eventstore.serialization``).
    """
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, str):
        return _plain_text(value)
    if isinstance(value, int):
        return _INT64_MIN <= value <= _UINT64_MAX
    if isinstance(value, float):
        return math.isfinite(value) and not (value.is_integer() and abs(value) >= 1e16)
    if isinstance(value, builtins.list):
        return all(_plain_json(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_text(k) and _plain_json(v) for k, v in value.items())
    return False


def _plain_text(text: str) -> bool:
    """Text JSON in the store can hold: no NUL (``jsonb`` refuses it), no lone surrogate (not UTF-8)."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _readable(value: Any) -> Any:
    """An interrupt's question or a resume's answer as plain JSON, for people reading the log; else None.

    Interrupts are LangGraph ``Interrupt`` objects: their ``id`` and ``value``
    are shown. Values that are not plain JSON, or over 4 KB, are left to the
    serialised blob.
    """
    many = isinstance(value, builtins.list | tuple)
    items = builtins.list(value) if many else [value]
    shown = [
        {"id": str(item.id), "value": item.value} if hasattr(item, "id") and hasattr(item, "value") else item
        for item in items
    ]
    if not _plain_json(shown):
        return None
    result = shown if many else shown[0]
    return result if len(repr(result)) <= 4096 else None
