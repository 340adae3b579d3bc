"""When a token is warned about: pure time arithmetic, `now` always passed in.

A token crosses threshold T (days) at `expires_at - T days`. At any moment its *level* is the
smallest threshold it has crossed (the most urgent), or EXPIRED once `now >= expires_at`, or
None before the largest threshold. A warning is due when the level is more urgent than the last
one sent: so a scan after a gap sends only the most urgent threshold crossed, never a backlog.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from worker.rules.status import days_left as days_left  # the status shows it too

#: The level of a token at or past its expiry.
EXPIRED = 0


def level_at(expires_at: datetime, now: datetime, thresholds: Sequence[int]) -> int | None:
    """The most urgent threshold crossed at `now`, EXPIRED, or None (none crossed yet)."""
    if now >= expires_at:
        return EXPIRED
    crossed = [t for t in thresholds if now >= expires_at - timedelta(days=t)]
    return min(crossed) if crossed else None


def is_more_urgent(level: int | None, last_sent: int | None) -> bool:
    """Whether `level` calls for a warning, given the level last warned about."""
    if level is None:
        return False
    return last_sent is None or level < last_sent


def next_check_at(
    expires_at: datetime, level: int | None, thresholds: Sequence[int]
) -> datetime | None:
    """When the token next crosses something more urgent than `level`; None after expiry."""
    if level == EXPIRED:
        return None
    smaller = [t for t in thresholds if level is None or t < level]
    return expires_at - timedelta(days=max(smaller)) if smaller else expires_at
