"""The Store contract (see test_store_contract.py) for the checks with Apple: what Apple's
answers decide (worker/rules/apple.py), applied through `store.events.apply`, read back the
same from both stores; the guards that refuse a decision made on facts that moved; and the
schedule of checks (`store.apple`). Runs against the RedisStore and the InMemoryStore."""

from __future__ import annotations

from datetime import timedelta

import pytest

from events import catalog
from events.cloudevent import new_event
from tests.helpers import FIXTURE_NOW, install_on
from worker import registry
from worker.apple.verdicts import AppleAccount, CheckResult, Verdict
from worker.handling import EventHandler
from worker.names import user_key
from worker.records import AppleState, from_ms, ms_field, to_ms
from worker.rules.apple import decide_apple_check
from worker.rules.decision import REJECTED, SERVER, TERMS, TOKEN, Decision, Guard
from worker.rules.events import decide_event
from worker.rules.facts import NO_REPLACEMENT

NOW = FIXTURE_NOW
#: When Apple is asked: after the install, and not on a whole millisecond (both stores keep
#: times to the millisecond).
ASKED = NOW + timedelta(hours=2, microseconds=123_456)
#: ASKED as a store gives it back.
ASKED_MS = from_ms(to_ms(ASKED))
LEASE = timedelta(minutes=10)
ADMIN, TEACHER = "admin@x.org", "teacher@x.org"

ACCEPTED = CheckResult(
    Verdict.ACCEPTED,
    AppleAccount(server_uuid="UUID-1", server_name="Lab MDM", admin_id=ADMIN, org_name="X School"),
)
REJECTED_RESULT = CheckResult(Verdict.REJECTED, code="token_rejected", detail="HTTP 401")
TERMS_RESULT = CheckResult(Verdict.TERMS_NOT_ACCEPTED, code="T_C_NOT_SIGNED", detail="HTTP 403")


def add(store, name="Lab"):
    server, _ = registry.add_server(store, name, org=None, now=NOW)
    return server


def install(store, name="Lab", user=ADMIN, *, now=NOW, days=300):
    return install_on(store, name, user, now=now, days=days).token


def accepted_by(admin_id):
    account = AppleAccount(server_uuid="UUID-1", server_name="Lab MDM", admin_id=admin_id)
    return CheckResult(Verdict.ACCEPTED, account)


def decide(store, token_id, result, now=ASKED):
    """The decision on fresh facts, reading the record of the user Apple names, as the
    checker does."""
    admin = result.account.admin_id if result.account else None
    [facts] = store.apple.facts([token_id], {token_id: user_key(admin)} if admin else {})
    return decide_apple_check(facts, result, now)


def check(store, token_id, result, now=ASKED):
    return store.events.apply(decide(store, token_id, result, now)).outcome


def sent(store, event_type=None):
    return [e for e in store.events.outbox(limit=10_000) if event_type in (None, e["type"])]


def user_event(user, at):
    return new_event(catalog.PASSWORD_CHANGED, {"user": user}, source="urn:test", time=at)


def password_changed(store, user, at):
    event = user_event(user, at)
    EventHandler(store).handle(event, received_at=at, now=at)


# ---- what an answer decides, applied -----------------------------------------------------------


def test_an_accepted_check_is_kept_on_the_token_and_the_server(store):
    server = add(store)
    token = install(store)
    assert store.get_token(token.id).apple == AppleState()
    assert check(store, token.id, ACCEPTED) == "applied"
    assert store.get_token(token.id).apple == AppleState(
        verdict="accepted", checked_at=ASKED_MS, confirmed_at=ASKED_MS, server_uuid="UUID-1"
    )
    seen = store.get_server(server.id)
    assert (seen.apple_name, seen.apple_org, seen.terms_since) == ("Lab MDM", "X School", None)
    assert sent(store) == []


def test_no_answer_keeps_when_apple_last_confirmed_the_token(store):
    add(store)
    token = install(store)
    check(store, token.id, ACCEPTED)
    later = ASKED + timedelta(days=1)
    unreachable = CheckResult(Verdict.UNREACHABLE, code="http_503", detail="HTTP 503")
    assert check(store, token.id, unreachable, later) == "applied"
    state = store.get_token(token.id).apple
    assert (state.verdict, state.code) == ("unreachable", "http_503")
    assert state.checked_at == from_ms(to_ms(later))
    assert (state.confirmed_at, state.server_uuid) == (ASKED_MS, "UUID-1")
    assert sent(store) == []


def test_a_rejection_opens_the_replacement_and_is_told_once(store):
    add(store)
    token = install(store)
    assert check(store, token.id, REJECTED_RESULT) == "applied"
    state = store.get_token(token.id).apple
    assert (state.verdict, state.code, state.rejected_at) == (
        "rejected",
        "token_rejected",
        ASKED_MS,
    )
    [replacement] = store.events.replacements()
    assert replacement.token_id == token.id
    assert (replacement.most_urgent["type"], replacement.most_urgent["urgency"]) == (
        catalog.REJECTED_BY_APPLE,
        "immediate",
    )
    once = [e["type"] for e in sent(store)]
    assert once == [catalog.TOKEN_REJECTED, catalog.REPLACEMENT_REQUIRED]

    later = ASKED + timedelta(hours=6)
    assert check(store, token.id, REJECTED_RESULT, later) == "applied"
    state = store.get_token(token.id).apple
    assert (state.rejected_at, state.checked_at) == (ASKED_MS, from_ms(to_ms(later)))
    assert [e["type"] for e in sent(store)] == once
    assert store.events.replacements()[0].event_count == 1


def test_terms_are_told_once_and_their_end_too(store):
    server = add(store)
    token = install(store)
    assert check(store, token.id, TERMS_RESULT) == "applied"
    assert store.get_server(server.id).terms_since == ASKED_MS
    assert check(store, token.id, TERMS_RESULT, ASKED + timedelta(hours=1)) == "applied"
    assert [e["type"] for e in sent(store)] == [catalog.TERMS_NOT_ACCEPTED]
    assert store.events.replacements() == []

    assert check(store, token.id, ACCEPTED, ASKED + timedelta(hours=2)) == "applied"
    seen = store.get_server(server.id)
    assert (seen.terms_since, seen.apple_name, seen.apple_org) == (None, "Lab MDM", "X School")
    ended = sent(store)
    assert [e["type"] for e in ended] == [catalog.TERMS_NOT_ACCEPTED, catalog.TERMS_ACCEPTED]
    assert ended[1]["data"]["since"] == ended[0]["data"]["since"]


def test_apple_naming_another_downloader_moves_the_token_to_them(store):
    add(store)
    add(store, "Office")
    token = install(store)
    other = install(store, "Office")
    # Recorded for the user Apple names, after the download: it dooms the token once it is
    # theirs.
    password_changed(store, TEACHER, NOW + timedelta(hours=1))
    assert store.events.replacements() == []

    assert check(store, token.id, accepted_by("Teacher@X.org")) == "applied"
    moved = store.get_token(token.id)
    assert moved.downloaded_by == "Teacher@X.org"
    assert store.current_tokens_of_user(TEACHER) == [moved]
    assert store.current_tokens_of_user(ADMIN) == [store.get_token(other.id)]
    [replacement] = store.events.replacements()
    assert replacement.token_id == token.id
    assert replacement.most_urgent["type"] == catalog.PASSWORD_CHANGED
    [required] = sent(store, catalog.REPLACEMENT_REQUIRED)
    assert required["data"]["downloaded_by"] == "Teacher@X.org"

    [facts] = store.apple.facts([token.id], {})
    assert facts.downloader_tokens == (token.id,)
    assert catalog.PASSWORD_CHANGED in facts.downloader.causes
    # Apple naming the same person again changes nothing more.
    assert check(store, token.id, accepted_by(TEACHER), ASKED + timedelta(hours=1)) == "applied"
    assert store.current_tokens_of_user(TEACHER) == [store.get_token(token.id)]
    assert len(sent(store)) == 1


def test_a_token_moved_to_someone_unknown_leaves_them_when_it_is_superseded(store):
    add(store)
    token = install(store)
    assert check(store, token.id, accepted_by(TEACHER)) == "applied"
    assert store.current_tokens_of_user(ADMIN) == []
    assert [t.id for t in store.current_tokens_of_user(TEACHER)] == [token.id]
    newer = install(store, user="third@x.org", now=NOW + timedelta(days=1), days=360)
    assert store.current_tokens_of_user(TEACHER) == []
    assert store.current_tokens_of_user("third@x.org") == [newer]


# ---- decisions made on facts that moved -----------------------------------------------------


def test_a_second_rejection_decided_on_the_same_facts_is_refused(store):
    add(store)
    token = install(store)
    first, second = (
        decide(store, token.id, REJECTED_RESULT),
        decide(store, token.id, REJECTED_RESULT),
    )
    assert store.events.apply(first).outcome == "applied"
    before = (sent(store), store.events.replacements(), store.get_token(token.id))
    assert store.events.apply(second).outcome == "retry"
    assert (sent(store), store.events.replacements(), store.get_token(token.id)) == before


def test_pending_terms_decided_twice_on_the_same_facts_are_told_once(store):
    add(store)
    token = install(store)
    first, second = decide(store, token.id, TERMS_RESULT), decide(store, token.id, TERMS_RESULT)
    assert store.events.apply(first).outcome == "applied"
    assert store.events.apply(second).outcome == "retry"
    assert len(sent(store, catalog.TERMS_NOT_ACCEPTED)) == 1


def test_an_answer_about_a_token_superseded_meanwhile_is_refused(store):
    add(store)
    token = install(store)
    stale = decide(store, token.id, ACCEPTED)
    install(store, now=NOW + timedelta(days=1), days=360)
    assert store.events.apply(stale).outcome == "retry"
    assert store.get_token(token.id).apple == AppleState()
    [facts] = store.apple.facts([token.id], {})
    assert decide_apple_check(facts, ACCEPTED, ASKED).apple == []


def test_a_downloader_correction_is_refused_when_either_user_moved(store):
    add(store)
    add(store, "Office")
    token = install(store)
    stale_old = decide(store, token.id, accepted_by(TEACHER))
    install(store, "Office")  # the old downloader's record moves
    assert store.events.apply(stale_old).outcome == "retry"
    stale_new = decide(store, token.id, accepted_by(TEACHER))
    password_changed(store, TEACHER, NOW + timedelta(hours=1))  # the named user's record moves
    assert store.events.apply(stale_new).outcome == "retry"
    assert store.get_token(token.id).downloaded_by == ADMIN
    assert store.current_tokens_of_user(TEACHER) == []
    assert check(store, token.id, accepted_by(TEACHER)) == "applied"
    assert store.get_token(token.id).downloaded_by == TEACHER


def test_an_event_decided_before_the_token_moved_is_refused(store):
    """The move writes both users' records at a new version: an event about either, decided
    on what they held before, is decided again (so the teacher's password change dooms the
    token they now hold)."""
    add(store)
    token = install(store)
    at = NOW + timedelta(hours=1)
    stale = {
        user: decide_event(
            store.event_facts({user_key(user)}, set(), set()), user_event(user, at), at
        )
        for user in (ADMIN, TEACHER)
    }
    assert check(store, token.id, accepted_by(TEACHER)) == "applied"
    assert [store.events.apply(d).outcome for d in stale.values()] == ["retry", "retry"]
    assert store.events.replacements() == []
    password_changed(store, TEACHER, at)
    assert [r.token_id for r in store.events.replacements()] == [token.id]


def test_the_guards_on_rejection_and_terms_read_what_the_checks_wrote(store):
    server = add(store)
    token = install(store)
    rejected_unset = Guard(TOKEN, token.id, REJECTED, "")
    terms_unset = Guard(SERVER, server.id, TERMS, "")
    assert store.events.apply(Decision(now=NOW, guards=[rejected_unset, terms_unset])).outcome == (
        "applied"
    )
    check(store, token.id, TERMS_RESULT)
    check(store, token.id, REJECTED_RESULT, ASKED + timedelta(hours=1))
    for guard in (rejected_unset, terms_unset):
        assert store.events.apply(Decision(now=NOW, guards=[guard])).outcome == "retry"
    set_now = [
        Guard(TOKEN, token.id, REJECTED, ms_field(store.get_token(token.id).apple.rejected_at)),
        Guard(SERVER, server.id, TERMS, ms_field(store.get_server(server.id).terms_since)),
    ]
    assert store.events.apply(Decision(now=NOW, guards=set_now)).outcome == "applied"


# ---- the schedule ----------------------------------------------------------------------------


def test_an_installed_token_is_due_at_once_and_a_claim_leases_it(store):
    add(store)
    token = install(store)
    assert (store.apple.scheduled_count(), store.apple.due_count(NOW)) == (1, 1)
    assert store.apple.due_count(NOW - timedelta(milliseconds=1)) == 0
    assert store.apple.claim_due(NOW, 10, NOW + LEASE) == [token.id]
    assert store.apple.claim_due(NOW, 10, NOW + LEASE) == []
    assert store.apple.due_count(NOW) == 0 and store.apple.scheduled_count() == 1
    before_end = NOW + LEASE - timedelta(milliseconds=1)
    assert store.apple.claim_due(before_end, 10, before_end + LEASE) == []
    assert store.apple.claim_due(NOW + LEASE, 10, NOW + 2 * LEASE) == [token.id]


def test_claims_come_soonest_first_and_at_most_the_limit(store):
    ids = []
    for name in ("A", "B", "C"):
        add(store, name)
        ids.append(install(store, name).id)
    for minutes, token_id in zip((3, 1, 2), ids, strict=True):
        store.apple.schedule(token_id, NOW + timedelta(minutes=minutes))
    at = NOW + timedelta(minutes=10)
    assert store.apple.due_count(NOW + timedelta(minutes=2)) == 2
    assert store.apple.claim_due(at, 2, at + LEASE) == [ids[1], ids[2]]
    assert store.apple.claim_due(at, 2, at + LEASE) == [ids[0]]
    assert store.apple.claim_due(at, 2, at + LEASE) == []


def test_a_token_taken_out_is_not_put_back_by_a_conditional_schedule(store):
    add(store)
    token = install(store)
    store.apple.schedule(token.id, NOW + timedelta(hours=1), only_if_scheduled=True)
    assert store.apple.due_count(NOW) == 0 and store.apple.scheduled_count() == 1
    store.apple.unschedule([token.id, "tok_unknown"])
    store.apple.schedule(token.id, NOW, only_if_scheduled=True)
    assert store.apple.scheduled_count() == 0
    assert store.apple.claim_due(NOW + timedelta(days=1), 10, NOW + LEASE) == []
    store.apple.schedule(token.id, NOW)
    assert store.apple.claim_due(NOW, 10, NOW + LEASE) == [token.id]


def test_superseding_or_removing_takes_tokens_out_of_the_schedule(store):
    server = add(store)
    old = install(store)
    newer = install(store, now=NOW + timedelta(days=1), days=360)
    far = NOW + timedelta(days=30)
    assert store.apple.scheduled_count() == 1
    assert store.apple.claim_due(far, 10, far + LEASE) == [newer.id]
    assert old.id != newer.id
    store.remove_server(store.get_server(server.id))
    assert store.apple.scheduled_count() == 0


def test_the_tokens_installed_before_the_schedule_are_put_in_once_spread(store):
    tokens = []
    for name in ("A", "B", "C"):
        add(store, name)
        tokens.append(install(store, name))
    install(store, "C", now=NOW + timedelta(days=1), days=360)  # supersedes C's first token
    current = [t.id for t in tokens[:2]] + [store.get_server(tokens[2].server_id).token_id]
    store.apple.unschedule(current[1:])  # as if installed before there was a schedule
    spread = 3600
    later = NOW + timedelta(days=2)
    assert store.apple.backfill(later, spread) == 2
    assert store.apple.scheduled_count() == 3
    assert store.apple.due_count(later - timedelta(milliseconds=1)) == 1  # the one kept
    end = later + timedelta(seconds=spread)
    assert store.apple.due_count(end) == 3
    assert sorted(store.apple.claim_due(end, 10, end + LEASE)) == sorted(current)

    store.apple.unschedule(current)
    assert store.apple.backfill(later, spread) == 0
    assert store.apple.scheduled_count() == 0


def test_facts_for_a_check_with_and_without_the_named_user(store):
    server = add(store)
    token = install(store)
    password_changed(store, TEACHER, NOW + timedelta(hours=1))
    [plain] = store.apple.facts([token.id, "tok_unknown"], {})
    assert (plain.token, plain.server) == (store.get_token(token.id), store.get_server(server.id))
    assert plain.replacement == NO_REPLACEMENT
    assert plain.downloader_tokens == (token.id,) and plain.downloader.version != ""
    assert plain.named is None
    [named] = store.apple.facts([token.id], {token.id: user_key(TEACHER)})
    assert named.named is not None and named.named.version != ""
    assert list(named.named.causes) == [catalog.PASSWORD_CHANGED]
    [nobody] = store.apple.facts([token.id], {token.id: "nobody@x.org"})
    assert (nobody.named.version, nobody.named.causes) == ("", {})
    store.remove_server(store.get_server(server.id))
    assert store.apple.facts([token.id], {}) == []


@pytest.mark.parametrize("superseded", [False, True])
def test_current_tokens_leaves_out_the_superseded_and_the_gone(store, superseded):
    add(store)
    token = install(store)
    if superseded:
        install(store, now=NOW + timedelta(days=1), days=360)
    expected = [] if superseded else [store.get_token(token.id)]
    assert store.apple.current_tokens([token.id, "tok_unknown"]) == expected


@pytest.mark.parametrize("late", ["unreachable", "accepted"])
def test_a_check_answered_late_cannot_undo_a_rejection_or_terms_recorded_meanwhile(store, late):
    """A slow scheduled check read its facts before `tokens check` recorded a rejection (or
    terms): written as read, it would clear them, and the next check would alarm again."""
    add(store)
    token = install(store)
    result = (
        CheckResult(Verdict.UNREACHABLE, code="http_503")
        if late == "unreachable"
        else (accepted_by(ADMIN))
    )
    stale = decide(store, token.id, result)
    assert store.events.apply(decide(store, token.id, REJECTED_RESULT)).outcome == "applied"
    assert store.events.apply(stale).outcome == "retry"
    assert store.get_token(token.id).apple.rejected_at is not None
    check(store, token.id, REJECTED_RESULT)
    assert len(sent(store, catalog.TOKEN_REJECTED)) == 1
    # the same for terms
    add(store, "Office")
    other = install(store, "Office")
    stale = decide(store, other.id, result)
    assert store.events.apply(decide(store, other.id, TERMS_RESULT)).outcome == "applied"
    assert store.events.apply(stale).outcome == "retry"
    check(store, other.id, TERMS_RESULT)
    assert len(sent(store, catalog.TERMS_NOT_ACCEPTED)) == 1


def test_a_shorter_interval_brings_later_checks_forward_once(store):
    from worker.config import AppleSettings
    from worker.services.apple_checks import AppleChecker

    add(store)
    add(store, "Office")
    lab, office = install(store), install(store, "Office")
    store.apple.schedule(lab.id, NOW + timedelta(hours=5))
    store.apple.schedule(office.id, NOW + timedelta(minutes=30))
    store.apple.set_interval(21_600)
    checker = AppleChecker(store, apple=None, settings=AppleSettings(check_interval_s=3600))

    assert checker.reconcile_interval(NOW) == 1  # only the one beyond the new hour
    assert store.apple.interval() == 3600
    assert store.apple.due_count(NOW + timedelta(hours=1)) == 2
    assert checker.reconcile_interval(NOW) == 0
