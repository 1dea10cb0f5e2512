"""Which statements of a piece of SQL end (or begin) a transaction, read as the database reads it.

A projection's fold may not COMMIT or ROLLBACK the transaction it folds in
(``projection.py``), so its SQL is read before it runs. Words inside string
literals, quoted names and comments are not statements: each backend's forms
of them are skipped as its own lexer skips them. SQLite: ``'..'`` (``''`` a
quote), ``".."``, ``[..]`` and ```..``` names, ``--`` and ``/* */``
comments. PostgreSQL: ``'..'``, ``E'..'`` with backslash escapes (and
``'..'`` too when ``standard_conforming_strings`` is off), ``$tag$..$tag$``,
``".."`` names, ``--`` comments and nested ``/* */`` comments; a name may
hold ``$``, so ``a$t$`` opens no dollar quote.

A routine's body of statements is part of the statement that creates it, as
each database parses it: PostgreSQL's SQL-standard body ``CREATE [OR
REPLACE] FUNCTION|PROCEDURE ... BEGIN ATOMIC ...; END`` and SQLite's
``CREATE [TEMP] TRIGGER ... BEGIN ...; END``. Inside one, each ``CASE`` has
its ``END`` and the last ``END`` closes the body (both words are reserved).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_START = "A-Za-z_\x80-\U0010ffff"
_WORD = f"[{_START}][{_START}0-9$]*"  # a name may hold $ and digits after its first character

_COMMON = {
    "space": r"\s+",
    "line": r"--[^\n]*",
    "name": r'"(?:[^"]|"")*(?:"|\Z)',
    "number": r"[0-9][A-Za-z0-9_$.]*",  # its tail is never the start of a literal
    "end": ";",
}
_SQLITE = {
    **_COMMON,
    "comment": r"/\*.*?(?:\*/|\Z)",
    "string": r"'(?:[^']|'')*(?:'|\Z)",
    "bracket": r"\[[^\]]*(?:\]|\Z)",
    "backtick": r"`(?:[^`]|``)*(?:`|\Z)",
    "word": _WORD,
}
_ESCAPED = r"'(?:[^'\\]|''|\\.)*(?:'|\Z)"
_POSTGRESQL = {
    **_COMMON,
    "comment": r"/\*",  # nested: closed by _comment_end
    "estring": f"[eE]{_ESCAPED}",
    "string": r"'(?:[^']|'')*(?:'|\Z)",
    "param": r"\$[0-9]+",
    "dollar": f"\\$(?:[{_START}][{_START}0-9]*)?\\$",  # closed by the same delimiter
    "word": _WORD,
}


def _lexer(tokens: dict[str, str]) -> re.Pattern[str]:
    alternatives = [f"(?P<{kind}>{pattern})" for kind, pattern in tokens.items()]
    return re.compile("|".join([*alternatives, "."]), re.DOTALL)  # "." a character of no token


_LEXERS = {
    ("sqlite", True): _lexer(_SQLITE),
    ("postgresql", True): _lexer(_POSTGRESQL),
    ("postgresql", False): _lexer({**_POSTGRESQL, "string": _ESCAPED}),
}
_SKIPPED = frozenset(
    {"space", "line", "comment", "name", "string", "estring", "bracket", "backtick", "dollar"}
)
_NESTING = re.compile(r"/\*|\*/")


def statement_words(sql: str, dialect: str, *, standard_strings: bool = True) -> Iterator[list[str]]:
    """The first three words (lower case) of each statement of ``sql``, literals and comments skipped.

    ``standard_strings``: PostgreSQL's ``standard_conforming_strings``; off,
    a backslash escapes a quote in ``'..'`` too.
    """
    lexer = _LEXERS[(dialect, standard_strings or dialect != "postgresql")]
    words: list[str] = []
    routine = _Routine(dialect)
    at = 0
    while at < len(sql):
        token = lexer.match(sql, at)
        if token is None:  # never: "." matches any character
            break
        kind, at = token.lastgroup, token.end()
        if kind == "end" and not routine.inside:
            yield words
            words, routine = [], _Routine(dialect)
        elif kind == "comment" and dialect == "postgresql":
            at = _comment_end(sql, at)
        elif kind == "dollar":
            close = sql.find(token.group(), at)
            at = len(sql) if close < 0 else close + len(token.group())
        elif kind == "word":
            routine.read(token.group().lower())
            if len(words) < 3:
                words.append(token.group().lower())
        elif kind not in _SKIPPED and kind != "end" and not words:
            words.append(token.group())  # a statement that starts with something else is no end
    yield words


class _Routine:
    """Follows the words of a statement through the body of statements of a routine it creates."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.head: list[str] | None = []  # the words so far, while a body may open
        self.depth = 0  # inside the body: 1 + its CASEs not yet closed by an END

    @property
    def inside(self) -> bool:
        return self.depth > 0

    def read(self, word: str) -> None:
        if self.depth:
            self.depth += {"case": 1, "end": -1}.get(word, 0)
        elif self.head is not None:
            head = self.head = [*self.head, word]
            creates = self._creates_a_routine(head)
            opening = ["begin", "atomic"] if self.dialect == "postgresql" else ["begin"]
            if creates and head[-len(opening) :] == opening:
                self.depth, self.head = 1, None  # a closed body opens no other
            elif len(head) >= 4 and not creates:
                self.head = None

    def _creates_a_routine(self, head: list[str]) -> bool:
        words = [word for word in head[:4] if word not in ("or", "replace", "temp", "temporary")]
        kinds = ("function", "procedure") if self.dialect == "postgresql" else ("trigger",)
        return len(words) > 1 and words[0] == "create" and words[1] in kinds


def _comment_end(sql: str, at: int) -> int:
    """Where a PostgreSQL comment opened just before ``at`` ends: its ``/*`` and ``*/`` nest."""
    depth = 1
    for mark in _NESTING.finditer(sql, at):
        depth += 1 if mark.group() == "/*" else -1
        if depth == 0:
            return mark.end()
    return len(sql)


def transaction_end(sql: str, dialect: str, *, standard_strings: bool = True) -> str | None:
    """The statement of ``sql`` that ends or begins a transaction (``"COMMIT"``, ``"ROLLBACK"``...), or
    None: ``SAVEPOINT``, ``RELEASE`` and ``ROLLBACK TO`` stay inside it."""
    for words in statement_words(sql, dialect, standard_strings=standard_strings):
        first, rest = (words[0], words[1:]) if words else ("", [])
        if first in ("commit", "end", "abort", "begin"):
            return first.upper()
        if first in ("start", "prepare") and rest[:1] == ["transaction"]:
            return f"{first} transaction".upper()
        if first == "rollback" and "to" not in rest[:2]:  # ROLLBACK [WORK | TRANSACTION] TO a savepoint
            return "ROLLBACK"
    return None
