"""What Apple's answer about a token decides (worker/rules/apple.py), how a person should read
the verdict kept (worker.apple.verdicts.standing), and what Apple's server uuid settles at
install (worker.rules.install.check_install): as tables, without Redis."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from events import catalog
from events.cloudevent import stable_id
from worker.apple.verdicts import STALE_INTERVALS, AppleAccount, CheckResult, Verdict, standing
from worker.errors import ConsumerKeyChanged
from worker.records import TOKEN_SUPERSEDED, AppleState, Server, Token, ms_field
from worker.rules.apple import decide_apple_check
from worker.rules.decision import (
    REJECTED,
    REPLACEMENT,
    STATUS,
    TERMS,
    USER,
    VERSION,
    AppleChecked,
    Decision,
    DownloaderCorrected,
    Guard,
    ServerSeenByApple,
)
from worker.rules.decision import SERVER as SERVER_RECORD
from worker.rules.decision import TOKEN as TOKEN_RECORD
from worker.rules.facts import AppleCheckFacts, Recorded, ReplacementFacts, next_version
from worker.rules.install import InstallOutcome, NewToken, check_install
from worker.rules.replacement import Cause, ReplacementNeeded
from worker.rules.replacing import replace_token
from worker.timefmt import format_rfc3339

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SERVER = Server(
    id="srv_1",
    name="Lab",
    org="North",
    created_at=NOW - 400 * DAY,
    token_id="tok_1",
    apple_name="Lab MDM",
    apple_org="North School",
)
TOKEN = Token(
    id="tok_1",
    server_id=SERVER.id,
    consumer_id="c",
    fingerprint="f",
    downloaded_by="admin@school.edu",
    downloaded_at=NOW - 100 * DAY,
    expires_at=NOW + 265 * DAY,
    installed_at=NOW - 100 * DAY,
    key_id="key_1",
)
ACCOUNT = AppleAccount(
    server_uuid="UUID-1",
    server_name="Lab MDM",
    admin_id="admin@school.edu",
    org_name="North School",
)
OLD, NEW = "admin@school.edu", "teacher@school.edu"
STATUS_GUARD = Guard(TOKEN_RECORD, TOKEN.id, STATUS, "current")


def facts(token=TOKEN, server=SERVER, **more):
    defaults = {
        "downloader": Recorded("7"),
        "downloader_tokens": (token.id,),
    }
    return AppleCheckFacts(token=token, server=server, **{**defaults, **more})


def accepted(**account):
    return CheckResult(Verdict.ACCEPTED, replace(ACCOUNT, **account))


REJECTED_RESULT = CheckResult(Verdict.REJECTED, code="token_rejected", detail="HTTP 401")
TERMS_RESULT = CheckResult(Verdict.TERMS_NOT_ACCEPTED, code="T_C_NOT_SIGNED", detail="HTTP 403")


def types(decision):
    return [event["type"] for event in decision.outgoing]


def effects(decision):
    """Everything a decision writes or sends besides the token's own state."""
    return (
        decision.causes,
        decision.forget_users,
        decision.doomed,
        decision.replacements,
        decision.resolutions,
        decision.outgoing,
        decision.next_checks,
        decision.warned,
        decision.servers_seen,
        decision.downloaders,
    )


NOTHING = effects(Decision(now=NOW))


# ---- accepted --------------------------------------------------------------------------------


def test_an_accepted_token_keeps_apples_answer_and_nothing_else_changes():
    earlier = AppleState(verdict="unreachable", code="timeout", checked_at=NOW - DAY)
    decision = decide_apple_check(facts(replace(TOKEN, apple=earlier)), accepted(), NOW)
    state = AppleState(
        verdict="accepted", code=None, checked_at=NOW, confirmed_at=NOW, server_uuid="UUID-1"
    )
    assert decision.apple == [AppleChecked(TOKEN.id, state)]
    assert [g for g in decision.guards if g.fact not in (REJECTED, TERMS)] == [STATUS_GUARD]
    assert effects(decision) == NOTHING


# (what Apple calls the server and its organization) -> what is written of the server
SERVER_NAMES = {
    "the same names: nothing written": (("Lab MDM", "North School"), []),
    "a new server name is kept": (
        ("Lab MDM 2", "North School"),
        [ServerSeenByApple(SERVER.id, "Lab MDM 2", "North School", None)],
    ),
    "a new organization name is kept": (
        ("Lab MDM", "North Academy"),
        [ServerSeenByApple(SERVER.id, "Lab MDM", "North Academy", None)],
    ),
}


@pytest.mark.parametrize(("names", "written"), SERVER_NAMES.values(), ids=SERVER_NAMES)
def test_what_apple_calls_the_server_is_written_only_when_it_changed(names, written):
    name, org = names
    decision = decide_apple_check(facts(), accepted(server_name=name, org_name=org), NOW)
    assert decision.servers_seen == written
    assert decision.outgoing == []


def test_a_server_never_named_by_apple_gets_its_names():
    server = replace(SERVER, apple_name=None, apple_org=None)
    decision = decide_apple_check(facts(server=server), accepted(), NOW)
    assert decision.servers_seen == [ServerSeenByApple(SERVER.id, "Lab MDM", "North School", None)]


def test_an_accepted_check_after_pending_terms_clears_them_and_says_so():
    since = NOW - 3 * DAY
    server = replace(SERVER, terms_since=since)
    decision = decide_apple_check(facts(server=server), accepted(server_name="Renamed"), NOW)
    assert Guard(SERVER_RECORD, SERVER.id, TERMS, ms_field(since)) in decision.guards
    assert decision.servers_seen == [ServerSeenByApple(SERVER.id, "Renamed", "North School", None)]
    assert types(decision) == [catalog.TERMS_ACCEPTED]
    event = decision.outgoing[0]
    assert event["id"] == stable_id(catalog.TERMS_ACCEPTED, SERVER.id, format_rfc3339(since))
    assert event["source"] == catalog.SOURCE_APPLE
    assert event["data"]["since"] == format_rfc3339(since)
    assert event["data"]["accepted_by"] == format_rfc3339(NOW)
    assert decision.apple[0].state.verdict == "accepted"


@pytest.mark.parametrize("named_as", ["admin@school.edu", "ADMIN@School.EDU", " admin@school.edu "])
def test_apple_naming_the_recorded_downloader_changes_nothing(named_as):
    decision = decide_apple_check(facts(named=Recorded("3")), accepted(admin_id=named_as), NOW)
    assert decision.downloaders == []
    assert [g for g in decision.guards if g.fact not in (REJECTED, TERMS)] == [STATUS_GUARD]
    assert effects(decision) == NOTHING


def corrected(**more):
    more.setdefault("named", Recorded("3"))
    return decide_apple_check(facts(**more), accepted(admin_id=NEW), NOW)


def test_apple_naming_someone_else_moves_the_token_to_them_guarding_both_users():
    decision = corrected()
    change = ("downloader", TOKEN.id, NOW.isoformat())
    assert decision.downloaders == [
        DownloaderCorrected(
            token_id=TOKEN.id,
            user=NEW,
            old_key=OLD,
            new_key=NEW,
            old_version=next_version("7", *change),
            new_version=next_version("3", *change),
            forget_old=True,
        )
    ]
    assert Guard(USER, OLD, VERSION, "7") in decision.guards
    assert Guard(USER, NEW, VERSION, "3") in decision.guards
    assert decision.replacements == [] and decision.outgoing == []
    assert decision.audit.event["downloaded_by"] == NEW
    assert decision.audit.event["recorded_as"] == OLD


def test_the_old_downloader_is_kept_while_they_hold_another_current_token():
    decision = corrected(downloader_tokens=(TOKEN.id, "tok_other"))
    assert decision.downloaders[0].forget_old is False


def test_the_name_apple_gives_is_kept_as_given_and_compared_ignoring_case():
    decision = decide_apple_check(
        facts(named=Recorded("")), accepted(admin_id="Teacher@School.EDU"), NOW
    )
    moved = decision.downloaders[0]
    assert (moved.user, moved.new_key) == ("Teacher@School.EDU", NEW)
    assert Guard(USER, NEW, VERSION, "") in decision.guards


def test_without_the_named_users_record_the_downloader_is_not_corrected():
    decision = decide_apple_check(facts(named=None), accepted(admin_id=NEW), NOW)
    assert decision.downloaders == []
    assert [g for g in decision.guards if g.record == USER] == []


def test_an_unusable_name_from_apple_corrects_nothing():
    decision = decide_apple_check(facts(named=Recorded("3")), accepted(admin_id="a\x07b"), NOW)
    assert decision.downloaders == []
    assert "not a usable account name" in decision.note


def user_cause(kind, at, event_id="e1"):
    return Cause(kind, event_id, "urn:hr", at)


# the causes recorded for the user Apple names -> the reasons the token's replacement opens with
NAMED_CAUSES = {
    "a password change after the download dooms the token": (
        [user_cause(catalog.PASSWORD_CHANGED, NOW - DAY)],
        [catalog.PASSWORD_CHANGED],
    ),
    "a departure after the download dooms it too": (
        [user_cause(catalog.USER_LEFT, NOW - DAY)],
        [catalog.USER_LEFT],
    ),
    "a password change before the download does not": (
        [user_cause(catalog.PASSWORD_CHANGED, TOKEN.downloaded_at - DAY)],
        [],
    ),
}


@pytest.mark.parametrize(("causes", "reasons"), NAMED_CAUSES.values(), ids=NAMED_CAUSES)
def test_what_is_recorded_for_the_user_apple_names_counts_for_the_token(causes, reasons):
    named = Recorded("3", {c.type: c for c in causes})
    decision = corrected(named=named)
    assert decision.downloaders[0].new_key == NEW
    assert [[r["type"] for r in c.state.reasons] for c in decision.replacements] == (
        [reasons] if reasons else []
    )
    if reasons:
        assert decision.replacements[0].opened
        assert Guard(REPLACEMENT, TOKEN.id, VERSION, "") in decision.guards
        assert types(decision) == [catalog.REPLACEMENT_REQUIRED]
        assert decision.outgoing[0]["data"]["downloaded_by"] == NEW


def test_causes_recorded_for_the_old_downloader_do_not_follow_the_token():
    old_causes = Recorded("7", {catalog.USER_LEFT: user_cause(catalog.USER_LEFT, NOW - DAY)})
    decision = corrected(downloader=old_causes)
    assert decision.downloaders and decision.replacements == []


# ---- rejected --------------------------------------------------------------------------------


def test_the_first_rejection_opens_the_replacement_and_raises_the_alarm_once():
    earlier = AppleState(verdict="accepted", confirmed_at=NOW - DAY, server_uuid="UUID-1")
    decision = decide_apple_check(facts(replace(TOKEN, apple=earlier)), REJECTED_RESULT, NOW)
    state = replace(
        earlier, verdict="rejected", code="token_rejected", checked_at=NOW, confirmed_at=NOW,
        rejected_at=NOW,
    )  # fmt: skip
    assert decision.apple == [AppleChecked(TOKEN.id, state)]
    assert Guard(TOKEN_RECORD, TOKEN.id, REJECTED, "") in decision.guards
    assert types(decision) == [catalog.TOKEN_REJECTED, catalog.REPLACEMENT_REQUIRED]
    rejected = decision.outgoing[0]
    assert rejected["id"] == stable_id(catalog.TOKEN_REJECTED, TOKEN.id)
    assert rejected["source"] == catalog.SOURCE_APPLE
    assert rejected["data"]["apple_code"] == "token_rejected"
    assert rejected["data"]["server_uuid"] == "UUID-1"
    (opened,) = decision.replacements
    assert opened.opened
    (reason,) = opened.state.reasons
    assert (reason["type"], reason["urgency"]) == (catalog.REJECTED_BY_APPLE, "immediate")
    assert reason["id"] == stable_id(catalog.REJECTED_BY_APPLE, TOKEN.id)
    assert decision.outgoing[1]["data"]["urgency"] == "immediate"


def test_the_rejection_event_has_the_same_id_whenever_it_is_decided():
    first = decide_apple_check(facts(), REJECTED_RESULT, NOW)
    again = decide_apple_check(facts(), REJECTED_RESULT, NOW + timedelta(minutes=5))
    assert first.outgoing[0]["id"] == again.outgoing[0]["id"]


def test_a_rejection_adds_its_reason_to_an_open_replacement():
    decision = Decision(now=NOW)
    cause = user_cause(catalog.PASSWORD_CHANGED, NOW - DAY)
    state = replace_token(
        decision, ReplacementFacts(), ReplacementNeeded(TOKEN, cause), SERVER, NOW - DAY
    )
    decision = decide_apple_check(facts(replacement=state), REJECTED_RESULT, NOW)
    (change,) = decision.replacements
    assert not change.opened
    assert [r["type"] for r in change.state.reasons] == [
        catalog.PASSWORD_CHANGED,
        catalog.REJECTED_BY_APPLE,
    ]
    assert Guard(REPLACEMENT, TOKEN.id, VERSION, state.version) in decision.guards


def test_a_token_already_rejected_only_records_the_check():
    first = NOW - 2 * DAY
    earlier = AppleState(
        verdict="rejected", code="token_rejected", checked_at=first, confirmed_at=first,
        rejected_at=first, server_uuid="UUID-1",
    )  # fmt: skip
    result = CheckResult(Verdict.REJECTED, code="token_expired")
    decision = decide_apple_check(facts(replace(TOKEN, apple=earlier)), result, NOW)
    state = replace(earlier, code="token_expired", checked_at=NOW, confirmed_at=NOW)
    assert decision.apple == [AppleChecked(TOKEN.id, state)]
    assert [g for g in decision.guards if g.fact not in (REJECTED, TERMS)] == [STATUS_GUARD]
    assert effects(decision) == NOTHING


# ---- terms not accepted ----------------------------------------------------------------------


def test_terms_waiting_are_told_once_per_server_without_a_replacement():
    decision = decide_apple_check(facts(), TERMS_RESULT, NOW)
    assert Guard(SERVER_RECORD, SERVER.id, TERMS, "") in decision.guards
    assert decision.servers_seen == [
        ServerSeenByApple(SERVER.id, SERVER.apple_name, SERVER.apple_org, NOW)
    ]
    assert types(decision) == [catalog.TERMS_NOT_ACCEPTED]
    event = decision.outgoing[0]
    assert event["id"] == stable_id(catalog.TERMS_NOT_ACCEPTED, SERVER.id, format_rfc3339(NOW))
    assert event["data"]["since"] == format_rfc3339(NOW)
    assert decision.replacements == []
    state = decision.apple[0].state
    assert (state.verdict, state.code, state.confirmed_at) == (
        "terms_not_accepted",
        "T_C_NOT_SIGNED",
        NOW,
    )
    assert state.rejected_at is None


def test_terms_already_pending_only_record_the_check():
    server = replace(SERVER, terms_since=NOW - DAY)
    decision = decide_apple_check(facts(server=server), TERMS_RESULT, NOW)
    assert [g for g in decision.guards if g.fact not in (REJECTED, TERMS)] == [STATUS_GUARD]
    assert effects(decision) == NOTHING
    assert decision.apple[0].state.verdict == "terms_not_accepted"


# ---- no answer -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "result",
    [
        CheckResult(Verdict.UNREACHABLE, code="http_503", detail="HTTP 503, 3 attempts"),
        CheckResult(Verdict.MALFORMED, code="not_json", detail="not JSON"),
    ],
    ids=["unreachable", "malformed"],
)
def test_no_answer_is_only_recorded(result):
    earlier = AppleState(
        verdict="accepted", checked_at=NOW - DAY, confirmed_at=NOW - DAY, server_uuid="UUID-1"
    )
    server = replace(SERVER, terms_since=None)
    decision = decide_apple_check(facts(replace(TOKEN, apple=earlier), server), result, NOW)
    state = replace(earlier, verdict=result.verdict.value, code=result.code, checked_at=NOW)
    assert decision.apple == [AppleChecked(TOKEN.id, state)]
    assert state.confirmed_at == NOW - DAY
    assert [g for g in decision.guards if g.fact not in (REJECTED, TERMS)] == [STATUS_GUARD]
    assert effects(decision) == NOTHING


# ---- nothing to decide -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "result", [accepted(admin_id=NEW), REJECTED_RESULT, TERMS_RESULT], ids=["ok", "rej", "terms"]
)
@pytest.mark.parametrize(
    "gone",
    [
        facts(replace(TOKEN, status=TOKEN_SUPERSEDED), named=Recorded("3")),
        facts(server=None, named=Recorded("3")),
    ],
    ids=["token superseded", "server gone"],
)
def test_a_token_no_longer_current_decides_nothing(gone, result):
    decision = decide_apple_check(gone, result, NOW)
    assert decision.note
    assert replace(decision, note="") == Decision(now=NOW)


# ---- standing --------------------------------------------------------------------------------

INTERVAL = 86_400
STALE = timedelta(seconds=STALE_INTERVALS * INTERVAL)

# (state, terms pending since, interval) -> what a person reads
STANDINGS = {
    "never asked": (AppleState(), None, INTERVAL, "unknown"),
    "asked, never answered": (
        AppleState(verdict="unreachable", checked_at=NOW), None, INTERVAL, "unknown",
    ),
    "confirmed recently": (AppleState(confirmed_at=NOW - DAY), None, INTERVAL, "accepted"),
    "confirmed just within 3 intervals": (
        AppleState(confirmed_at=NOW - STALE), None, INTERVAL, "accepted",
    ),
    "stale after 3 intervals": (
        AppleState(confirmed_at=NOW - STALE - timedelta(seconds=1)), None, INTERVAL, "unknown",
    ),
    "rejected wins over a recent confirmation and pending terms": (
        AppleState(confirmed_at=NOW, rejected_at=NOW - DAY), NOW - DAY, INTERVAL, "rejected",
    ),
    "rejected stays rejected when stale": (
        AppleState(confirmed_at=NOW - 9 * STALE, rejected_at=NOW - 9 * STALE),
        None, INTERVAL, "rejected",
    ),
    "terms pending": (
        AppleState(confirmed_at=NOW - DAY), NOW - DAY, INTERVAL, "terms_not_accepted",
    ),
    "terms pending but stale": (
        AppleState(confirmed_at=NOW - 2 * STALE), NOW - DAY, INTERVAL, "unknown",
    ),
    "interval 0 (checks off): the default interval counts, fresh": (
        AppleState(confirmed_at=NOW - DAY / 2), None, 0, "accepted",
    ),
    "interval 0 (checks off): the default interval counts, stale": (
        AppleState(confirmed_at=NOW - DAY), None, 0, "unknown",
    ),
}  # fmt: skip


@pytest.mark.parametrize(("state", "terms", "interval", "reads"), STANDINGS.values(), ids=STANDINGS)
def test_how_apples_verdict_reads(state, terms, interval, reads):
    assert standing(state, terms, NOW, interval) == reads


# ---- install: Apple's server uuid ------------------------------------------------------------


def installed_token(uuid, consumer="CK_old_consumer"):
    return replace(
        TOKEN, consumer_id=consumer, expires_at=NOW + 100 * DAY, apple=AppleState(server_uuid=uuid)
    )


def new_token(uuid, consumer="CK_new_consumer"):
    return NewToken(
        consumer_id=consumer,
        fingerprint="f_new",
        expires_at=NOW + 360 * DAY,
        downloaded_at=NOW - 5 * DAY,
        server_uuid=uuid,
    )


def check(new, installed, allow=False):
    return check_install(new, installed, now=NOW, allow_consumer_change=allow, source="t.p7m")


OK = InstallOutcome.INSTALL
# (new token's uuid and consumer, installed token's uuid and consumer, flag) -> outcome
UUIDS = {
    "same uuid, another consumer: the uuid settles it": (("U1", "CK_b"), ("U1", "CK_a"), False, OK),
    "same uuid, same consumer": (("U1", "CK_a"), ("U1", "CK_a"), False, OK),
    "another uuid, same consumer: refused": (("U2", "CK_a"), ("U1", "CK_a"), False, "uuid"),
    "another uuid with the flag": (("U2", "CK_b"), ("U1", "CK_a"), True, OK),
    "new uuid unknown, another consumer": ((None, "CK_b"), ("U1", "CK_a"), False, "consumer"),
    "new uuid unknown, same consumer": ((None, "CK_a"), ("U1", "CK_a"), False, OK),
    "installed uuid unknown, another consumer": (
        ("U1", "CK_b"), (None, "CK_a"), False, "consumer",
    ),
    "installed uuid unknown, same consumer": (("U1", "CK_a"), (None, "CK_a"), False, OK),
    "both unknown, another consumer": ((None, "CK_b"), (None, "CK_a"), False, "consumer"),
    "both unknown, another consumer, with the flag": ((None, "CK_b"), (None, "CK_a"), True, OK),
}  # fmt: skip


@pytest.mark.parametrize(("new", "old", "allow", "expected"), UUIDS.values(), ids=UUIDS)
def test_apples_server_uuid_settles_whether_a_token_is_for_the_same_server(
    new, old, allow, expected
):
    candidate, current = new_token(*new), installed_token(*old)
    if expected is OK:
        assert check(candidate, current, allow) is OK
        return
    with pytest.raises(ConsumerKeyChanged) as refused:
        check(candidate, current, allow)
    message = str(refused.value)
    assert "--allow-server-change" in message
    if expected == "uuid":
        assert f"server {new[0]}, not {old[0]}" in message
    else:
        assert f"consumer {new[1]} instead of {old[1]}" in message


# ---- what Apple leaves out, and one audit entry for all that was done ------------------------


def test_an_answer_without_names_keeps_the_names_apple_gave_before():
    decision = decide_apple_check(facts(), accepted(server_name=None, org_name=None), NOW)
    assert decision.servers_seen == []
    renamed = decide_apple_check(facts(), accepted(server_name="Lab 2", org_name=None), NOW)
    assert renamed.servers_seen == [ServerSeenByApple(SERVER.id, "Lab 2", "North School", None)]


def test_terms_ending_and_a_downloader_corrected_share_one_audit_entry():
    pending = replace(SERVER, terms_since=NOW - DAY)
    decision = decide_apple_check(
        facts(server=pending, named=Recorded("3")), accepted(admin_id=NEW), NOW
    )
    assert types(decision) == [catalog.TERMS_ACCEPTED]
    assert decision.downloaders
    assert decision.audit.event["apple"] == ["terms_accepted", "downloader corrected"]
    assert decision.audit.event["downloaded_by"] == NEW
    assert decision.audit.event["recorded_as"] == OLD


@pytest.mark.parametrize(
    "result",
    [accepted(), REJECTED_RESULT, TERMS_RESULT, CheckResult(Verdict.UNREACHABLE, code="timeout")],
)
def test_every_check_holds_on_the_rejection_and_terms_it_read(result):
    """A check answered late writes the whole Apple state from what it read: it must not undo
    a rejection or terms recorded meanwhile by another check."""
    rejected = replace(TOKEN, apple=AppleState(rejected_at=NOW - DAY))
    pending = replace(SERVER, terms_since=NOW - 2 * DAY)
    decision = decide_apple_check(facts(token=rejected, server=pending), result, NOW)
    assert Guard(TOKEN_RECORD, TOKEN.id, REJECTED, ms_field(NOW - DAY)) in decision.guards
    assert Guard(SERVER_RECORD, SERVER.id, TERMS, ms_field(NOW - 2 * DAY)) in decision.guards
