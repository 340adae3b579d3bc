"""What a directory's answer about a watched person decides (worker/rules/directory.py): tables
of answers, downloads and recorded causes, and the event each makes, or none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from events import catalog
from worker.directories.base import Observation, Unobserved
from worker.rules import directory as rules
from worker.rules.directory import WatchedUser, judge
from worker.rules.replacement import Cause

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SOURCE = rules.source_uri("staff")
DOWNLOADED = NOW - timedelta(days=30)


def watched(*downloads: datetime, **causes: datetime) -> WatchedUser:
    recorded = {
        catalog.PASSWORD_CHANGED if kind == "password" else catalog.USER_LEFT: Cause(
            catalog.PASSWORD_CHANGED if kind == "password" else catalog.USER_LEFT,
            "earlier",
            "urn:x",
            when,
        )
        for kind, when in causes.items()
    }
    return WatchedUser("ann@school.example", "Ann@school.example", downloads or (DOWNLOADED,),
                       recorded)  # fmt: skip


def seen(**fields) -> Observation:
    return Observation(login="ann@school.example", **{"found": True, **fields})


def test_an_enabled_user_without_password_change_is_unchanged():
    finding = judge(watched(), seen(status="ACTIVE"), source=SOURCE, now=NOW)
    assert (finding.outcome, finding.detail, finding.event) == (rules.UNCHANGED, "ACTIVE", None)


def test_a_password_changed_after_the_download_is_told_at_its_time():
    changed = DOWNLOADED + timedelta(days=2)
    finding = judge(watched(), seen(password_changed_at=changed), source=SOURCE, now=NOW)
    assert finding.outcome == rules.PASSWORD_CHANGED
    assert finding.event.type == catalog.PASSWORD_CHANGED
    assert finding.event.time == changed
    assert finding.event.source == SOURCE
    assert finding.event.user() == "Ann@school.example"


def test_a_password_changed_before_the_download_does_nothing():
    changed = DOWNLOADED - timedelta(seconds=1)
    finding = judge(watched(), seen(password_changed_at=changed), source=SOURCE, now=NOW)
    assert finding.outcome == rules.UNCHANGED and finding.event is None
    assert "before the download" in finding.detail


def test_a_password_change_already_recorded_is_not_told_again():
    changed = DOWNLOADED + timedelta(days=2)
    # Pushed by the directory a second later than its own timestamp: the same change.
    recorded = watched(password=changed + timedelta(seconds=1))
    finding = judge(recorded, seen(password_changed_at=changed), source=SOURCE, now=NOW)
    assert finding.outcome == rules.ALREADY_KNOWN and finding.event is None


def test_a_later_password_change_dooming_a_token_the_recorded_one_spared_is_told():
    first_change = DOWNLOADED + timedelta(days=1)
    second_token = DOWNLOADED + timedelta(days=3)  # downloaded after the first change
    second_change = DOWNLOADED + timedelta(days=5)
    user = watched(DOWNLOADED, second_token, password=first_change)
    finding = judge(user, seen(password_changed_at=second_change), source=SOURCE, now=NOW)
    assert finding.outcome == rules.PASSWORD_CHANGED and finding.event.time == second_change


def test_the_same_change_seen_twice_makes_the_same_event_id():
    changed = DOWNLOADED + timedelta(days=2)
    first = judge(watched(), seen(password_changed_at=changed), source=SOURCE, now=NOW)
    again = judge(
        watched(), seen(password_changed_at=changed), source=SOURCE, now=NOW + timedelta(minutes=5)
    )
    other = judge(
        watched(), seen(password_changed_at=changed + timedelta(seconds=1)), source=SOURCE, now=NOW
    )
    assert first.event.id == again.event.id
    assert other.event.id != first.event.id


def test_a_password_change_ahead_of_our_clock_is_taken_as_now():
    finding = judge(
        watched(), seen(password_changed_at=NOW + timedelta(hours=1)), source=SOURCE, now=NOW
    )
    assert finding.event.time == NOW


@pytest.mark.parametrize(
    ("fields", "outcome"),
    [
        ({"enabled": False, "status": "SUSPENDED"}, rules.LEFT),
        ({"enabled": False, "status": "accountEnabled=false"}, rules.LEFT),
        ({"found": False, "enabled": False, "status": "not found"}, rules.NOT_FOUND),
    ],
)
def test_a_disabled_or_missing_user_has_left(fields, outcome):
    finding = judge(watched(), seen(**fields), source=SOURCE, now=NOW)
    assert finding.outcome == outcome
    assert finding.event.type == catalog.USER_LEFT
    assert finding.event.time == NOW  # the directory said not when: now dooms every download


def test_a_departure_wins_over_a_password_change():
    answer = seen(enabled=False, password_changed_at=DOWNLOADED + timedelta(days=1))
    assert judge(watched(), answer, source=SOURCE, now=NOW).event.type == catalog.USER_LEFT


def test_a_departure_is_at_the_directorys_time_when_it_follows_the_downloads():
    changed = DOWNLOADED + timedelta(days=4)
    answer = seen(enabled=False, status="DEPROVISIONED", status_changed_at=changed)
    assert judge(watched(), answer, source=SOURCE, now=NOW).event.time == changed
    before = seen(enabled=False, status_changed_at=DOWNLOADED - timedelta(days=1))
    assert judge(watched(), before, source=SOURCE, now=NOW).event.time == NOW


def test_a_departure_already_recorded_is_not_told_again_until_a_newer_download():
    recorded = watched(left=DOWNLOADED + timedelta(days=1))
    finding = judge(recorded, seen(enabled=False), source=SOURCE, now=NOW)
    assert finding.outcome == rules.ALREADY_KNOWN and finding.event is None
    newer = watched(DOWNLOADED, DOWNLOADED + timedelta(days=2), left=DOWNLOADED + timedelta(days=1))
    assert judge(newer, seen(enabled=False), source=SOURCE, now=NOW).outcome == rules.LEFT


def test_the_departure_event_id_follows_the_latest_download_not_the_clock():
    first = judge(watched(), seen(enabled=False), source=SOURCE, now=NOW)
    later = judge(watched(), seen(enabled=False), source=SOURCE, now=NOW + timedelta(minutes=5))
    assert first.event.id == later.event.id  # two rounds before the workers record it


def test_an_unobserved_user_concludes_nothing():
    finding = judge(watched(), Unobserved("ann@school.example", "HTTP 500"), source=SOURCE, now=NOW)
    assert (finding.outcome, finding.detail, finding.event) == (rules.UNOBSERVED, "HTTP 500", None)
