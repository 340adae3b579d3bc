"""The renewal plan's rule (worker/rules/renewal_plan.py) as tables: when a server's renewal is
due under its policy, how many days away, what state it is in, and what a window keeps."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime, timedelta

import pytest

from worker.records import Replacement, Server, Token
from worker.rules.policy import Policy, PolicyLayer, effective
from worker.rules.renewal_plan import (
    EXPIRED,
    KEY_KEPT,
    KEY_STAGED,
    KEY_WANTED,
    OVERDUE,
    PLANNED,
    RENEWAL_OPEN,
    REPLACEMENT_OPEN,
    in_window,
    plan_entry,
    plan_order,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EXPIRES = datetime(2026, 6, 30, 9, 30, tzinfo=UTC)


def server(name="Lab", org="", staged=None, sid="srv_1"):
    return Server(
        id=sid,
        name=name,
        org=org,
        created_at=NOW - timedelta(days=400),
        current_key_id="key_1",
        staged_key_id=staged,
        token_id="tok_1",
    )


def token(expires=EXPIRES, renewal_opened=None, tid="tok_1"):
    return Token(
        id=tid,
        server_id="srv_1",
        consumer_id="CK_x",
        fingerprint="f",
        downloaded_by="a@school.example",
        downloaded_at=expires - timedelta(days=365),
        expires_at=expires,
        installed_at=expires - timedelta(days=364),
        key_id="key_1",
        renewal_opened=renewal_opened,
    )


def replacement(status="open"):
    return Replacement(
        token_id="tok_1",
        server_id="srv_1",
        status=status,
        opened_at="2026-02-01T00:00:00Z",
        resolved_at=None,
        resolved_by=None,
        reasons=[],
    )


@pytest.mark.parametrize(
    ("renew_before", "expires", "due", "days"),
    [
        # the built-in 30 days: due 30 days before expiry, to the second
        (None, EXPIRES, EXPIRES - timedelta(days=30), 90),
        (60, EXPIRES, EXPIRES - timedelta(days=60), 60),
        # due in 23 hours: 0 days (whole days, rounded down)
        (1, NOW + timedelta(days=1, hours=23), NOW + timedelta(hours=23), 0),
        # due an hour ago: -1 (overdue)
        (1, NOW + timedelta(hours=23), NOW - timedelta(hours=1), -1),
        (300, EXPIRES, EXPIRES - timedelta(days=300), -180),
    ],
)
def test_the_renewal_falls_due_renew_before_days_ahead_of_expiry(renew_before, expires, due, days):
    policy = effective(server=PolicyLayer(renew_before_days=renew_before))
    entry = plan_entry(server(), token(expires), policy, None, NOW)
    assert entry.due_at == due
    assert entry.days_until_due == days
    assert entry.due_date == due.date()
    assert entry.expires_at == expires


@pytest.mark.parametrize(
    ("expires", "opened", "replaced", "state"),
    [
        (EXPIRES, None, None, PLANNED),
        (NOW + timedelta(days=10), None, None, OVERDUE),
        (NOW + timedelta(days=10), None, replacement(), REPLACEMENT_OPEN),
        (NOW + timedelta(days=10), NOW - timedelta(days=1), replacement(), RENEWAL_OPEN),
        # a replacement resolved is no longer open
        (NOW + timedelta(days=10), None, replacement("resolved"), OVERDUE),
        (EXPIRES, None, replacement(), REPLACEMENT_OPEN),
        (NOW, None, None, EXPIRED),
        (NOW - timedelta(days=3), NOW - timedelta(days=33), replacement(), EXPIRED),
    ],
)
def test_the_state_says_how_far_the_renewal_has_come(expires, opened, replaced, state):
    entry = plan_entry(server(), token(expires, opened), Policy(), replaced, NOW)
    assert entry.state == state
    assert entry.replacement_open == (replaced is not None and replaced.status == "open")
    assert entry.renewal_opened == opened


@pytest.mark.parametrize(
    ("rotate", "staged", "column"),
    [
        ("never", None, KEY_KEPT),
        ("always", None, KEY_WANTED),
        ("always", "key_2", KEY_STAGED),
        # a key staged by hand (`keys rotate`) on a server that keeps its key
        ("never", "key_2", KEY_STAGED),
    ],
)
def test_the_new_key_column_says_whether_a_key_is_staged(rotate, staged, column):
    policy = effective(server=PolicyLayer(rotate_key=rotate))
    entry = plan_entry(server(staged=staged), token(), policy, None, NOW)
    assert entry.new_key == column
    assert entry.new_key_staged == (staged is not None)


def test_the_owners_and_the_layer_each_value_came_from_are_in_the_entry():
    policy = effective(
        server=PolicyLayer(owners=("lead@school.example",)),
        org=PolicyLayer(renew_before_days=45),
        default=PolicyLayer(rotate_key="always"),
    )
    described = plan_entry(server(org="North"), token(), policy, None, NOW).describe()
    assert described["owners"] == ["lead@school.example"]
    assert described["renew_before_days"] == 45
    assert described["rotate_key"] == "always"
    assert described["policy_from"] == {
        "renew_before_days": "org",
        "rotate_key": "global",
        "owners": "server",
    }
    assert described["org"] == "North"
    assert described["due_at"] == "2026-05-16T09:30:00Z"
    assert described["due_date"] == "2026-05-16"
    assert described["new_key_staged"] is False


@pytest.mark.parametrize(
    ("due_in", "within", "kept"),
    [
        (timedelta(days=-40), 0, True),  # the overdue are always kept
        (timedelta(0), 0, True),
        (timedelta(seconds=1), 0, False),
        (timedelta(days=30), 30, True),
        (timedelta(days=30, seconds=1), 30, False),
        (timedelta(days=399), 400, True),
        (timedelta(days=500), None, True),  # None: every entry
    ],
)
def test_a_window_keeps_what_falls_due_by_its_end(due_in, within, kept):
    expires = NOW + due_in + timedelta(days=30)
    entry = plan_entry(server(), token(expires), Policy(), None, NOW)
    assert in_window(entry, NOW, within) is kept


def test_the_plan_is_ordered_by_due_date_then_organization_and_name():
    def entry(name, org, days, sid):
        return plan_entry(
            server(name, org, sid=sid), token(NOW + timedelta(days=days)), Policy(), None, NOW
        )

    entries = [
        entry("b", "South", 50, "s1"),
        entry("a", "south", 50, "s2"),
        entry("Z", "", 40, "s3"),
        entry("c", "North", 50, "s4"),
        entry("A", "South", 50, "s5"),
    ]
    ordered = sorted(entries, key=plan_order)
    assert [(e.server, e.org) for e in ordered] == [
        ("Z", ""),
        ("c", "North"),
        ("a", "south"),
        ("A", "South"),
        ("b", "South"),
    ]
    assert ordered[0].due_date == date(2026, 3, 11)


def test_the_last_change_is_the_install_or_the_renewal_opening():
    installed = token()
    assert plan_entry(server(), installed, Policy(), None, NOW).last_changed == (
        installed.installed_at
    )
    opened = token(renewal_opened=NOW - timedelta(days=2))
    assert plan_entry(server(), opened, Policy(), None, NOW).last_changed == NOW - timedelta(days=2)


def test_the_plan_rule_imports_no_io_library():
    code = (
        "import sys\n"
        "import worker.rules.renewal_plan\n"
        "bad = [m for m in ('redis', 'dramatiq', 'structlog', 'httpx', 'icalendar') "
        "if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
