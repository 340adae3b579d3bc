"""What a directory's answer about a watched person means: a password change or a departure
to tell the workers (as an incoming event, decided like any other), or nothing. Pure.

An event is made only when it would doom a current token that no recorded cause dooms already,
so a round repeated every few minutes sends nothing new about a change already told (by an
earlier round, or pushed by the directory itself). Its id is derived from what was observed
(the user, and the password change's time or the latest download it dooms), so two rounds that
see the same change before the workers record it send the same event, which they drop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from events import catalog
from events.cloudevent import CloudEvent, new_event, stable_id
from worker.directories.base import Observation, Unobserved
from worker.records import to_ms
from worker.rules.replacement import Cause
from worker.timefmt import format_rfc3339

#: What a round found about one watched person.
UNCHANGED = "unchanged"
PASSWORD_CHANGED = "password_changed"
LEFT = "left"
NOT_FOUND = "not_found"
#: The change was seen, and a recorded cause dooms every token it would doom: nothing to send.
ALREADY_KNOWN = "already_known"
UNOBSERVED = "unobserved"


def source_uri(source_name: str) -> str:
    """The CloudEvent `source` of what asking a directory found."""
    return f"urn:tokenwarden:directory:{source_name}"


@dataclass(frozen=True)
class WatchedUser:
    """A person who downloaded at least one current token: their key, their Managed Apple
    Account as a token names it, when each of their current tokens was downloaded (oldest
    first), and the latest password change and departure recorded for them."""

    key: str
    user: str
    downloads: tuple[datetime, ...]
    causes: Mapping[str, Cause] = field(default_factory=dict)

    @property
    def since(self) -> datetime:
        return self.downloads[0]


@dataclass(frozen=True)
class Finding:
    user: str
    login: str
    outcome: str
    detail: str
    event: CloudEvent | None = None

    @property
    def changed(self) -> bool:
        return self.event is not None


def judge(
    watched: WatchedUser, answer: Observation | Unobserved, *, source: str, now: datetime
) -> Finding:
    """What `answer` (about the directory login of `watched`) means; `source` is the
    source_uri the event would carry."""
    if isinstance(answer, Unobserved):
        return Finding(watched.user, answer.login, UNOBSERVED, answer.why)
    if not answer.found or not answer.enabled:
        return _departure(watched, answer, source, now)
    if answer.password_changed_at is not None:
        return _password_change(watched, answer, answer.password_changed_at, source, now)
    return Finding(watched.user, answer.login, UNCHANGED, answer.status or "enabled")


def _departure(watched: WatchedUser, answer: Observation, source: str, now: datetime) -> Finding:
    outcome = LEFT if answer.found else NOT_FOUND
    status = answer.status or ("not found" if not answer.found else "disabled")
    known = watched.causes.get(catalog.USER_LEFT)
    undoomed = [d for d in watched.downloads if known is None or d >= known.time]
    if not undoomed:
        detail = f"{status}; the departure is already recorded"
        return Finding(watched.user, answer.login, ALREADY_KNOWN, detail)
    latest = max(undoomed)
    # The directory's own time when it says one after the latest download; else now (a
    # departure dooms every token downloaded before it, and the directory may not say when).
    changed = answer.status_changed_at
    when = changed if changed is not None and latest < changed <= now else now
    event_id = stable_id("directory", source, catalog.USER_LEFT, watched.key, str(to_ms(latest)))
    event = _event(catalog.USER_LEFT, watched, source, when, event_id)
    return Finding(watched.user, answer.login, outcome, status, event)


def _password_change(
    watched: WatchedUser, answer: Observation, changed: datetime, source: str, now: datetime
) -> Finding:
    changed = min(changed, now)  # a directory clock ahead of ours: the change is now
    shown = f"password changed {format_rfc3339(changed)}"
    if not any(d < changed for d in watched.downloads):
        detail = f"{shown}, before the download"
        return Finding(watched.user, answer.login, UNCHANGED, detail)
    known = watched.causes.get(catalog.PASSWORD_CHANGED)
    if not any(d < changed and (known is None or d >= known.time) for d in watched.downloads):
        return Finding(watched.user, answer.login, ALREADY_KNOWN, f"{shown}; already recorded")
    event_id = stable_id(
        "directory", source, catalog.PASSWORD_CHANGED, watched.key, str(to_ms(changed))
    )
    event = _event(catalog.PASSWORD_CHANGED, watched, source, changed, event_id)
    return Finding(watched.user, answer.login, PASSWORD_CHANGED, shown, event)


def _event(
    event_type: str, watched: WatchedUser, source: str, when: datetime, event_id: str
) -> CloudEvent:
    return new_event(
        event_type,
        {"user": watched.user},
        source=source,
        time=when,
        event_id=event_id,
        subject=watched.user,
    )
