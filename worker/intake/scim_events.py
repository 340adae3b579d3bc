"""What a SCIM write means for tokens, as tokenwarden events. Pure.

- A user whose `active` turns false (PATCH or PUT), or who is deleted while still active, left:
  `tokenwarden.directory.user_left`. Deactivating a user already inactive, or deleting one,
  says nothing new.
- A PATCH or PUT carrying a password (Okta's password sync): `password_changed`. Only whether
  a password came is looked at, never its value.

Both name the user by the userName stored before the request (the account the tokens were
downloaded under), never by a new userName the same request brings.

Event ids are stable per (user, change, state), so a request retried after a failure is
dropped by the (source, id) de-duplication: a departure is keyed by the user's version before
it (a user reactivated and deactivated again leaves again, under a new id). A password change
is keyed by that version and a digest of the request's body (`request_digest`): a directory
retrying a request it timed out on sends the same body to the same state, the same id; a new
password is a new body. Nothing about the password is kept but that digest, inside the id.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from events import catalog
from events.cloudevent import CloudEvent, new_event
from worker.intake.sources import Source


@dataclass(frozen=True)
class Change:
    event_type: str
    #: The directory login (SCIM userName), before the source's domain map.
    login: str
    #: What makes the event's id: the user, the change, and the state it changed from.
    key: str


def inactive(record: dict[str, Any]) -> bool:
    """Whether a stored user is deactivated (a user without `active` counts as active)."""
    return record.get("active") is False


def on_update(
    user_id: str,
    before: dict[str, Any],
    version: int,
    after: dict[str, Any],
    *,
    password_request: str | None,
) -> list[Change]:
    """`password_request`: the digest of the request when it carried a password, else None."""
    changes = []
    login = before["userName"]
    if inactive(after) and not inactive(before):
        changes.append(Change(catalog.USER_LEFT, login, f"{user_id}|left|{version}"))
    if password_request is not None:
        key = f"{user_id}|password|{version}|{password_request}"
        changes.append(Change(catalog.PASSWORD_CHANGED, login, key))
    return changes


def request_digest(source: Source, body: bytes) -> str:
    """What tells one request from another in a password change's id: an HMAC of the whole
    body (password included) keyed by the source's name and secret hash, so the ids of two
    sources never meet and nobody without the source's record can test guesses of a password
    against an id. Kept nowhere but hashed again into the event id."""
    key = f"tokenwarden-scim-request\0{source.name}\0{source.secret_hash}".encode()
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def on_delete(user_id: str, before: dict[str, Any], version: int) -> list[Change]:
    if inactive(before):
        return []  # told when it was deactivated
    return [Change(catalog.USER_LEFT, before["userName"], f"{user_id}|left|{version}")]


def source_uri(source: Source) -> str:
    return f"urn:tokenwarden:scim:{source.name}"


def to_events(changes: list[Change], source: Source, now: datetime) -> list[CloudEvent]:
    """The events for `changes` (raises MalformedEvent when one cannot be made, e.g. a login
    that maps to more than an event takes)."""
    return [
        new_event(
            change.event_type,
            {"user": source.map_user(change.login)},
            source=source_uri(source),
            time=now,
            event_id=event_id(source, change),
            subject=source.map_user(change.login),
        )
        for change in changes
    ]


def event_id(source: Source, change: Change) -> str:
    digest = hashlib.sha256(f"{source.name}|{change.key}".encode()).hexdigest()
    return f"scim-{digest[:32]}"
