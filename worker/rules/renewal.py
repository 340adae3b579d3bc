"""Renewal on a plan: when a server's rotation policy (worker/rules/policy.py) says its token is
due, the scan opens the token's replacement with the reason `scheduled_renewal`, and, when the
policy rotates keys, stages a new key pair in the same decision so the notice carries the
certificate to upload. A password change or departure that dooms a token of such a server
stages the key the same way (worker/rules/events.py).

Pure: making a key pair is not a rule's business, so the caller offers one (KeyOffer) and the
rule only decides whether to stage it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from events import catalog
from events.cloudevent import stable_id
from worker.records import TOKEN_CURRENT, Server
from worker.rules.decision import (
    RENEWAL,
    SERVER,
    STAGED_KEY,
    STATUS,
    TOKEN,
    AuditEntry,
    Decision,
    Guard,
    KeyOffer,
    NextCheck,
    RenewalOpened,
    StagedKey,
)
from worker.rules.facts import ReplacementFacts, ScanFacts
from worker.rules.replacement import Cause, ReplacementNeeded
from worker.rules.replacing import replace_token
from worker.timefmt import format_rfc3339

#: How long a renewal that wants a new key pair waits when none was offered (the scan makes a
#: bounded number per run), before the scan looks at it again.
KEY_WAIT = timedelta(minutes=10)


def renewal_due(facts: ScanFacts, now: datetime) -> bool:
    """Whether the scan opens the token's renewal now: its renew-before is reached and it was
    not opened yet. Past expiry the expiry itself is the reason (one notice, not two)."""
    token = facts.token
    if token.renewal_opened is not None or now >= token.expires_at:
        return False
    return now >= facts.policy.renewal_at(token.expires_at)


def rotation_certificate(
    decision: Decision, server: Server, staged_certificate: str | None, offer: KeyOffer | None
) -> tuple[bool, str | None]:
    """(whether a key to rotate to is at hand, its certificate): the key staged already (one
    `keys rotate` staged, whose certificate may be uploaded), else the offer, staged by this
    decision (guarded: only while no key is staged). No offer: the caller must make one."""
    if server.staged_key_id:
        return True, staged_certificate
    if offer is None:
        if server.id not in decision.keys_wanted:
            decision.keys_wanted.append(server.id)
        return False, None
    if not any(s.offer.pair.server_id == server.id for s in decision.staged_keys):
        decision.guards.append(Guard(SERVER, server.id, STAGED_KEY, ""))
        decision.staged_keys.append(StagedKey(offer))
        decision.results.append(
            {"action": "staged a new key pair", "server": server.name, "key_id": offer.pair.id}
        )
    return True, offer.pair.cert_pem


def expiry_certificate(decision: Decision, facts: ScanFacts) -> str | None:
    """At expiry, the certificate of the key the server's policy rotates to (staged now if
    none is; None when its policy keeps the key, or no key was offered yet)."""
    if facts.server is None or not facts.policy.rotates_key:
        return None
    ready, certificate = rotation_certificate(
        decision, facts.server, facts.staged_certificate, facts.key_offer
    )
    return certificate if ready else None


def _told_before(state: ReplacementFacts) -> bool:
    """A replacement opened by the first expiry warning, before rotation policies: its
    renewal was told already (an upgrade must not announce every open one again)."""
    return state.is_open and any(r.get("type") == catalog.EXPIRY_APPROACHING for r in state.reasons)


def open_renewal(
    decision: Decision, facts: ScanFacts, state: ReplacementFacts, now: datetime
) -> ReplacementFacts:
    """Open (or extend) the token's replacement for its scheduled renewal; returns the
    replacement after it. Without the key its policy wants, it waits KEY_WAIT for one."""
    token, server, policy = facts.token, facts.server, facts.policy
    assert server is not None  # the scan decides nothing else for a token whose server is gone
    certificate = None
    if policy.rotates_key:
        ready, certificate = rotation_certificate(
            decision, server, facts.staged_certificate, facts.key_offer
        )
        if not ready:
            decision.next_checks[:] = [NextCheck(token.id, now + KEY_WAIT)]
            decision.results.append({"action": "renewal due: waiting for a new key pair"})
            return state
    if not any(g.record == TOKEN and g.fact == STATUS for g in decision.guards):
        decision.guards.append(Guard(TOKEN, token.id, STATUS, TOKEN_CURRENT))
    decision.guards.append(Guard(TOKEN, token.id, RENEWAL, ""))
    decision.renewals.append(RenewalOpened(token.id))
    if certificate is None and _told_before(state):
        decision.results.append({"action": "renewal already told (opened at the first warning)"})
        return state
    due_at = policy.renewal_at(token.expires_at)
    cause = Cause(
        type=catalog.SCHEDULED_RENEWAL,
        id=stable_id(catalog.SCHEDULED_RENEWAL, token.id),
        source=catalog.SOURCE_SCHEDULER,
        time=due_at,
    )
    sent = len(decision.outgoing)
    after = replace_token(
        decision, state, ReplacementNeeded(token, cause, certificate), server, now
    )
    renewal = {
        "due_at": format_rfc3339(due_at),
        "renew_before_days": policy.renew_before_days,
        "rotate_key": policy.rotate_key,
        "new_key_staged": certificate is not None,
    }
    for event in decision.outgoing[sent:]:
        event["data"]["renewal"] = renewal
    if decision.audit is None:
        decision.audit = AuditEntry(
            "scan",
            {"server": server.name, "org": server.org or None, "token_id": token.id, **renewal},
        )
    return after


def key_still_wanted(facts: ScanFacts, now: datetime) -> bool:
    """A renewal opened before its policy turned to rotating keys: it still gets its key
    (until expiry, when expiry_certificate takes over)."""
    token, server, state = facts.token, facts.server, facts.replacement
    return (
        token.renewal_opened is not None
        and server is not None
        and not server.staged_key_id
        and facts.policy.rotates_key
        and state.is_open
        and now < token.expires_at
    )


def rotate_open_renewal(
    decision: Decision, facts: ScanFacts, state: ReplacementFacts, now: datetime
) -> ReplacementFacts:
    """Stage the key the policy now wants for an open renewal, and tell it: a key change
    with the certificate to upload (soon: the token works, but is tied to the old key)."""
    token, server = facts.token, facts.server
    assert server is not None
    ready, certificate = rotation_certificate(decision, server, None, facts.key_offer)
    if not ready:
        decision.next_checks[:] = [NextCheck(token.id, now + KEY_WAIT)]
        return state
    cause = Cause(
        type=catalog.KEY_REGENERATED,
        id=stable_id(catalog.KEY_REGENERATED, "policy", token.id),
        source=catalog.SOURCE_SCHEDULER,
        time=now,
    )
    return replace_token(decision, state, ReplacementNeeded(token, cause, certificate), server, now)
