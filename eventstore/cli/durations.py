"""How long something took, as the commands print it: never a negative duration.

Times are the store clock's, which can step back (an NTP correction) between
two events, so an end can be recorded before its start. That difference is
no duration: it is shown as unknown, with the reason, not as ``-96830363.30s``.
"""

from __future__ import annotations

from .output import took

UNKNOWN = "unknown (clock stepped back)"
"""What a duration whose end was recorded before its start reads as."""


def lasted(seconds: float) -> str:
    """``took(seconds)``, or ``UNKNOWN`` for a negative difference."""
    return took(seconds) if seconds >= 0 else UNKNOWN
