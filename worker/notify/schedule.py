"""When a failed delivery is tried again: the Standard Webhooks schedule, with jitter. Pure."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta

#: Waits before attempts 2, 3, ... (the Standard Webhooks schedule): 5 s, 5 min, 30 min, 2 h,
#: 5 h, 10 h, 10 h. After the last, the delivery is marked failed (and kept).
DEFAULT_SCHEDULE_S = (5, 300, 1800, 7200, 18000, 36000, 36000)

#: Each wait is stretched or shrunk by up to this share, so retries do not arrive in herds.
DEFAULT_JITTER = 0.1


def next_attempt_at(
    attempts_made: int,
    now: datetime,
    schedule: Sequence[int],
    jitter: float = DEFAULT_JITTER,
    rng: random.Random | None = None,
) -> datetime | None:
    """When to try again after `attempts_made` failed attempts, or None when none are left."""
    if attempts_made < 1 or attempts_made > len(schedule):
        return None
    wait = schedule[attempts_made - 1]
    spread = (rng or random).uniform(-jitter, jitter) if jitter else 0.0
    return now + timedelta(seconds=wait * (1 + spread))
