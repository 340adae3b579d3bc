"""What Google's answers mean: pure functions of a status and a body, so every rule is a table
test. The Admin SDK's errors look like

    {"error": {"code": 403, "message": "...", "errors": [{"reason": "forbidden", ...}],
               "status": "PERMISSION_DENIED"}}

and a status alone never decides: a proxy's HTML 404 is not Google saying a user does not
exist, and a 403 naming `rateLimitExceeded` is Google asking to slow down, not refusing the
credential.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from worker.logs import redact_text

#: The reasons of a 403 (or 429) that mean "slow down", not "not allowed".
THROTTLE_REASONS = frozenset(
    {"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded", "dailyLimitExceeded"}
)
#: The token endpoint's error codes that say the credential itself is refused.
REFUSED_GRANT_CODES = frozenset(
    {"invalid_grant", "unauthorized_client", "access_denied", "invalid_client", "invalid_scope"}
)
#: Longest piece of Google's message kept in an error, in characters.
MAX_MESSAGE = 160

_JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*\.?[A-Za-z0-9_-]*")
_BEARER_SHAPE = re.compile(r"ya29\.[A-Za-z0-9_.-]+")


class Kind(enum.Enum):
    OK = "ok"
    NOT_FOUND = "not found"  # Google's own "no such user"
    EXPIRED = "expired"  # 401: the access token is refused; renew it once
    REFUSED = "refused"  # 403 in Google's words: the credential lacks the right
    TRANSIENT = "transient"  # 429, 5xx, a throttling 403: retry
    UNREADABLE = "unreadable"  # anything else (a redirect too): this login is unobserved


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    #: Google's reason (notFound, forbidden, rateLimitExceeded...) or `http_<status>`.
    code: str
    #: One line for a person: the status, Google's reason and message, scrubbed.
    detail: str


def classify(status: int, content_type: str, body: bytes) -> Verdict:
    """What an Admin SDK answer amounts to (a 2xx still has its body read by the caller)."""
    error = google_error(content_type, body)
    reasons = error.reasons if error else ()
    code = reasons[0] if reasons else f"http_{status}"
    detail = f"HTTP {status}" + (f" {code}: {error.message}" if error else "")
    if 200 <= status < 300:
        return Verdict(Kind.OK, "ok", detail)
    if 300 <= status < 400:  # never followed: the bearer would go wherever it points
        return Verdict(Kind.UNREADABLE, code, f"HTTP {status}, a redirect (not followed)")
    if status == 429 or status >= 500 or (status == 403 and THROTTLE_REASONS & set(reasons)):
        return Verdict(Kind.TRANSIENT, code, detail)
    if error is None:  # not Google's JSON: a proxy or a load balancer speaking
        return Verdict(Kind.UNREADABLE, code, f"HTTP {status} that is not Google's error JSON")
    if status == 401:
        return Verdict(Kind.EXPIRED, code, detail)
    if status == 403:
        return Verdict(Kind.REFUSED, code, detail)
    if status == 404 and (error.code == 404 or "notFound" in reasons):
        return Verdict(Kind.NOT_FOUND, code, detail)
    return Verdict(Kind.UNREADABLE, code, detail)


@dataclass(frozen=True)
class GoogleError:
    code: int | None
    reasons: tuple[str, ...]
    message: str


def google_error(content_type: str, body: bytes) -> GoogleError | None:
    """The error object of a Google API answer, or None when the body is not one."""
    if "json" not in content_type.lower():
        return None
    document = _json(body)
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        return None
    errors = error.get("errors")
    reasons = tuple(
        e["reason"]
        for e in (errors if isinstance(errors, list) else [])
        if isinstance(e, dict) and isinstance(e.get("reason"), str)
    )
    code = error.get("code")
    message = error.get("message")
    return GoogleError(
        code if isinstance(code, int) else None,
        reasons,
        one_line(message if isinstance(message, str) else ""),
    )


def json_object(body: bytes) -> dict | None:
    document = _json(body)
    return document if isinstance(document, dict) else None


def user_state(user: dict) -> tuple[bool, str] | None:
    """(enabled, status) of a Directory API user, or None when it does not look like one."""
    suspended, archived = user.get("suspended", False), user.get("archived", False)
    if not isinstance(user.get("primaryEmail"), str):
        return None
    if not isinstance(suspended, bool) or not isinstance(archived, bool):
        return None
    if suspended:
        return False, "suspended"
    if archived:
        return False, "archived"
    return True, "active"


def activities(document: dict) -> list[dict] | None:
    """The activities of a Reports API page (none when `items` is absent), or None when the
    page does not look like one."""
    items = document.get("items", [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        return None
    return items


def activity_time(activity: dict) -> datetime:
    """`id.time` of an activity; raises ValueError when it is absent or unreadable."""
    ident = activity.get("id")
    return parse_time(ident.get("time") if isinstance(ident, dict) else None)


def event_names(activity: dict) -> list[str]:
    events = activity.get("events")
    return [
        e["name"]
        for e in (events if isinstance(events, list) else [])
        if isinstance(e, dict) and isinstance(e.get("name"), str)
    ]


def parameter_values(activity: dict, event_name: str, parameter: str) -> list[str]:
    """The values of `parameter` in the activity's events named `event_name`."""
    values = []
    for event in activity.get("events") or []:
        if not isinstance(event, dict) or event.get("name") != event_name:
            continue
        for p in event.get("parameters") or []:
            if (
                isinstance(p, dict)
                and p.get("name") == parameter
                and isinstance(p.get("value"), str)
            ):
                values.append(p["value"])
    return values


def parse_time(value: object) -> datetime:
    """An RFC 3339 timestamp as an aware UTC datetime; ValueError when it is not one."""
    if not isinstance(value, str) or "T" not in value:
        raise ValueError(f"not an RFC 3339 timestamp: {one_line(str(value))[:40]!r}")
    when = datetime.fromisoformat(value)
    if when.tzinfo is None:
        raise ValueError(f"a timestamp without a time zone: {value[:40]!r}")
    return when.astimezone(UTC)


def rfc3339(when: datetime) -> str:
    """`2025-03-01T09:00:00.000Z`, as the Reports API takes `startTime`."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def one_line(text: str) -> str:
    """Printable, single-line, short, and with nothing shaped like a credential."""
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = redact_text(" ".join(text.split()))
    text = _BEARER_SHAPE.sub("[redacted]", _JWT_SHAPE.sub("[redacted]", text))
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def _json(body: bytes) -> object | None:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None
