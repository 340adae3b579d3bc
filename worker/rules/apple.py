"""What Apple's answer about a token decides: pure, `now` passed in.

- **accepted**: Apple confirms the token. What it says of the server is kept; pending terms are
  over (`terms_accepted`); and when Apple names another person as the token's downloader, the
  token moves to that person, whose password changes and departures then count (with the
  causes already recorded for them).
- **rejected**: the token is dead. Its replacement opens, or gains the reason
  `rejected_by_apple`, urgency immediate, and `token.rejected` is sent: once per token (a
  guard on when it was first refused), however many checks fail afterwards.
- **terms not accepted**: `server.terms_not_accepted`, once per server until a check passes.
  No replacement: accepting the terms in the portal is enough.
- **unreachable or malformed**: only recorded; never an alarm.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from events import catalog
from events.cloudevent import stable_id
from worker import outgoing
from worker.apple.verdicts import AppleAccount, CheckResult, Verdict
from worker.errors import InvalidInput
from worker.names import clean_user, user_key
from worker.records import TOKEN_CURRENT, Server, Token, ms_field
from worker.rules.decision import (
    REJECTED,
    SERVER,
    STATUS,
    TERMS,
    TOKEN,
    USER,
    VERSION,
    AppleChecked,
    AuditEntry,
    Decision,
    DownloaderCorrected,
    Guard,
    ServerSeenByApple,
)
from worker.rules.facts import AppleCheckFacts, next_version
from worker.rules.replacement import Cause, ReplacementNeeded, for_new_token
from worker.rules.replacing import replace_token


def decide_apple_check(facts: AppleCheckFacts, result: CheckResult, now: datetime) -> Decision:
    """The decision for one token's check; nothing for a token no longer current."""
    token, server = facts.token, facts.server
    decision = Decision(now=now)
    if token.status != TOKEN_CURRENT or server is None:
        decision.note = "the token is no longer current"
        return decision
    # The whole Apple state and the server's terms are written from these facts: a check
    # answered late must not undo what a check answered meanwhile (a rejection, terms), so the
    # decision holds only on them as read, and is made again otherwise.
    decision.guards += [
        Guard(TOKEN, token.id, STATUS, TOKEN_CURRENT),
        Guard(TOKEN, token.id, REJECTED, ms_field(token.apple.rejected_at)),
        Guard(SERVER, server.id, TERMS, ms_field(server.terms_since)),
    ]
    state = replace(token.apple, verdict=result.verdict.value, code=result.code, checked_at=now)
    if result.confirmed:
        state = replace(state, confirmed_at=now)
    if result.verdict is Verdict.ACCEPTED and result.account is not None:
        state = replace(state, server_uuid=result.account.server_uuid)
        _accepted(decision, facts, result.account, now)
    elif result.verdict is Verdict.REJECTED and token.apple.rejected_at is None:
        state = replace(state, rejected_at=now)
        _rejected(decision, facts, replace(token, apple=state), result, now)
    elif result.verdict is Verdict.TERMS_NOT_ACCEPTED and server.terms_since is None:
        _terms_changed(decision, facts, server, now, pending=True)
    decision.apple.append(AppleChecked(token.id, state))
    return decision


def _accepted(
    decision: Decision, facts: AppleCheckFacts, account: AppleAccount, now: datetime
) -> None:
    server = facts.server
    assert server is not None
    # An answer without a name keeps the name Apple gave before.
    named = replace(
        account,
        server_name=account.server_name or server.apple_name,
        org_name=account.org_name or server.apple_org,
    )
    if server.terms_since is not None:
        _terms_changed(decision, facts, server, now, pending=False, account=named)
    elif (named.server_name, named.org_name) != (server.apple_name, server.apple_org):
        decision.servers_seen.append(
            ServerSeenByApple(server.id, named.server_name, named.org_name, None)
        )
    if account.admin_id:
        _correct_downloader(decision, facts, account.admin_id, now)


def _rejected(
    decision: Decision,
    facts: AppleCheckFacts,
    token: Token,
    result: CheckResult,
    now: datetime,
) -> None:
    server = facts.server
    assert server is not None
    event = outgoing.rejected(server, token, result.code, now, result.detail)
    decision.outgoing.append(event)
    decision.results.append({"token": token.id, "server": server.name, "action": "rejected"})
    cause = Cause(
        type=catalog.REJECTED_BY_APPLE,
        id=stable_id(catalog.REJECTED_BY_APPLE, token.id),
        source=catalog.SOURCE_APPLE,
        time=now,
    )
    replace_token(decision, facts.replacement, ReplacementNeeded(token, cause), server, now)
    _note(decision, facts, "rejected", code=result.code)


def _terms_changed(
    decision: Decision,
    facts: AppleCheckFacts,
    server: Server,
    now: datetime,
    *,
    pending: bool,
    account: AppleAccount | None = None,
) -> None:
    """Terms began to wait (`pending`), or a check passed after they did."""
    since = now if pending else server.terms_since
    assert since is not None
    decision.servers_seen.append(
        ServerSeenByApple(
            server.id,
            account.server_name if account else server.apple_name,
            account.org_name if account else server.apple_org,
            now if pending else None,
        )
    )
    event_type = catalog.TERMS_NOT_ACCEPTED if pending else catalog.TERMS_ACCEPTED
    decision.outgoing.append(outgoing.terms(event_type, server, facts.token, since, now))
    decision.results.append({"server": server.name, "action": f"sent {event_type}"})
    _note(decision, facts, event_type.rsplit(".", 1)[-1])


def _correct_downloader(
    decision: Decision, facts: AppleCheckFacts, admin_id: str, now: datetime
) -> None:
    """Apple says who downloaded the token: when that is someone else, believe Apple."""
    token = facts.token
    try:
        user = clean_user(admin_id)
    except InvalidInput:
        decision.note = "Apple named a downloader that is not a usable account name"
        return
    old_key, new_key = user_key(token.downloaded_by), user_key(user)
    if old_key == new_key or facts.named is None:
        return
    decision.guards += [
        Guard(USER, old_key, VERSION, facts.downloader.version),
        Guard(USER, new_key, VERSION, facts.named.version),
    ]
    change = ("downloader", token.id, now.isoformat())
    decision.downloaders.append(
        DownloaderCorrected(
            token_id=token.id,
            user=user,
            old_key=old_key,
            new_key=new_key,
            old_version=next_version(facts.downloader.version, *change),
            new_version=next_version(facts.named.version, *change),
            forget_old=not (set(facts.downloader_tokens) - {token.id}),
        )
    )
    decision.results.append(
        {"token": token.id, "action": "downloader corrected", "from": token.downloaded_by}
    )
    _note(
        decision, facts, "downloader corrected", downloaded_by=user, recorded_as=token.downloaded_by
    )
    corrected = replace(token, downloaded_by=user)
    user_causes = [c for c in facts.named.causes.values() if c.type in catalog.USER_EVENTS]
    state = facts.replacement
    for need in for_new_token(corrected, user_causes):
        state = replace_token(decision, state, need, facts.server, now)


def _note(decision: Decision, facts: AppleCheckFacts, what: str, **more: Any) -> None:
    """Add `what` to the decision's audit entry (one entry, however many things it did)."""
    if decision.audit is not None:
        decision.audit.event["apple"].append(what)
        decision.audit.event.update(more)
        return
    server = facts.server
    entry = {
        "apple": [what],
        "server": server.name if server else None,
        "org": (server.org or None) if server else None,
        "token_id": facts.token.id,
        **more,
    }
    decision.audit = AuditEntry("apple", entry)
