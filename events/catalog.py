"""The event types tokenwarden consumes and emits, and what each means.

Incoming events say something happened that may kill a server token; outgoing events say what
tokenwarden decided. Every event travels as a CloudEvents 1.0 event (see `events.cloudevent`).
"""

from __future__ import annotations

from dataclasses import dataclass

PASSWORD_CHANGED = "tokenwarden.directory.password_changed"
USER_LEFT = "tokenwarden.directory.user_left"
KEY_REGENERATED = "tokenwarden.server.key_regenerated"
TOKEN_GENERATED = "tokenwarden.server.token_generated"

REPLACEMENT_REQUIRED = "tokenwarden.token.replacement_required"
REPLACED = "tokenwarden.token.replaced"
EXPIRY_APPROACHING = "tokenwarden.token.expiry_approaching"
EXPIRED = "tokenwarden.token.expired"
#: Apple's enrollment service refused the installed token (its replacement opens at once).
TOKEN_REJECTED = "tokenwarden.token.rejected"
#: New terms and conditions wait in the portal (no replacement: accepting them is enough),
#: and, once a check passes again, they were accepted.
TERMS_NOT_ACCEPTED = "tokenwarden.server.terms_not_accepted"
TERMS_ACCEPTED = "tokenwarden.server.terms_accepted"

#: A directory tokenwarden asks on a schedule refuses its credential, or stays unreachable, or
#: answers as if misconfigured; and, once a round succeeds again, it recovered.
SOURCE_FAILING = "tokenwarden.source.failing"
SOURCE_RECOVERED = "tokenwarden.source.recovered"

#: The cause a replacement records when Apple refused the token (a reason, not an event type).
REJECTED_BY_APPLE = "tokenwarden.apple.rejected_by_apple"

#: The cause a replacement records when its server's rotation policy says renewal is due
#: (`renew-before` days before expiry; a reason, not an event type).
SCHEDULED_RENEWAL = "tokenwarden.policy.scheduled_renewal"

#: A server's, an organization's or the global rotation policy was set or cleared.
POLICY_CHANGED = "tokenwarden.server.policy_changed"

#: Incoming types whose data names a user (`{"user": ...}`).
USER_EVENTS = frozenset({PASSWORD_CHANGED, USER_LEFT})

#: Incoming types whose data names a server (`{"server": ..., "org": optional}`).
SERVER_EVENTS = frozenset({KEY_REGENERATED, TOKEN_GENERATED})

INCOMING_TYPES = USER_EVENTS | SERVER_EVENTS
OUTGOING_TYPES = frozenset(
    {
        REPLACEMENT_REQUIRED,
        REPLACED,
        EXPIRY_APPROACHING,
        EXPIRED,
        TOKEN_REJECTED,
        TERMS_NOT_ACCEPTED,
        TERMS_ACCEPTED,
        SOURCE_FAILING,
        SOURCE_RECOVERED,
        POLICY_CHANGED,
    }
)

#: `source` of the events tokenwarden itself creates.
SOURCE_CLI = "urn:tokenwarden:cli"
SOURCE_API = "urn:tokenwarden:api"
SOURCE_WORKER = "urn:tokenwarden:worker"
SOURCE_SCHEDULER = "urn:tokenwarden:scheduler"
#: `source` of what tokenwarden learned by asking Apple's enrollment service.
SOURCE_APPLE = "urn:tokenwarden:apple"
#: `source` of the reports about the directories tokenwarden asks.
SOURCE_DIRECTORIES = "urn:tokenwarden:directories"


@dataclass(frozen=True)
class Urgency:
    """How soon a token must be replaced because of a cause; a higher rank is more urgent."""

    name: str
    rank: int


#: The token no longer works (or will not after the next Apple check): replace now.
IMMEDIATE = Urgency("immediate", 30)
#: The token still works but is doomed (a new key was made): replace soon.
SOON = Urgency("soon", 20)
#: The token nears its one-year limit: replace before it expires.
PLANNED = Urgency("planned", 10)

#: Why each incoming type makes a token replaceable, and how urgently.
URGENCY_BY_TYPE = {
    PASSWORD_CHANGED: IMMEDIATE,
    USER_LEFT: IMMEDIATE,
    TOKEN_GENERATED: IMMEDIATE,
    KEY_REGENERATED: SOON,
    # The scheduler's own causes: a token near its limit, and one past it.
    EXPIRY_APPROACHING: PLANNED,
    EXPIRED: IMMEDIATE,
    # Apple itself refused the token.
    REJECTED_BY_APPLE: IMMEDIATE,
    # The server's policy says its token is renewed now, well before it expires.
    SCHEDULED_RENEWAL: PLANNED,
}
