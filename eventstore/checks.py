"""Checks of the public API's arguments: anything else is the caller's ``InvalidInput``."""

from __future__ import annotations

import os
import reprlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pydantic

from .errors import InvalidInput
from .schema import MAX_TYPE_LENGTH

MAX_COUNT = 2**63 - 1
"""The largest position, revision, offset or size a backend stores (a signed 64-bit integer)."""


MAX_PAGE = 1000
"""The most rows one page of a paginated query returns."""

_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxother, _SHOWN.maxlong = 3, 80, 80, 60


def shown(value: object) -> str:
    """``value``'s repr for an error message, bounded: a 10,000-deep dict or a megabyte of text is
    cut short (a plain repr of the first raises RecursionError)."""
    try:
        return _SHOWN.repr(value)
    except Exception:  # a repr of the caller's own that fails (or recurses) names the type instead
        return f"<{type(value).__name__}>"


def check_page(offset: Any, limit: Any) -> None:
    """A page's ``offset`` (an int >= 0) and ``limit`` (an int from 1 to ``MAX_PAGE``)."""
    check_count("offset", offset)
    if type(limit) is not int or not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be an int from 1 to {MAX_PAGE}, not {shown(limit)}")


def check_names(name: str, value: Any) -> list[str]:
    """One name or an iterable of names (strings), as a list."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, Iterable) or isinstance(value, bytes | Mapping):
        raise InvalidInput(f"{name} must be a name or a list of names, not {shown(value)}")
    names = list(value)
    if not all(isinstance(item, str) for item in names):
        raise InvalidInput(f"{name} must be names (strings), not {shown(names)}")
    return names


def check_type_names(name: str, value: Any) -> list[str]:
    """A filter of event types: names an event type could have, so every backend reads them alike."""
    names = check_names(name, value)
    for item in names:
        if not 1 <= len(item) <= MAX_TYPE_LENGTH or "\x00" in item or not encodable(item):
            raise InvalidInput(
                f"{name} must hold event type names (1 to {MAX_TYPE_LENGTH} characters of UTF-8 text "
                f"without NUL), not {shown(item)}"
            )
    return names


def check_text(name: str, value: Any) -> str:
    """``value``, a str every backend stores and compares alike: valid UTF-8 without NUL."""
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string, not {shown(value)}")
    if "\x00" in value or not encodable(value):
        raise InvalidInput(f"{name} must be valid UTF-8 text without NUL characters, not {shown(value)}")
    return value


def check_store(value: object) -> None:
    """``InvalidInput`` unless ``value`` is an ``EventStore``: a URL passed for one failed deep inside,
    with an ``AttributeError``."""
    from .store import EventStore  # the store imports this module

    if not isinstance(value, EventStore):
        hint = " (an AsyncEventStore: give its .store to its run())" if hasattr(value, "run") else ""
        raise InvalidInput(
            f"store must be an EventStore, not {shown(value)}{hint}: open one with EventStore.open(url, ...)"
        )


def check_nonempty_text(name: str, value: Any) -> str:
    """A non-empty ``check_text``: text both backends compare alike, else ``InvalidInput``."""
    if isinstance(value, str) and not value:
        raise InvalidInput(f"{name} must be a non-empty string, not ''")
    return check_text(name, value)


def check_path(what: str, value: Any) -> Path:
    """``value`` as a ``Path``: a str or ``os.PathLike`` of a str, without NUL; else ``InvalidInput``.

    Not an int, which ``open`` would take as a file descriptor (and close: someone else's file).
    """
    path = os.fspath(value) if isinstance(value, str | os.PathLike) else None
    if not isinstance(path, str) or "\x00" in path:
        raise InvalidInput(
            f"{what} must be a file's path (a str or os.PathLike, without NUL), not {shown(value)}"
        )
    return Path(path)


def encodable(text: str) -> bool:
    """Whether ``text`` is valid UTF-8 (a lone surrogate is not)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def check_count(name: str, value: Any, *, minimum: int = 0) -> int:
    """``value``, an int from ``minimum`` to ``MAX_COUNT`` (a bool is not a count)."""
    if type(value) is not int or value < minimum:
        raise InvalidInput(f"{name} must be an int >= {minimum}, not {shown(value)}")
    if value > MAX_COUNT:
        raise InvalidInput(f"{name} must be at most 2**63 - 1, not {shown(value)}")
    return value


def check_flag(name: str, value: Any) -> bool:
    """``value``, True or False: a truthy "no" from a configuration would mean yes."""
    if type(value) is not bool:
        raise InvalidInput(f"{name} must be True or False, not {shown(value)}")
    return value


def check_callback(name: str, value: Any) -> None:
    """``value``, None or callable: checked at the call, not at its first use, half-way through."""
    if value is not None and not callable(value):
        raise InvalidInput(f"{name} must be callable or None, not {shown(value)}")


def validation_message(exc: pydantic.ValidationError) -> str:
    """pydantic's errors on one line: ``field: what is wrong (got value)``, joined by ``; ``.

    pydantic's own text runs over several lines, with a documentation URL
    under each error; an error message a user reads is one line.
    """
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "value"
        got = shown(error.get("input"))
        got = got if len(got) <= 60 else f"{got[:57]}..."
        parts.append(f"{where}: {error['msg']} (got {got})")
    return "; ".join(parts)
