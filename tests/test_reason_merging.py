"""The rules that keep a replacement's reasons merged and bounded, as tables, against the pure
rules (worker/rules/replacement.py): the store applies what they decide, it merges nothing."""

import pytest

from events import catalog
from worker.rules.replacement import (
    ADDED,
    DISPLACED,
    MAX_REASONS,
    MERGED,
    OMITTED,
    SAME,
    load_reasons,
    merge_reason,
    notifies,
    totals,
)

PW, LEFT, KEY, GEN = (
    catalog.PASSWORD_CHANGED,
    catalog.USER_LEFT,
    catalog.KEY_REGENERATED,
    catalog.TOKEN_GENERATED,
)
PLANNED = catalog.EXPIRY_APPROACHING


def at(minute: int) -> str:
    return f"2026-05-01T12:{minute:02d}:00Z"


def reason(kind=PW, first=("e1", 0), last=None, count=1, subject="admin@school.edu"):
    """A reason as stored: first and last seen as (event id, minute)."""
    urgency = catalog.URGENCY_BY_TYPE[kind]
    last = last or first
    return {
        "type": kind,
        "subject": subject,
        "id": first[0],
        "source": "urn:hr",
        "time": at(first[1]),
        "urgency": urgency.name,
        "rank": urgency.rank,
        "count": count,
        "last": {"id": last[0], "source": "urn:hr", "time": at(last[1])},
    }


def new(kind=PW, event_id="e9", minute=9, subject="admin@school.edu"):
    """A cause as it arrives: a reason of count 1."""
    return reason(kind, (event_id, minute), subject=subject)


# (stored reasons, omitted so far, new cause, cap) -> (reasons after, omitted after, change)
MERGES = {
    "the first cause opens the list": ([], 0, new(), 3, ([new()], 0, ADDED)),
    "one more of a kind is counted, and is the last seen": (
        [reason()],
        0,
        new(event_id="e2", minute=5),
        3,
        ([reason(first=("e1", 0), last=("e2", 5), count=2)], 0, MERGED),
    ),
    "an earlier one of a kind arriving late becomes the first seen": (
        [reason(first=("e5", 5), last=("e7", 7), count=2)],
        0,
        new(event_id="e1", minute=1),
        3,
        ([reason(first=("e1", 1), last=("e7", 7), count=3)], 0, MERGED),
    ),
    "at the same moment the first stays first and the newcomer is the last": (
        [reason(first=("e1", 3))],
        0,
        new(event_id="e2", minute=3),
        3,
        ([reason(first=("e1", 3), last=("e2", 3), count=2)], 0, MERGED),
    ),
    "the first event again changes nothing": (
        [reason(first=("e1", 0), last=("e4", 4), count=4)],
        0,
        new(event_id="e1", minute=0),
        3,
        ([reason(first=("e1", 0), last=("e4", 4), count=4)], 0, SAME),
    ),
    "the last event again changes nothing": (
        [reason(first=("e1", 0), last=("e4", 4), count=4)],
        0,
        new(event_id="e4", minute=4),
        3,
        ([reason(first=("e1", 0), last=("e4", 4), count=4)], 0, SAME),
    ),
    "another kind is a reason of its own": (
        [reason()],
        0,
        new(LEFT),
        3,
        ([reason(), new(LEFT)], 0, ADDED),
    ),
    "the same kind about someone else is a reason of its own": (
        [reason()],
        0,
        new(subject="other@school.edu"),
        3,
        ([reason(), new(subject="other@school.edu")], 0, ADDED),
    ),
    "full: one more of a kind kept is still counted": (
        [reason(PLANNED), reason(KEY), reason(LEFT)],
        0,
        new(KEY, "e2", 2),
        3,
        ([reason(PLANNED), reason(KEY, last=("e2", 2), count=2), reason(LEFT)], 0, MERGED),
    ),
    "full: a more urgent kind takes the place of the latest least urgent, never the first": (
        [reason(PLANNED), reason(KEY, count=2), reason(KEY, subject="x", count=3)],
        1,
        new(PW),
        3,
        ([reason(PLANNED), reason(KEY, count=2), new(PW)], 4, DISPLACED),
    ),
    "full: a kind no more urgent than those kept is only counted": (
        [reason(PLANNED), reason(PW), reason(LEFT)],
        2,
        new(GEN),
        3,
        ([reason(PLANNED), reason(PW), reason(LEFT)], 3, OMITTED),
    ),
}


@pytest.mark.parametrize(
    ("stored", "omitted", "cause", "cap", "expected"), MERGES.values(), ids=MERGES
)
def test_merging_a_cause_into_the_reasons(stored, omitted, cause, cap, expected):
    merged = merge_reason(stored, omitted, cause, cap)
    assert (merged.reasons, merged.omitted, merged.change) == expected


def test_the_reason_a_cause_ended_in_is_the_merged_one():
    merged = merge_reason([reason()], 0, new(event_id="e2", minute=5))
    assert merged.reason == reason(first=("e1", 0), last=("e2", 5), count=2)


def test_thousands_of_one_cause_stay_one_reason_and_many_kinds_stay_bounded():
    reasons, omitted = [], 0
    for n in range(3000):
        step = merge_reason(reasons, omitted, new(event_id=f"e{n}", minute=n % 60))
        reasons, omitted = step.reasons, step.omitted
    assert [r["count"] for r in reasons] == [3000]
    for n in range(MAX_REASONS + 5):
        step = merge_reason(reasons, omitted, new(LEFT, f"l{n}", subject=f"user-{n}"))
        reasons, omitted = step.reasons, step.omitted
    assert len(reasons) == MAX_REASONS
    assert reasons[0]["type"] == PW  # the first cause is kept
    assert totals(reasons, omitted) == {
        "reason_count": MAX_REASONS,
        "event_count": 3000 + MAX_REASONS + 5,
        "omitted_events": 6,
    }


def legacy(kind, event_id, minute):
    """A reason as recorded before reasons were merged: one per event, no count."""
    return {
        key: value
        for key, value in reason(kind, (event_id, minute)).items()
        if key not in ("subject", "count", "last")
    }


# stored reasons -> reasons as loaded
LOADS = {
    "merged reasons load as they are": ([reason(), reason(LEFT)], [reason(), reason(LEFT)]),
    "one reason per event, from before merging, is merged on the way in": (
        [legacy(PW, "e1", 1), legacy(LEFT, "e2", 2), legacy(PW, "e3", 3), legacy(PW, "e4", 0)],
        [
            {**legacy(PW, "e4", 0), "count": 3, "last": reason(first=("e3", 3))["last"]},
            {**legacy(LEFT, "e2", 2), "count": 1, "last": reason(first=("e2", 2))["last"]},
        ],
    ),
}


@pytest.mark.parametrize(("stored", "expected"), LOADS.values(), ids=LOADS)
def test_loading_stored_reasons(stored, expected):
    assert load_reasons(stored, 0) == (expected, 0)


# (opened, change, certificate changed) -> a new replacement_required is sent
NOTIFIES = [
    (True, ADDED, False, True),
    (False, ADDED, False, True),
    (False, DISPLACED, False, True),
    (False, MERGED, False, False),
    (False, OMITTED, False, False),
    (False, MERGED, True, True),
    (False, SAME, True, False),
]


@pytest.mark.parametrize(("opened", "change", "certificate_changed", "expected"), NOTIFIES)
def test_who_is_told_again(opened, change, certificate_changed, expected):
    assert notifies(opened=opened, change=change, certificate_changed=certificate_changed) is (
        expected
    )
