"""CloudEvents 1.0 in structured JSON mode: validation at the edge, and building outgoing ones.

Validation is by pydantic: a malformed event raises MalformedEvent with one line saying what is
wrong. This module does no I/O.
"""

from __future__ import annotations

import json
import re
import unicodedata
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from events import catalog
from events.errors import MalformedEvent

#: Longest event, in bytes, accepted as JSON. Ours are well under 2 KiB.
MAX_EVENT_BYTES = 64 * 1024

#: Longest id, source, subject, user or server name, in characters.
MAX_FIELD_CHARS = 256

#: Deepest nesting of arrays and objects an event may hold. Ours nest three deep; a deeper one
#: is an attack on the recursive JSON encoder and validators, not an event.
MAX_NESTING = 32


def _printable(value: str) -> str:
    """Names, users and ids are text a person reads: no control characters (NUL, escapes,
    line breaks), which would also let them masquerade in logs and tables."""
    if any(unicodedata.category(ch) in {"Cc", "Cs"} for ch in value):
        raise ValueError("must not contain control characters")
    return value


Text = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_FIELD_CHARS),
    AfterValidator(_printable),
]


#: Earliest and latest event time taken (Apple's portals are younger than the first bound).
EARLIEST_TIME = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(9000, 1, 1, tzinfo=UTC)

#: How far in the future an event's time may be before it is refused (clock skew).
FUTURE_SKEW = timedelta(minutes=5)


_RFC3339_START = re.compile(r"\s*\d{4}-\d{2}-\d{2}[Tt]")


class UserData(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    user: Text


class ServerData(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    server: Text
    org: (
        Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_FIELD_CHARS)] | None
    ) = None


class CloudEvent(BaseModel):
    """An incoming event as validated; `data` is typed by `type`."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    specversion: Literal["1.0"]
    id: Text
    source: Text
    type: Text
    time: AwareDatetime | None = None
    subject: Annotated[str, StringConstraints(max_length=MAX_FIELD_CHARS)] | None = None
    datacontenttype: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("time", mode="before")
    @classmethod
    def _time_is_text(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str | datetime):
            raise ValueError("must be an RFC 3339 string")
        # pydantic would take a string of digits as a Unix time; RFC 3339 starts with a date.
        if isinstance(value, str) and not _RFC3339_START.match(value):
            raise ValueError("must be an RFC 3339 string")
        return value

    @field_validator("time")
    @classmethod
    def _time_in_range(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        try:
            moment = value.astimezone(UTC)
        except OverflowError:
            raise ValueError("is out of range") from None
        if not EARLIEST_TIME <= moment < LATEST_TIME:
            raise ValueError("is out of range")
        return moment

    @property
    def key(self) -> str:
        """What makes an event unique (CloudEvents: `source` + `id`)."""
        return f"{self.source}\x00{self.id}"

    def occurred_at(self, received_at: datetime) -> datetime:
        """When it happened; an event without `time` happened when it was received."""
        return (self.time or received_at).astimezone(UTC)

    def user(self) -> str:
        return UserData.model_validate(self.data).user

    def server(self) -> tuple[str, str | None]:
        data = ServerData.model_validate(self.data)
        return data.server, (data.org or None)

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def parse_event(raw: str | bytes | dict[str, Any]) -> CloudEvent:
    """Validate one incoming event (a JSON text or an already-decoded object)."""
    document = _decode_json(raw) if isinstance(raw, str | bytes) else raw
    if not isinstance(document, dict):
        raise MalformedEvent(f"an event must be a JSON object, not {_json_kind(document)}")
    if _nested_deeper_than(document, MAX_NESTING):
        raise _too_deep()
    _check_size(document)
    try:
        event = CloudEvent.model_validate(document)
    except ValidationError as exc:
        raise MalformedEvent(_describe(exc, "")) from None
    # Again as the workers will read it (a time's fraction written out may be longer), so that
    # an event taken here is never one they refuse.
    _check_size(event.to_wire())
    if event.type not in catalog.INCOMING_TYPES:
        known = ", ".join(sorted(catalog.INCOMING_TYPES))
        raise MalformedEvent(f"unknown event type {event.type[:80]!r}; tokenwarden takes {known}")
    try:
        if event.type in catalog.USER_EVENTS:
            event.user()
        else:
            event.server()
    except ValidationError as exc:
        raise MalformedEvent(
            f"{event.type} event {event.id[:80]!r}: {_describe(exc, 'data.')}"
        ) from None
    return event


def check_not_future(event: CloudEvent, now: datetime) -> None:
    """Refuse an event that says it happened in the future (beyond clock skew): it would
    doom every token installed until then."""
    if event.time is not None and event.time > now + FUTURE_SKEW:
        raise MalformedEvent(
            f"event {event.id[:80]!r} has a time in the future "
            f"({event.time.isoformat().replace('+00:00', 'Z')}; now is "
            f"{now.astimezone(UTC).replace(microsecond=0).isoformat().replace('+00:00', 'Z')})"
        )


def new_event(
    event_type: str,
    data: dict[str, Any],
    *,
    source: str,
    time: datetime | None = None,
    event_id: str | None = None,
    subject: str | None = None,
) -> CloudEvent:
    """Build an incoming event (what `tokenwarden emit` and the Python API publish)."""
    document = {
        "specversion": "1.0",
        "id": event_id if event_id is not None else str(uuid.uuid4()),
        "source": source,
        "type": event_type,
        "datacontenttype": "application/json",
        "data": data,
    }
    if time is not None:
        document["time"] = time.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if subject is not None:
        document["subject"] = subject
    return parse_event(document)


def outgoing_event(
    event_type: str,
    *,
    event_id: str,
    subject: str,
    time: datetime,
    data: dict[str, Any],
    source: str = catalog.SOURCE_WORKER,
) -> dict[str, Any]:
    """An outgoing event as it goes on the wire (structured JSON mode)."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": event_type,
        "subject": subject,
        "time": time.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": data,
    }


def stable_id(*parts: str) -> str:
    """An id that is the same every time the same parts are given (for outgoing events, so
    a retried decision produces the same event and receivers can de-duplicate)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "tokenwarden:" + "\x00".join(parts)))


def _decode_json(raw: str | bytes) -> Any:
    if len(raw) > MAX_EVENT_BYTES:
        raise MalformedEvent(f"the event is {len(raw)} bytes; at most {MAX_EVENT_BYTES} are taken")
    try:
        return json.loads(raw)
    except RecursionError:
        raise _too_deep() from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = (
            f" (line {exc.lineno}, column {exc.colno})"
            if isinstance(exc, json.JSONDecodeError)
            else ""
        )
        raise MalformedEvent(f"the event is not JSON{where}") from None
    except ValueError:  # a number with more digits than Python converts (int_max_str_digits)
        raise MalformedEvent("the event holds a number too long to read") from None


def _check_size(document: dict[str, Any]) -> None:
    """An event given as an object is held to the limit of one given as text, by its size
    as compact JSON (an event of an HTTP batch, or in binary mode, has no text of its own)."""
    try:
        text = json.dumps(document, ensure_ascii=False, separators=(",", ":"), default=str)
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise MalformedEvent(
            "the event holds text that is not valid Unicode (a lone surrogate); send UTF-8"
        ) from None
    if size > MAX_EVENT_BYTES:
        raise MalformedEvent(f"the event is {size} bytes; at most {MAX_EVENT_BYTES} are taken")


def _too_deep() -> MalformedEvent:
    return MalformedEvent(
        f"the event nests arrays or objects more than {MAX_NESTING} levels deep; "
        "send a flat CloudEvent"
    )


def _nested_deeper_than(document: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` levels (without recursing, which is
    what a deep document would exhaust)."""
    pending = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if not isinstance(value, dict | list | tuple):
            continue
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value
        pending.extend((child, depth + 1) for child in children)
    return False


def _json_kind(value: Any) -> str:
    return {
        list: "an array",
        str: "a string",
        int: "a number",
        float: "a number",
        bool: "a boolean",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _describe(exc: ValidationError, prefix: str) -> str:
    error = exc.errors(include_input=False, include_url=False)[0]
    field = prefix + ".".join(str(part) for part in error["loc"])
    if error["type"] == "missing":
        return f"field {field!r} is missing"
    if field == "specversion":
        return "field 'specversion' must be \"1.0\" (CloudEvents 1.0)"
    if field == "time":
        if "out of range" in error["msg"]:
            return "field 'time' is out of range (years 2000 to 8999)"
        return "field 'time' is not an RFC 3339 time with an offset (like 2026-01-17T11:02:21Z)"
    return f"field {field!r} is invalid: {error['msg'].lower()}"
