"""How the command line reads numbers and projections from its arguments.

Positions, revisions, checkpoint sizes and counts are stored as 64-bit
integers (SQLite ``INTEGER``, PostgreSQL ``BIGINT``), so a larger one is bad
input, reported before anything is opened. ``MODULE:CLASS`` names a
``projections.Projection`` subclass that can be created without arguments
(docs/projections.md).
"""

from __future__ import annotations

import importlib
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

import click

from ..checks import MAX_COUNT as LARGEST
from ..checks import encodable
from ..errors import InvalidInput


class StoredInt(click.IntRange):
    """An integer option of at least ``min`` that the database can hold (at most ``LARGEST``).

    The help shows only the lower bound; a number above ``LARGEST`` is a usage error.
    """

    name = "integer"

    def __init__(self, min: int = 0) -> None:
        super().__init__(min=min)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if number > LARGEST:
            self.fail(f"{number} is too large: at most 2**63 - 1", param, ctx)
        return number


class Seconds(click.FloatRange):
    """A number of seconds from ``min`` to ``max``; ``nan``, which no comparison refuses, is a usage error."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value} is not a number of seconds", param, ctx)
        return number


class FilePath(click.Path):
    """A file to read or write (never a directory); an empty one, which would mean ``.``, is a usage error."""

    def __init__(self, *, allow_dash: bool = False) -> None:
        super().__init__(dir_okay=False, allow_dash=allow_dash, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value:
            self.fail("an empty path: give a file name", param, ctx)
        return super().convert(value, param, ctx)


POSITION = StoredInt(0)
"""A log position, a revision or a tree size (0 and up)."""

COUNT = StoredInt(1)
"""How many (1 and up)."""


NEGATIVE = re.compile(r"-[0-9]+")
"""A negative whole number, as ``-1``: click would read it as an unknown option."""


class NegativeArguments(click.Command):
    """A command whose arguments may be written as negative numbers (``diff f -1 3``).

    Click takes ``-1`` for an option and says "No such option"; this command
    passes it on as an argument, for the command to say what is wrong with it.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        before_dashes = args[: args.index("--")] if "--" in args else args
        if any(NEGATIVE.fullmatch(arg) for arg in before_dashes):
            ctx.ignore_unknown_options = True
        return super().parse_args(ctx, args)


def text_of(value: str | None, option: str, *, empty: bool = True) -> str | None:
    """``value`` given for ``option``, checked here so an error names the option, not a library keyword.

    ``InvalidInput`` for text no backend can store (not UTF-8, a NUL), and for
    ``""`` unless ``empty``. ``None`` (the option not given) is returned as is.
    """
    if value is None:
        return None
    if not empty and value == "":
        raise InvalidInput(f"{option} must not be empty")
    if "\x00" in value or not encodable(value):
        raise InvalidInput(f"{option} must be valid UTF-8 text without NUL characters, not {value!r}")
    return value


def number_in(text: str, what: str) -> int | None:
    """``text`` as a whole number when it is written in digits (``None`` otherwise).

    Raises ``InvalidInput`` for a number above ``LARGEST`` (no stored ``what`` has it) and
    for a negative one (counting from the end is not supported).
    """
    if NEGATIVE.fullmatch(text):
        raise InvalidInput(
            f"{what} {text} is negative: {what}s count up from 0; counting from the end is not supported"
        )
    if not (text.isascii() and text.isdigit()):
        return None
    if len(text.lstrip("0")) > len(str(LARGEST)) or int(text) > LARGEST:
        raise InvalidInput(f"{what} {text} is too large: at most 2**63 - 1")
    return int(text)


def load_projection(spec: str, param_hint: str, *, usage: str = "`package.module:ClassName`") -> Any:
    """Import ``package.module:ClassName`` and create the ``Projection`` subclass it names.

    Anything else (no such module or name, not a ``Projection`` subclass, a
    class that cannot be created without arguments) is a ``click.BadParameter``
    naming ``spec`` and what is wrong with it: exit status 2, no traceback.
    """
    from projections import Projection

    def bad(problem: str) -> click.BadParameter:
        return click.BadParameter(f"cannot load {spec}: {problem}", param_hint=param_hint)

    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise click.BadParameter(f"{spec!r}: use {usage}", param_hint=param_hint)
    here = _importable_here()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name is not None and f"{module_name}.".startswith(f"{exc.name}.")
        where = f"the current directory ({here}), " if here else ""
        looked = f" (looked in {where}PYTHONPATH and the installed packages)" if missing else ""
        raise bad(f"{type(exc).__name__}: {exc}{looked}") from exc
    except Exception as exc:  # importing runs the user's module: any error it raises is bad input
        raise bad(f"{type(exc).__name__}: {exc}") from exc
    found = getattr(module, class_name, None)
    if found is None:
        raise bad(f"module {module_name!r} has no attribute {class_name!r}")
    if not (isinstance(found, type) and issubclass(found, Projection)):
        kind = "class" if isinstance(found, type) else type(found).__name__
        raise bad(f"{class_name} is a {kind}, not a projections.Projection subclass")
    try:
        return found()
    except Exception as exc:  # the user's constructor: any error it raises is bad input
        raise bad(f"{class_name}() failed: {type(exc).__name__}: {exc}") from exc


def _importable_here() -> str | None:
    """Put the current directory on ``sys.path`` (last: a module there never shadows an installed
    one), as ``python -m`` does and the installed ``eventstore`` script does not; return it."""
    try:
        here = os.getcwd()
    except OSError:  # the directory was removed under the process
        return None
    if here not in sys.path:
        sys.path.append(here)
    return here
