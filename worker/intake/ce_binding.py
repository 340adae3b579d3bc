"""The HTTP protocol binding of CloudEvents 1.0, read: which content mode a request uses, and
the events it carries, each validated as `tokenwarden emit --file` validates a line. Pure: bytes
and headers in, events or a refusal out.

- structured: `Content-Type: application/cloudevents+json`, the body is one event (plain
  `application/json` without `ce-` headers is taken as structured too);
- batched: `application/cloudevents-batch+json`, the body is a JSON array of events;
- binary: `ce-specversion`, `ce-id`, `ce-source`, `ce-type`, ... headers, the body is `data`
  (`Content-Type: application/json`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import unquote_to_bytes

from events.cloudevent import MAX_NESTING, CloudEvent, MalformedEvent
from worker.errors import InvalidInput
from worker.publish import validate

STRUCTURED, BATCH, BINARY = "structured", "batch", "binary"

STRUCTURED_TYPE = "application/cloudevents+json"
BATCH_TYPE = "application/cloudevents-batch+json"
JSON_TYPE = "application/json"

#: Most events taken in one batch; a larger batch is refused whole (400).
MAX_BATCH_EVENTS = 1000

#: Longest value of a `ce-` header, in characters (the event's own fields are shorter still).
MAX_HEADER_CHARS = 1024

#: A CloudEvents attribute name (CloudEvents 1.0, "Attribute Naming Convention").
_ATTRIBUTE = re.compile(r"^[a-z0-9]{1,20}$")
_HEADER_PREFIX = "ce-"


class Unsupported(InvalidInput):
    """The content type is none this endpoint reads (415)."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


class Refused(InvalidInput):
    """The request is not a valid delivery (400): `why` in one line, and for a batch what is
    wrong with each event, by index from 0."""

    def __init__(self, why: str, errors: list[dict[str, Any]] | None = None):
        super().__init__(why)
        self.why = why
        self.errors = errors or []


def content_mode(headers: Mapping[str, str]) -> str:
    """Which content mode the request uses, from its Content-Type (the binding's rule: a
    CloudEvents media type means structured or batched, anything else binary)."""
    media, charset = _media_type(headers.get("content-type", ""))
    if charset not in (None, "utf-8", "utf8"):
        raise Unsupported(f"charset {charset[:40]!r} is not taken; send UTF-8 JSON")
    if media == STRUCTURED_TYPE:
        return STRUCTURED
    if media == BATCH_TYPE:
        return BATCH
    if media.startswith("application/cloudevents"):
        raise Unsupported(
            f"event format {media[:80]!r} is not taken; send {STRUCTURED_TYPE} or {BATCH_TYPE}"
        )
    if media == JSON_TYPE:
        return BINARY if _HEADER_PREFIX + "specversion" in headers else STRUCTURED
    raise Unsupported(
        f"content type {media[:80] or '(none)'!r} is not taken; send {STRUCTURED_TYPE}, "
        f"{BATCH_TYPE}, or {JSON_TYPE} with ce- headers (binary mode)"
    )


def read_events(
    mode: str, headers: Mapping[str, str], body: bytes, now: datetime
) -> list[CloudEvent]:
    """The events of a request in `mode`, every one valid; else Refused, and none taken."""
    if mode == STRUCTURED:
        return [_valid(body, now)]
    if mode == BATCH:
        return _read_batch(body, now)
    return [_valid(_binary_event(headers, body), now)]


def _valid(raw: Any, now: datetime) -> CloudEvent:
    try:
        return validate(raw, now)
    except MalformedEvent as exc:
        raise Refused(str(exc)) from None


def _read_batch(body: bytes, now: datetime) -> list[CloudEvent]:
    document = _decode(body)
    if not isinstance(document, list):
        raise Refused(f"a batch must be a JSON array of events, not {_kind(document)}")
    if len(document) > MAX_BATCH_EVENTS:
        raise Refused(
            f"the batch holds {len(document)} events; at most {MAX_BATCH_EVENTS} are taken "
            "in one request"
        )
    events, errors = [], []
    for index, raw in enumerate(document):
        try:
            events.append(validate(raw, now))
        except MalformedEvent as exc:
            errors.append({"index": index, "error": str(exc)})
    if errors:
        raise Refused(
            f"{len(errors)} of {len(document)} events are invalid; none was taken", errors
        )
    return events


def _binary_event(headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """The event a binary-mode request carries: its attributes from the `ce-` headers, its
    data the body."""
    if _HEADER_PREFIX + "datacontenttype" in headers:
        raise Refused("binary mode takes the data's type from Content-Type, not ce-datacontenttype")
    event: dict[str, Any] = {}
    for name, value in headers.items():
        if not name.lower().startswith(_HEADER_PREFIX):
            continue
        attribute = name.lower().removeprefix(_HEADER_PREFIX)
        if not _ATTRIBUTE.fullmatch(attribute):
            raise Refused(
                f"header {name[:40]!r} names no CloudEvents attribute "
                "(1 to 20 lowercase letters or digits after ce-)"
            )
        event[attribute] = _header_value(name, value)
    data = _decode(body) if body.strip() else None
    if not isinstance(data, dict):
        raise Refused(f"binary-mode data must be a JSON object, not {_kind(data)}")
    return {**event, "datacontenttype": JSON_TYPE, "data": data}


def _header_value(name: str, value: str) -> str:
    """A `ce-` header's value as the binding encodes it: a quoted string unquoted, then one
    round of percent-decoding, which must give UTF-8."""
    value = value.strip()
    if len(value) > MAX_HEADER_CHARS:
        raise Refused(f"header {name!r} is longer than {MAX_HEADER_CHARS} characters")
    if any(not " " <= ch <= "~" for ch in value):
        raise Refused(f"header {name!r} holds characters outside printable ASCII; percent-encode")
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = re.sub(r"\\(.)", r"\1", value[1:-1])
    try:
        return unquote_to_bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(f"header {name!r} percent-encodes bytes that are not UTF-8") from None


def _decode(body: bytes) -> Any:
    """JSON from a body, or Refused with one line of why."""
    try:
        return json.loads(body)
    except RecursionError:
        raise Refused(f"the body nests arrays or objects more than {MAX_NESTING} deep") from None
    except json.JSONDecodeError as exc:
        raise Refused(f"the body is not JSON (line {exc.lineno}, column {exc.colno})") from None
    except UnicodeDecodeError:
        raise Refused("the body is not UTF-8") from None
    except ValueError:  # a number with more digits than Python converts
        raise Refused("the body holds a number too long to read") from None


def _media_type(value: str) -> tuple[str, str | None]:
    """`application/json; charset=UTF-8` -> ("application/json", "utf-8")."""
    media, *params = value.split(";")
    charset = None
    for param in params:
        key, _, raw = param.partition("=")
        if key.strip().lower() == "charset":
            charset = raw.strip().strip('"').lower()
    return media.strip().lower(), charset


def _kind(value: Any) -> str:
    return {
        list: "an array",
        dict: "an object",
        str: "a string",
        int: "a number",
        float: "a number",
        bool: "a boolean",
        type(None): "nothing",
    }.get(type(value), type(value).__name__)
