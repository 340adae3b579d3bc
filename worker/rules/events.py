"""What an incoming event decides: a password change or departure (user causes), a new key or
a new token made for a server (server causes).

The event's cause is remembered for the user or the server (a token installed later but
downloaded before it is doomed at install), and every current token it dooms gets its
replacement opened or extended (worker/rules/replacing.py).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from events import catalog
from events.cloudevent import CloudEvent
from worker.names import name_key, user_key
from worker.records import Server
from worker.rules.decision import (
    EXISTS,
    INSTALLED_TOKEN,
    SERVER,
    STAGED_KEY,
    USER,
    VERSION,
    AuditEntry,
    Decision,
    Guard,
    RememberCause,
)
from worker.rules.facts import (
    EventFacts,
    Recorded,
    ReplacementFacts,
    cause_change,
    next_version,
)
from worker.rules.renewal import rotation_certificate
from worker.rules.replacement import Cause, ReplacementNeeded, for_server_cause, for_user_cause
from worker.rules.replacing import replace_token


def decide_event(
    facts: EventFacts, event: CloudEvent, now: datetime, *, received_at: datetime | None = None
) -> Decision:
    """The decision `event` makes on `facts` (an event without a time happened when it was
    received, `received_at`, by default `now`)."""
    cause = Cause(
        type=event.type,
        id=event.id,
        source=event.source,
        time=event.occurred_at(received_at or now),
    )
    decision = Decision(now=now, event_key=event.key, audit=AuditEntry("event", event.to_wire()))
    if event.type in catalog.USER_EVENTS:
        needs = _user_needs(decision, cause, event.user(), facts)
    else:
        needs = _server_needs(decision, cause, *event.server(), facts)
    states: dict[str, ReplacementFacts] = {}
    for need in needs:
        token_id = need.token.id
        state = states.get(token_id) or facts.replacement(token_id)
        server = facts.servers[need.token.server_id]
        if event.type in catalog.USER_EVENTS:
            need = _with_new_key(decision, need, server, facts)
        states[token_id] = replace_token(decision, state, need, server, now)
    return decision


def _with_new_key(
    decision: Decision, need: ReplacementNeeded, server: Server, facts: EventFacts
) -> ReplacementNeeded:
    """A password change or departure dooms a token of a server whose policy rotates keys:
    its key is rotated too (staged in this decision), so the window of the person who
    downloaded it never includes the old key; the notice carries the certificate."""
    policy = facts.policies.get(server.id)
    if policy is None or not policy.rotates_key:
        return need
    ready, certificate = rotation_certificate(
        decision,
        server,
        facts.staged_certificates.get(server.id),
        facts.key_offers.get(server.id),
    )
    return replace(need, certificate=certificate) if ready and certificate else need


def decide_key_rotation(facts: EventFacts, event: CloudEvent, now: datetime) -> Decision:
    """The key_regenerated event `keys rotate` records, decided on the server as it stands
    with the new key staged (so the notice carries the certificate to upload)."""
    return decide_event(facts, event, now)


def advance(facts: EventFacts, decision: Decision) -> None:
    """Bring `facts` to where they stand once `decision` is applied, in place: the next event
    of a batch is decided on them (and guarded on the versions the decision writes)."""
    for remembered in decision.causes:
        held = facts.users if remembered.record == USER else facts.server_causes
        recorded = held.get(remembered.ident, Recorded())
        held[remembered.ident] = recorded.with_cause(remembered.cause, remembered.version)
    for change in decision.replacements:
        facts.replacements[change.token_id] = change.state
    for resolution in decision.resolutions:
        facts.replacements[resolution.token_id] = resolution.state
    for staged in decision.staged_keys:
        pair = staged.offer.pair
        server = facts.servers.get(pair.server_id)
        if server is not None:
            facts.servers[server.id] = replace(server, staged_key_id=pair.id)
            facts.staged_certificates[server.id] = pair.cert_pem
            facts.key_offers.pop(server.id, None)


def _remember(
    decision: Decision, record: str, ident: str, recorded: Recorded, cause: Cause
) -> None:
    """Keep the cause for a token installed later, when it is the latest of its kind."""
    decision.guards.append(Guard(record, ident, VERSION, recorded.version))
    if recorded.is_newer(cause):
        version = next_version(recorded.version, *cause_change(cause, decision.now))
        decision.causes.append(RememberCause(record, ident, cause, version))


def _user_needs(
    decision: Decision, cause: Cause, user: str, facts: EventFacts
) -> list[ReplacementNeeded]:
    key = user_key(user)
    tokens = facts.user_tokens.get(key, [])
    _remember(decision, USER, key, facts.users.get(key, Recorded()), cause)
    if not tokens:
        # Anyone can be named in an event: a user with no current token is forgotten in time.
        decision.forget_users.append(key)
        decision.note = "no current token was downloaded by this user"
    return [n for n in for_user_cause(cause, user, tokens) if n.token.server_id in facts.servers]


def _server_needs(
    decision: Decision, cause: Cause, name: str, org: str | None, facts: EventFacts
) -> list[ReplacementNeeded]:
    matches: list[Server] = facts.servers_named.get(name_key(name), [])
    if org is not None:
        matches = [s for s in matches if name_key(s.org) == name_key(org)]
    if len(matches) != 1:
        decision.note = (
            f"no server named {name!r}"
            if not matches
            else f"{len(matches)} servers are named {name!r}; the event needs an org"
        )
        return []
    server = matches[0]
    # The server must still exist, and hold the token and keys decided on, when the decision
    # applies (the cause is written into it).
    decision.guards += [
        Guard(SERVER, server.id, EXISTS, server.id),
        Guard(SERVER, server.id, INSTALLED_TOKEN, server.token_id or ""),
        Guard(SERVER, server.id, STAGED_KEY, server.staged_key_id or ""),
    ]
    _remember(decision, SERVER, server.id, facts.server_causes.get(server.id, Recorded()), cause)
    token = facts.tokens.get(server.token_id) if server.token_id else None
    if token is None:
        decision.note = "the server has no token installed"
    return for_server_cause(cause, token, facts.staged_certificates.get(server.id))
