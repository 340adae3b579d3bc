"""Okta event hooks translated into tokenwarden's events. Pure: a delivery's JSON in, CloudEvents
and the System Log events that mean nothing for tokens (each with why) out.

A delivery is `{"eventType": "com.okta.event_hook", ..., "data": {"events": [LogEvent, ...]}}`;
each LogEvent has `uuid`, `published`, `eventType`, `outcome.result` and `target` (the user is
the target of type `User`, its `alternateId` the login). Okta cannot fix one event of a
delivery, so a LogEvent tokenwarden cannot use is ignored with why, never refused: refusing the
delivery would only make Okta send it again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from events import catalog
from events.cloudevent import MAX_FIELD_CHARS, CloudEvent, check_not_future, parse_event
from events.errors import MalformedEvent

#: Okta's System Log event type -> the tokenwarden event it is.
EVENT_TYPES = {
    "user.account.update_password": catalog.PASSWORD_CHANGED,
    "user.account.reset_password": catalog.PASSWORD_CHANGED,
    "user.lifecycle.deactivate": catalog.USER_LEFT,
    "user.lifecycle.suspend": catalog.USER_LEFT,
    "user.lifecycle.delete.initiated": catalog.USER_LEFT,
}

#: Most System Log events one delivery may carry (Okta sends up to about 50); more is not Okta.
MAX_EVENTS_PER_DELIVERY = 1000

#: The one outcome that says the change happened.
SUCCESS = "SUCCESS"


def source_for(source_name: str) -> str:
    """The CloudEvent `source` of what an Okta source sent: with the Okta `uuid` as the id,
    a retried delivery is the same event again, which the workers drop."""
    return f"urn:tokenwarden:okta:{source_name}"


@dataclass(frozen=True)
class Ignored:
    """A System Log event acknowledged but not acted on: what the audit trail keeps of it
    (a few fields, each cut short: never the whole LogEvent) and why."""

    record: dict[str, Any]
    why: str
    #: `source` + Okta's `uuid`, as a CloudEvent's key (None when the uuid is unusable): what
    #: tells a retried delivery's ignored event from a new one.
    key: str | None = None


@dataclass(frozen=True)
class Translation:
    events: list[CloudEvent]
    ignored: list[Ignored]


def decode_delivery(body: bytes) -> list[Any]:
    """The System Log events of a delivery's body; MalformedEvent with one line of why when
    the body is not a delivery at all (that the sender can fix)."""
    try:
        document = json.loads(body)
    except RecursionError:
        raise MalformedEvent("the body nests arrays or objects too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        where = f" (line {exc.lineno}, column {exc.colno})" if hasattr(exc, "lineno") else ""
        raise MalformedEvent(f"the body is not JSON{where}") from None
    data = document.get("data") if isinstance(document, dict) else None
    events = data.get("events") if isinstance(data, dict) else None
    if not isinstance(events, list):
        raise MalformedEvent(
            'an Okta event hook delivery is a JSON object with "data": {"events": [...]}'
        )
    if len(events) > MAX_EVENTS_PER_DELIVERY:
        raise MalformedEvent(
            f"the delivery carries {len(events)} events; at most {MAX_EVENTS_PER_DELIVERY} "
            "are taken"
        )
    return events


def translate(
    log_events: list[Any],
    *,
    source: str,
    map_user: Callable[[str], str],
    now: datetime,
) -> Translation:
    """Every System Log event of a delivery, as a tokenwarden event or as ignored with why."""
    events: list[CloudEvent] = []
    ignored: list[Ignored] = []
    for log_event in log_events:
        outcome = translate_one(log_event, source=source, map_user=map_user, now=now)
        (events if isinstance(outcome, CloudEvent) else ignored).append(outcome)
    return Translation(events, ignored)


def translate_one(
    log_event: Any, *, source: str, map_user: Callable[[str], str], now: datetime
) -> CloudEvent | Ignored:
    if not isinstance(log_event, dict):
        return Ignored({"source": source}, "a System Log event must be a JSON object")
    record, key = _record(log_event, source), _key(log_event, source)
    okta_type = log_event.get("eventType")
    # A client may send any JSON where Okta sends text: an object or array is unhashable.
    if not isinstance(okta_type, str) or okta_type not in EVENT_TYPES:
        why = f"Okta event type {_shown(okta_type)!r} means nothing for tokens"
        return Ignored(record, why, key)
    result = _outcome(log_event)
    if result != SUCCESS:
        return Ignored(record, f"outcome {_shown(result)!r}, not SUCCESS: nothing changed", key)
    login = user_target(log_event)
    if login is None:
        return Ignored(record, "no target of type User with an alternateId: whose is it?", key)
    user = map_user(login)
    document = {
        "specversion": "1.0",
        "id": log_event.get("uuid"),
        "source": source,
        "type": EVENT_TYPES[okta_type],
        "time": log_event.get("published"),
        "subject": user,
        "datacontenttype": "application/json",
        "data": {"user": user},
    }
    try:
        # After the mapping: a mapped user longer than a user may be is not usable either.
        event = parse_event(document)
        check_not_future(event, now)
    except MalformedEvent as exc:
        return Ignored(record, f"not usable: {_okta_names(str(exc))}", key)
    return event


def user_target(log_event: dict[str, Any]) -> str | None:
    """The login of the user the event is about: the first target of type User. (The actor
    may be an admin resetting someone else's password; the target is whose it was.)"""
    targets = log_event.get("target")
    for target in targets if isinstance(targets, list) else []:
        if isinstance(target, dict) and target.get("type") == "User":
            login = target.get("alternateId")
            return login if isinstance(login, str) and login.strip() else None
    return None


def _outcome(log_event: dict[str, Any]) -> Any:
    outcome = log_event.get("outcome")
    return outcome.get("result") if isinstance(outcome, dict) else None


def _record(log_event: dict[str, Any], source: str) -> dict[str, Any]:
    """What the audit trail keeps of an ignored event: who, what, when, each cut short."""
    record: dict[str, Any] = {"source": source}
    for name, field in (("id", "uuid"), ("type", "eventType"), ("time", "published")):
        if isinstance(log_event.get(field), str):
            record[name] = _shown(log_event[field])
    data = {}
    login = user_target(log_event)
    if login is not None:
        data["user"] = _shown(login)
    if isinstance(_outcome(log_event), str):
        data["outcome"] = _shown(_outcome(log_event))
    if data:
        record["data"] = data
    return record


def _key(log_event: dict[str, Any], source: str) -> str | None:
    """The key the event has at its source (as CloudEvent.key), when its uuid is text an
    event id may be; else None."""
    event_id = log_event.get("uuid")
    if not isinstance(event_id, str) or not 0 < len(event_id.strip()) <= MAX_FIELD_CHARS:
        return None
    try:
        event_id.encode("utf-8")  # a lone surrogate cannot be hashed into a marker
    except UnicodeEncodeError:
        return None
    return f"{source}\x00{event_id.strip()}"


def _shown(value: Any) -> str:
    """A value sent by the client as the audit trail and a reason may show it: text, at
    most MAX_FIELD_CHARS, valid UTF-8."""
    text = value if isinstance(value, str) else "missing" if value is None else type(value).__name__
    return text[:MAX_FIELD_CHARS].encode("utf-8", "replace").decode("utf-8")


#: The CloudEvent attributes a reason names, as an Okta admin knows them.
_OKTA_NAMES = {
    "field 'id'": "field 'uuid'",
    "field 'time'": "field 'published'",
    "field 'data.user'": "the User target's alternateId",
    "field 'subject'": "the User target's alternateId",  # the user too, as mapped
}


def _okta_names(why: str) -> str:
    for ours, theirs in _OKTA_NAMES.items():
        why = why.replace(ours, theirs)
    return why
