"""Counts in words for the store's messages, logs and CLI alike: ``1 problem``, ``2 problems``."""

from __future__ import annotations


def counted(count: int, noun: str) -> str:
    """``1 flow``, ``2 flows``, ``1,234 events``: a count with its noun, plural unless one."""
    return f"{count:,} {nouns(count, noun)}"


def nouns(count: int, noun: str) -> str:
    """``noun`` as it goes with ``count``: ``table`` for one, ``tables`` for any other number."""
    return noun if count == 1 else f"{noun}s"
