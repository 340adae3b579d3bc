"""The scheduler's time arithmetic, as tables of timezone-aware times."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from scheduler.thresholds import EXPIRED, days_left, is_more_urgent, level_at, next_check_at
from worker.config import DEFAULT_THRESHOLDS

EXPIRES = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)
LEAP_EXPIRY = datetime(2028, 3, 1, 0, 0, tzinfo=UTC)  # 2028 is a leap year
PLUS_TWO = timezone(timedelta(hours=2))


@pytest.mark.parametrize(
    ("now", "level"),
    [
        (EXPIRES - timedelta(days=200), None),
        (EXPIRES - timedelta(days=120, seconds=1), None),
        (EXPIRES - timedelta(days=120), 120),  # exactly on the boundary: crossed
        (EXPIRES - timedelta(days=119), 120),
        (EXPIRES - timedelta(days=60), 60),
        (EXPIRES - timedelta(days=29, hours=23), 30),
        (EXPIRES - timedelta(days=1), 1),
        (EXPIRES - timedelta(seconds=1), 1),
        (EXPIRES, EXPIRED),
        (EXPIRES + timedelta(days=40), EXPIRED),
        # the same instant written in another zone is the same level
        ((EXPIRES - timedelta(days=14)).astimezone(PLUS_TWO), 14),
    ],
)
def test_the_level_is_the_most_urgent_threshold_crossed(now, level):
    assert level_at(EXPIRES, now, DEFAULT_THRESHOLDS) == level


@pytest.mark.parametrize(
    ("now", "level"),
    [
        # 30 days before 2028-03-01 is 2028-01-31 (February has 29 days that year)
        (datetime(2028, 1, 31, 0, 0, tzinfo=UTC), 30),
        (datetime(2028, 1, 30, 23, 59, 59, tzinfo=UTC), 60),
        # 1 day before is the leap day itself
        (datetime(2028, 2, 29, 0, 0, tzinfo=UTC), 1),
        (datetime(2028, 2, 28, 23, 59, tzinfo=UTC), 3),
    ],
)
def test_leap_days_count_as_days(now, level):
    assert level_at(LEAP_EXPIRY, now, DEFAULT_THRESHOLDS) == level


@pytest.mark.parametrize(
    ("level", "last_sent", "warn"),
    [
        (None, None, False),
        (120, None, True),
        (60, 120, True),
        (60, 60, False),
        (120, 60, False),  # never backwards
        (EXPIRED, 1, True),
        (EXPIRED, EXPIRED, False),
        # once the 14-day warning went out (installed with 10 days left), no larger one follows
        (120, 14, False),
        (30, 14, False),
        (7, 14, True),
    ],
)
def test_a_warning_is_due_only_for_a_more_urgent_level(level, last_sent, warn):
    assert is_more_urgent(level, last_sent) is warn


def test_a_token_installed_with_less_time_left_than_the_largest_threshold_gets_one_warning():
    now = EXPIRES - timedelta(days=10)
    level = level_at(EXPIRES, now, DEFAULT_THRESHOLDS)
    assert level == 14
    assert next_check_at(EXPIRES, level, DEFAULT_THRESHOLDS) == EXPIRES - timedelta(days=7)


@pytest.mark.parametrize(
    ("level", "next_at"),
    [
        (None, EXPIRES - timedelta(days=120)),
        (120, EXPIRES - timedelta(days=60)),
        (3, EXPIRES - timedelta(days=1)),
        (1, EXPIRES),
        (EXPIRED, None),
    ],
)
def test_the_next_check_is_the_next_crossing(level, next_at):
    assert next_check_at(EXPIRES, level, DEFAULT_THRESHOLDS) == next_at


@pytest.mark.parametrize(
    ("now", "days"),
    [
        (EXPIRES - timedelta(days=30), 30),
        (EXPIRES - timedelta(days=29, hours=1), 29),
        (EXPIRES - timedelta(hours=5), 0),
        (EXPIRES + timedelta(days=3), 0),
    ],
)
def test_days_left_round_down(now, days):
    assert days_left(EXPIRES, now) == days


@pytest.mark.parametrize(
    ("attempts_made", "wait_s"),
    [
        (1, 5),
        (2, 300),
        (3, 1800),
        (4, 7200),
        (5, 18000),
        (6, 36000),
        (7, 36000),
        (8, None),
        (0, None),
    ],
)
def test_the_retry_schedule_is_standard_webhooks(attempts_made, wait_s):
    from worker.notify.schedule import DEFAULT_SCHEDULE_S, next_attempt_at

    at = next_attempt_at(attempts_made, EXPIRES, DEFAULT_SCHEDULE_S, jitter=0)
    assert at == (None if wait_s is None else EXPIRES + timedelta(seconds=wait_s))


def test_retry_jitter_stays_within_its_share():
    import random

    from worker.notify.schedule import next_attempt_at

    rng = random.Random(1)
    waits = {
        (next_attempt_at(2, EXPIRES, (300, 600), 0.1, rng) - EXPIRES).total_seconds()
        for _ in range(200)
    }
    assert min(waits) >= 540 and max(waits) <= 660
    assert len(waits) > 100
