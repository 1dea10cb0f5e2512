"""Waiting between attempts of a write that lost a race: jittered, exponential, capped, within a budget."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime

from .aio import pause

__all__ = ["FIRST_WAIT", "LONGEST_WAIT", "RACE_BUDGET", "Backoff"]

RACE_BUDGET = 10.0
"""Seconds a write goes on retrying lost races before it gives up with ``ConcurrencyError``."""
FIRST_WAIT, LONGEST_WAIT = 0.002, 0.05  # the bounds of one wait, seconds


class Backoff:
    """The waits of one write between its lost races.

    Each wait is drawn uniformly below a cap that starts at ``FIRST_WAIT``
    and doubles up to ``LONGEST_WAIT``, so writers that collided once spread
    out instead of colliding again in step ("full jitter"), and one that keeps
    losing is never parked for long while newcomers write. ``wait`` says no
    once ``RACE_BUDGET`` seconds have passed since the first lost race, by
    ``clock`` or, should that clock stand still (a frozen one), by the waits
    themselves. The module-level ``random`` is reseeded in a forked child, so
    forked writers do not draw the same waits.
    """

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._started: datetime | None = None  # the clock is only read once a race is lost
        self._waited = 0.0
        self._cap = FIRST_WAIT
        self.attempts = 1

    def wait(self) -> bool:
        """Wait before the next attempt and return True; False once the budget is spent."""
        now = self._clock()
        if self._started is None:
            self._started = now
        spent = max((now - self._started).total_seconds(), self._waited)
        if spent >= RACE_BUDGET:
            return False
        seconds = random.uniform(0.0, min(self._cap, RACE_BUDGET - spent))
        self._cap = min(2 * self._cap, LONGEST_WAIT)
        pause(seconds)  # under eventstore.aio, the event loop runs on meanwhile
        self._waited += seconds
        self.attempts += 1
        return True
