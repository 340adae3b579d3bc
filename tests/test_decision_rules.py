"""The decisions as values, without Redis: what a cause does to a token's replacement (open or
merge, urgency, the certificate carried, who is told again), as tables; and that the pure
decision modules import no I/O library."""

import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from events import catalog
from events.cloudevent import new_event
from scheduler.expiry import decide_scan
from worker.records import Server, Token
from worker.rules.decision import REPLACEMENT, VERSION, Decision, Guard
from worker.rules.events import advance, decide_event
from worker.rules.facts import (
    EventFacts,
    InstallFacts,
    Recorded,
    ReplacementFacts,
    ScanFacts,
    next_version,
)
from worker.rules.install import decide_install
from worker.rules.replacement import Cause, ReplacementNeeded
from worker.rules.replacing import replace_token

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
SERVER = Server(id="srv_1", name="Lab", org="", created_at=NOW - timedelta(days=400))
TOKEN = Token(
    id="tok_1",
    server_id=SERVER.id,
    consumer_id="c",
    fingerprint="f",
    downloaded_by="admin@school.edu",
    downloaded_at=NOW - timedelta(days=100),
    expires_at=NOW + timedelta(days=265),
    installed_at=NOW - timedelta(days=100),
    key_id="key_1",
)
PW, LEFT, KEY = catalog.PASSWORD_CHANGED, catalog.USER_LEFT, catalog.KEY_REGENERATED


def need(kind=PW, event_id="e1", certificate=None, minutes_ago=10):
    cause = Cause(kind, event_id, "urn:hr", NOW - timedelta(minutes=minutes_ago))
    return ReplacementNeeded(token=TOKEN, cause=cause, certificate=certificate)


def replacement_after(*needs, state=None):
    """The replacement after recording `needs` in a row, and the decision holding them."""
    decision = Decision(now=NOW)
    state = state or ReplacementFacts()
    for each in needs:
        state = replace_token(decision, state, each, SERVER, NOW)
    return state, decision


# needs recorded in a row -> (actions, replacement_required sent, urgency, reason counts)
RULES = {
    "the first cause opens the replacement and tells": (
        [need()],
        (["opened"], 1, "immediate", [1]),
    ),
    "one more of a kind is counted, not told": (
        [need(), need(event_id="e2")],
        (["opened", "reason merged (nothing new to tell)"], 1, "immediate", [2]),
    ),
    "the same event again changes nothing": (
        [need(), need()],
        (["opened", "none: same cause already recorded"], 1, "immediate", [1]),
    ),
    "a new kind is told again": (
        [need(KEY), need(LEFT, "e2")],
        (["opened", "reason added"], 2, "immediate", [1, 1]),
    ),
    "the urgency is the most urgent reason's": (
        [need(KEY)],
        (["opened"], 1, "soon", [1]),
    ),
    "a new certificate to upload is told even for a kind already told": (
        [need(KEY, "k1", "PEM-1"), need(KEY, "k2", "PEM-2")],
        (["opened", "reason merged"], 2, "soon", [2]),
    ),
}


@pytest.mark.parametrize(("needs", "expected"), RULES.values(), ids=RULES)
def test_what_a_cause_does_to_the_replacement(needs, expected):
    state, decision = replacement_after(*needs)
    actions = [entry["action"] for entry in decision.results]
    sent = [e for e in decision.outgoing if e["type"] == catalog.REPLACEMENT_REQUIRED]
    counts = [reason["count"] for reason in state.reasons]
    assert (actions, len(sent), sent[-1]["data"]["urgency"], counts) == expected


def test_the_certificate_to_upload_stays_with_the_replacement_when_reasons_are_added():
    state, decision = replacement_after(need(KEY, "k1", "PEM"), need(LEFT, "e2"))
    assert state.certificate == "PEM"
    assert [e["data"]["certificate"] for e in decision.outgoing] == ["PEM", "PEM"]
    # and only the change that brought it writes it
    assert [c.certificate_changed for c in decision.replacements] == [True, False]


def test_a_decision_guards_the_replacement_as_first_read_and_writes_its_last_state():
    opened = ReplacementFacts(status="open", opened_at="x", reasons=[], version="7")
    state, decision = replacement_after(need(), need(LEFT, "e2"), state=opened)
    assert decision.guards == [Guard(REPLACEMENT, TOKEN.id, VERSION, "7")]
    assert decision.replacements[-1].state == state


def test_versions_differ_for_different_changes_of_one_version():
    """Two decisions made on the same version must not write the same one (a later decision
    made on the first's result would pass a guard on the second's)."""
    assert next_version("7", "a", "now") != next_version("7", "b", "now")
    assert next_version("7", "a", "now") == next_version("7", "a", "now")
    assert next_version("7", "a", "now").isdigit()  # a user's version is also HINCRBY'd


def facts_for_user(tokens=(TOKEN,), replacement=None):
    return EventFacts(
        users={"admin@school.edu": Recorded()},
        user_tokens={"admin@school.edu": list(tokens)},
        servers={SERVER.id: SERVER},
        tokens={t.id: t for t in tokens},
        replacements={TOKEN.id: replacement or ReplacementFacts()},
    )


def password_change(event_id, minutes_ago=5, user="Admin@School.edu"):
    return new_event(
        PW, {"user": user}, source="urn:hr", time=NOW - timedelta(minutes=minutes_ago),
        event_id=event_id,
    )  # fmt: skip


def test_events_of_a_batch_are_decided_each_on_what_the_one_before_leaves():
    facts = facts_for_user()
    first = decide_event(facts, password_change("e1"), NOW)
    advance(facts, first)
    second = decide_event(facts, password_change("e2", minutes_ago=4), NOW)
    assert [e["action"] for e in first.results + second.results] == [
        "opened",
        "reason merged (nothing new to tell)",
    ]
    assert second.guards[-1].value == first.replacements[0].state.version
    assert [c.cause.id for c in first.causes + second.causes] == ["e1", "e2"]


def test_a_user_with_no_token_is_remembered_and_forgotten_in_time():
    decision = decide_event(facts_for_user(tokens=()), password_change("e1"), NOW)
    assert (decision.forget_users, decision.note, decision.replacements) == (
        ["admin@school.edu"],
        "no current token was downloaded by this user",
        [],
    )


def test_an_older_cause_than_the_one_recorded_is_not_remembered_again():
    facts = facts_for_user(tokens=())
    later = decide_event(facts, password_change("e1", minutes_ago=1), NOW)
    advance(facts, later)
    earlier = decide_event(facts, password_change("e0", minutes_ago=9), NOW)
    assert ([c.cause.id for c in later.causes], earlier.causes) == (["e1"], [])


def test_installing_a_token_after_a_cause_recorded_earlier_opens_its_replacement():
    newer = replace(TOKEN, id="tok_2", downloaded_at=NOW - timedelta(days=1))
    cause = Cause(PW, "e1", "urn:hr", NOW - timedelta(hours=1))
    old_replacement = ReplacementFacts(status="open", opened_at="t", reasons=[], version="3")
    facts = InstallFacts(SERVER, TOKEN, old_replacement, [cause])
    decision = decide_install(facts, newer, NOW)
    assert [e["action"] for e in decision.results] == ["opened", "replacement resolved"]
    assert [e["type"] for e in decision.outgoing] == [
        catalog.REPLACEMENT_REQUIRED,
        catalog.REPLACED,
    ]
    assert decision.audit.event["supersedes"] == TOKEN.id


# (days before expiry, level warned before, renewal opened) -> (warning type or None,
# replacement opened or extended). The default policy renews 30 days before expiry.
SCANS = {
    "before the largest threshold: nothing": (200, None, False, (None, False)),
    "a warning before renew-before is information": (
        100,
        None,
        False,
        (catalog.EXPIRY_APPROACHING, False),
    ),
    "renew-before reached: the renewal opens": (20, 60, False, (catalog.EXPIRY_APPROACHING, True)),
    "a later warning after the renewal only warns": (
        10,
        30,
        True,
        (catalog.EXPIRY_APPROACHING, False),
    ),
    "the same level again: nothing": (50, 60, False, (None, False)),
    "expiry is a reason too": (-1, 1, True, (catalog.EXPIRED, True)),
}


@pytest.mark.parametrize(("days", "warned", "renewed", "expected"), SCANS.values(), ids=SCANS)
def test_what_the_expiry_scan_decides(days, warned, renewed, expected):
    token = replace(
        TOKEN,
        expires_at=NOW + timedelta(days=days),
        warned=warned,
        renewal_opened=NOW - timedelta(days=1) if renewed else None,
    )
    decision, warning = decide_scan(ScanFacts(token, SERVER), NOW, (120, 60, 30, 14, 7, 3, 1))
    assert (warning.type if warning else None, bool(decision.replacements)) == expected


PURE_MODULES = (
    "worker.rules.decision",
    "worker.rules.events",
    "worker.rules.facts",
    "worker.rules.install",
    "worker.rules.replacement",
    "worker.rules.replacing",
    "worker.rules.apple",
    "worker.apple.verdicts",
    "scheduler.expiry",
)


def test_the_decision_modules_import_no_io_library():
    probe = (
        "import sys\n"
        f"for name in {PURE_MODULES!r}: __import__(name)\n"
        "print(' '.join(sorted(m for m in ('redis', 'dramatiq', 'structlog', 'apscheduler',"
        " 'httpx', 'oauthlib') if m in sys.modules)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    assert loaded == []
