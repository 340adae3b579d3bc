"""What an answer of Microsoft Graph means for one login: pure functions of the status, the
headers and the body (a whole answer, or one sub-response of a `$batch`), so that every rule
is a table test.

A status alone never decides: "not found" is a 404 whose body is Graph's own error
`Request_ResourceNotFound`, and a credential is refused only when Graph names why
(`InvalidAuthenticationToken`, `Authorization_RequestDenied`, ...). A proxy's error page is
that login's Unobserved, never a departure and never an alarm.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from worker.directories.base import Observation, Unobserved
from worker.errors import DirectoryCredentialsRejected

#: The properties asked for each user (Graph returns lastPasswordChangeDateTime and
#: accountEnabled only when they are selected).
SELECT = "id,userPrincipalName,accountEnabled,lastPasswordChangeDateTime"
#: Graph's error code for "no such user".
NOT_FOUND_CODE = "Request_ResourceNotFound"
#: Graph's error code for an access token it does not take (expired, revoked, wrong audience).
INVALID_TOKEN_CODE = "InvalidAuthenticationToken"
#: Graph's error code for an app without the permission asked for.
DENIED_CODE = "Authorization_RequestDenied"
#: The application permission the checks need.
PERMISSION = "User.Read.All"
#: Longest piece of Graph's error message quoted, in characters.
MAX_QUOTED = 160


@dataclass(frozen=True)
class Retry:
    """Graph is busy or down (429, 5xx) or could not be reached: ask again, after Graph's
    Retry-After when it gave one (`retry_after`, the header as sent), else after a backoff."""

    why: str
    retry_after: str | None = None


@dataclass(frozen=True)
class Renew:
    """Graph refused the access token itself (expired or revoked): get a new one, ask again."""

    why: str


Answer = Observation | Unobserved | Retry | Renew


def user_path(login: str) -> str:
    """The relative URL of a user lookup: the UPN percent-encoded (`#` of a guest's UPN too)."""
    from urllib.parse import quote

    return f"/users/{quote(login, safe='@')}?$select={SELECT}"


def answer_for(login: str, status: int, headers: Mapping[str, str], body: object) -> Answer:
    """What one user lookup's answer (`body` already decoded: JSON, or bytes when it is not)
    means. Raises DirectoryCredentialsRejected when Graph refuses the app's permission."""
    if status == 200:
        return read_user(login, body)
    code, _message = graph_error(body)
    if status == 404 and code == NOT_FOUND_CODE:
        return Observation(login, found=False, enabled=False, status="not found")
    return failure(login, status, headers, body)


def failure(login: str, status: int, headers: Mapping[str, str], body: object) -> Answer:
    """What a non-2xx answer means, whether it is the whole `$batch`'s or one lookup's."""
    code, message = graph_error(body)
    if status == 429 or 500 <= status <= 599:
        return Retry(
            f"HTTP {status}{_named(code)} from Microsoft Graph", header(headers, "retry-after")
        )
    if status == 401 and code == INVALID_TOKEN_CODE:
        return Renew(f"{code}: {message}")
    if status == 403 and code is not None:
        raise rejected(code, message)
    if code is None:
        return Unobserved(login, f"HTTP {status} from Microsoft Graph without its error shape")
    return Unobserved(login, f"HTTP {status} from Microsoft Graph ({code}: {message})")


def rejected(code: str, message: str) -> DirectoryCredentialsRejected:
    if code == DENIED_CODE:
        return DirectoryCredentialsRejected(
            f"Microsoft Graph refused the app ({code}: {message}): grant it the application "
            f"permission Microsoft Graph {PERMISSION} and give admin consent (Entra admin center "
            "→ App registrations → the app → API permissions)"
        )
    return DirectoryCredentialsRejected(f"Microsoft Graph refused the app ({code}: {message})")


def read_user(login: str, body: object) -> Observation | Unobserved:
    """A user as Graph answers it, with the properties of SELECT."""
    if not isinstance(body, dict) or not isinstance(body.get("accountEnabled"), bool):
        return Unobserved(login, "Microsoft Graph answered a user without accountEnabled")
    changed = body.get("lastPasswordChangeDateTime")
    when = None
    if changed is not None:
        when = parse_time(changed)
        if when is None:
            shown = quote(str(changed), 40)
            return Unobserved(login, f"unreadable lastPasswordChangeDateTime {shown!r}")
    enabled = body["accountEnabled"]
    return Observation(
        login,
        found=True,
        enabled=enabled,
        status=f"accountEnabled={'true' if enabled else 'false'}",
        password_changed_at=when,
    )


def parse_time(value: object) -> datetime | None:
    """Graph's ISO 8601 timestamp as an aware UTC datetime; None when unreadable or naive."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return when.astimezone(UTC)


def graph_error(body: object) -> tuple[str | None, str]:
    """Graph's `{"error": {"code", "message"}}`: (code, message), or (None, "")."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        code = error.get("code")
        if isinstance(code, str) and code:
            message = error.get("message")
            return code, quote(message if isinstance(message, str) else "", MAX_QUOTED)
    return None, ""


def decode(body: bytes) -> object:
    """The JSON body, or the bytes themselves when it is not JSON."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return body


def header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return str(value)
    return None


def quote(text: str, limit: int) -> str:
    """A short, single-line, printable piece of text."""
    text = re.sub(r"\s+", " ", "".join(c if c.isprintable() else " " for c in text)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _named(code: str | None) -> str:
    return f" ({code})" if code else ""
