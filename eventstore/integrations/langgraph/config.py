"""The ids a LangGraph config names, and the checks of the arguments ``EventStoreSaver`` takes.

Each check returns the value it accepts, or raises ``InvalidInput`` naming
the argument: no ``KeyError`` or driver error reaches the caller.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from typing import Any
from uuid import UUID

from langchain_core.runnables import RunnableConfig

from ...errors import InvalidInput

_CONF_NS = "config['configurable']['checkpoint_ns']"
_CONF_ID = "config['configurable']['checkpoint_id']"


def _text(value: object, what: str, *, empty: bool = False, lookup: bool = False) -> str:
    """``value`` if it is a string the database can store (not empty, unless ``empty``); else InvalidInput.

    A ``lookup`` id may hold a NUL, which no database text can: it names
    nothing stored (``_never_stored``), so a read or a delete of it finds nothing.
    """
    if not isinstance(value, str) or not (value or empty):
        raise InvalidInput(f"{what} must be a {'' if empty else 'non-empty '}string, not {value!r:.60}")
    if not value.isascii():  # a flag in CPython: free for the usual ids
        try:
            value.encode()
        except UnicodeEncodeError:
            raise InvalidInput(
                f"{what} is not valid Unicode text (a lone surrogate): {value!r:.60}"
            ) from None
    if not lookup and "\x00" in value:
        raise InvalidInput(f"{what} contains a NUL character, which the database cannot store: {value!r:.60}")
    return value


def _maybe_text(value: object, what: str, *, lookup: bool = False) -> str | None:
    return None if value is None else _text(value, what, empty=True, lookup=lookup)


def _never_stored(*ids: str | None) -> bool:
    """Whether one of these ids holds a NUL: no write stores one, so no row has it.

    (SQLite could compare it, PostgreSQL refuses it as a parameter: reads and
    deletes answer before asking either.)
    """
    return any(value is not None and "\x00" in value for value in ids)


def _dict(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a dict, not {value!r:.60}")
    return value


def _configurable(config: object, what: str) -> dict[str, Any]:
    """``config["configurable"]`` of a LangGraph config, or ``{}``."""
    conf = _dict(config, what).get("configurable")
    return {} if conf is None else _dict(conf, f"{what}['configurable']")


def _config_thread_id(conf: dict[str, Any], *, lookup: bool = False) -> str | None:
    """The config's thread id; an int or UUID as its text, as LangGraph's own savers take them."""
    thread_id = conf.get("thread_id")
    if thread_id is None:
        return None
    if isinstance(thread_id, int | UUID) and not isinstance(thread_id, bool):
        thread_id = str(thread_id)
    return _text(thread_id, "config['configurable']['thread_id']", lookup=lookup)


def _thread(config: RunnableConfig, *, lookup: bool = False) -> tuple[str, str, str | None]:
    """The thread id, checkpoint namespace and checkpoint id (if any) that a config names."""
    conf = _configurable(config, "config")
    thread_id = _config_thread_id(conf, lookup=lookup)
    if thread_id is None:
        raise InvalidInput("the config needs config['configurable']['thread_id']")
    return (
        thread_id,
        _maybe_text(conf.get("checkpoint_ns"), _CONF_NS, lookup=lookup) or "",
        _maybe_text(conf.get("checkpoint_id"), _CONF_ID, lookup=lookup),
    )


def _ids(values: object, what: str) -> builtins.list[str]:
    """Thread or run ids to look up, given as a list: each a non-empty string; those that hold a NUL
    (``_never_stored``) left out."""
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
        raise InvalidInput(f"{what} must be a list of ids (strings), not {values!r:.60}")
    checked = [_text(value, f"each of {what}", lookup=True) for value in values]
    return [value for value in checked if not _never_stored(value)]


def _config(thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": checkpoint_ns,
            "checkpoint_id": checkpoint_id,
        }
    }


def _matches(metadata: dict[str, Any], filter: dict[str, Any] | None) -> bool:
    return not filter or all(metadata.get(key) == value for key, value in filter.items())
