"""The canonical JSON encoding that is stored and hashed.

``canonical(value)`` is ``orjson.dumps(value, option=OPT_SORT_KEYS)``: UTF-8,
no whitespace, object keys sorted by code point, floats in shortest
round-trip form. docs/integrity.md specifies it byte for byte.

Values are checked so that what is stored reads back as the same bytes on
every backend, PostgreSQL's ``jsonb`` included:

* NaN and infinities are refused (JSON has no spelling for them);
* integers must fit in 64 bits;
* strings may not contain U+0000 (``jsonb`` cannot store it);
* ``-0.0`` is stored as ``0.0`` and an integral float of 1e16 or more as an
  integer, which is how ``jsonb`` would give them back anyway.

The checks cost one scan of the encoded bytes. A payload that contains
``null`` (which is also how orjson spells NaN), ``e+``, ``-0.0`` or an
escaped NUL is then checked for floats by a quick walk, and only one that
holds a float to normalise or refuse is rebuilt, path by path, in Python.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from typing import Any

import orjson

from .errors import InvalidEvent

_OPTS = orjson.OPT_SORT_KEYS
_SUSPECT = re.compile(rb"null|e\+|-0\.0|\\u0000")
_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1


def canonical(value: Any, *, what: str = "data") -> bytes:
    """Encode ``value`` canonically, normalising or refusing what JSON can't keep."""
    try:
        encoded = orjson.dumps(value, option=_OPTS)
    except TypeError as exc:
        raise InvalidEvent(f"{what} is not JSON-serialisable: {exc}") from exc
    if _SUSPECT.search(encoded) is not None and (b"\\u0000" in encoded or not _stable(value)):
        normal = _normalise(value, what, "$")
        if normal is not value:
            encoded = orjson.dumps(normal, option=_OPTS)
    return encoded


def _stable(value: Any) -> bool:
    """True if ``value`` holds no float to normalise or refuse (most payloads with a ``null``).

    Strings and keys need no look: a NUL in one is escaped in the encoding,
    and ``canonical`` then takes the full walk whatever this says.
    """
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is float:
        return value != 0.0 and not (value.is_integer() and abs(value) >= 1e16) and math.isfinite(value)
    if kind is dict:
        items = value.values()
    elif kind is list or kind is tuple:
        items = value
    else:
        return False  # anything else (a subclass, a dataclass) takes the full walk
    for item in items:  # noqa: SIM110  # a loop, not all() over a generator: half the calls
        if not _stable(item):
            return False
    return True


def _normalise(value: Any, what: str, path: str) -> Any:
    """Return ``value`` with floats made jsonb-stable, or raise on what JSON can't hold."""
    if isinstance(value, enum.Enum):
        # orjson encodes an enum member as its value: check that value, or a NaN would be stored
        # as null, and a -0.0 or 1e17 as bytes PostgreSQL's jsonb gives back otherwise.
        inner = value.value
        new = _normalise(inner, what, path)
        return value if new is inner else new
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise InvalidEvent(f"{what} at {path} is {value!r}; JSON has no NaN or Infinity")
        if value == 0.0:
            return 0.0
        if value.is_integer() and abs(value) >= 1e16:
            as_int = int(value)
            if not _INT64_MIN <= as_int <= _UINT64_MAX:
                raise InvalidEvent(f"{what} at {path} is {value!r}, too large to store exactly")
            return as_int
        return value
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidEvent(f"{what} at {path} contains a NUL character")
        return value
    if isinstance(value, dict):
        changed = False
        out: dict[Any, Any] = {}
        for key, item in value.items():
            if isinstance(key, str) and "\x00" in key:
                raise InvalidEvent(f"{what} at {path} has a key with a NUL character")
            new = _normalise(item, what, f"{path}.{key}")
            changed = changed or new is not item
            out[key] = new
        return out if changed else value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # orjson encodes dataclasses itself; walk them like the dict they become.
        return _normalise(dataclasses.asdict(value), what, path)
    if isinstance(value, (list, tuple)):
        items = [_normalise(item, what, f"{path}[{i}]") for i, item in enumerate(value)]
        if any(new is not old for new, old in zip(items, value, strict=True)):
            return items
        return value
    return value


def loads(raw: bytes | str) -> Any:
    """Decode stored JSON."""
    return orjson.loads(raw)
