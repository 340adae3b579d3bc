"""What a SCIM write means for tokens, as tokenwarden events. Pure.

- A user whose `active` turns false (PATCH or PUT), or who is deleted while still active, left:
  `tokenwarden.directory.user_left`. Deactivating a user already inactive, or deleting one,
  says nothing new.
- A PATCH or PUT carrying a password (Okta's password sync): `password_changed`. Only whether
  a password came is looked at, never its value.

Event ids are stable per (user, change, state), so a request retried after a failure is
dropped by the (source, id) de-duplication: a departure is keyed by the user's version before
it (a user reactivated and deactivated again leaves again, under a new id). A password change
leaves nothing stored to tell two syncs of one password from two changes, so each request is a
change of its own, keyed by the request's time.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from events import catalog
from events.cloudevent import CloudEvent, new_event
from worker.intake.sources import Source
from worker.records import to_ms


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
    password_given: bool,
    now: datetime,
) -> list[Change]:
    changes = []
    if inactive(after) and not inactive(before):
        changes.append(Change(catalog.USER_LEFT, before["userName"], f"{user_id}|left|{version}"))
    if password_given:
        key = f"{user_id}|password|{to_ms(now)}"
        changes.append(Change(catalog.PASSWORD_CHANGED, after["userName"], key))
    return changes


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
