"""What an answer from Apple's enrollment service means: pure functions of the status, the
headers and the body, so every rule is a table test (tests/test_apple_classify.py).

A status alone never decides: a 401 or 403 is a rejection only when the body or the
`WWW-Authenticate` header names one of Apple's codes; a proxy's bare 403 page is not Apple
saying the token is dead, so it is "malformed" (worth a look) rather than an alarm.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from worker.apple.verdicts import REJECTED_CODES, TERMS_CODE, AppleAccount, Verdict
from worker.errors import (
    AppleError,
    AppleMalformed,
    AppleRejected,
    AppleTermsNotAccepted,
    AppleUnreachable,
)
from worker.logs import redact_text

#: Longest piece of an answer's body quoted in a message or a log line, in characters.
MAX_QUOTED_BODY = 120

#: JSON fields in which Apple (or a provider like it) names its error code.
_CODE_FIELDS = ("code", "error", "error_code", "errorCode", "oauth_problem")

TERMS_MESSAGE = (
    "new terms and conditions wait in Apple School/Business Manager: someone with the "
    "Administrator role must sign in and accept them; the token itself still works"
)

_VERDICTS: dict[type[AppleError], Verdict] = {
    AppleRejected: Verdict.REJECTED,
    AppleTermsNotAccepted: Verdict.TERMS_NOT_ACCEPTED,
    AppleUnreachable: Verdict.UNREACHABLE,
    AppleMalformed: Verdict.MALFORMED,
}


def classify(path: str, status: int, headers: Mapping[str, str], body: bytes) -> AppleError | None:
    """The error an answer amounts to, or None for a 2xx (whose body the caller still reads
    with read_session or read_account)."""
    if 200 <= status < 300:
        return None
    if is_transient(status):
        return AppleUnreachable(f"HTTP {status} from {path}", code=f"http_{status}")
    if status in (401, 403):
        named = _named_codes(headers, body)
        if status == 403 and TERMS_CODE.lower() in named:
            return AppleTermsNotAccepted(TERMS_MESSAGE, code=TERMS_CODE)
        for code in REJECTED_CODES:
            if code.lower() in named:
                return AppleRejected(
                    f"Apple rejected the token ({code}): download a new token from ASM/ABM",
                    code=code,
                )
    return malformed(path, status, body)


def is_transient(status: int) -> bool:
    """429 and 5xx: Apple is busy or down, the token may be fine; ask again later."""
    return status == 429 or 500 <= status <= 599


def malformed(path: str, status: int, body: bytes, code: str | None = None) -> AppleMalformed:
    quoted = quote_body(body)
    shown = f": {quoted}" if quoted else " with an empty body"
    return AppleMalformed(
        f"unexpected answer from Apple's enrollment service: HTTP {status} from {path}{shown}",
        code=code or f"http_{status}",
    )


def read_session(path: str, status: int, body: bytes) -> str:
    """The session token in a 2xx `/session` answer. Its body is never quoted: it may hold
    the session token under a name we do not expect."""
    document = _json(body)
    token = document.get("auth_session_token") if isinstance(document, dict) else None
    if not isinstance(token, str) or not token.strip():
        raise AppleMalformed(
            f"unexpected answer from Apple's enrollment service: HTTP {status} from {path} "
            "without an auth_session_token",
            code="not_json" if document is None else "no_session_token",
        )
    return token.strip()


def read_account(path: str, status: int, body: bytes) -> AppleAccount:
    """The account in a 2xx `/account` answer."""
    document = _json(body)
    if document is None:
        raise malformed(path, status, body, code="not_json")
    account = AppleAccount.from_answer(document)
    if account is None:
        raise malformed(path, status, body, code="no_server_uuid")
    return account


def verdict_of(error: AppleError) -> Verdict:
    for kind, verdict in _VERDICTS.items():
        if isinstance(error, kind):
            return verdict
    return Verdict.MALFORMED


def quote_body(body: bytes) -> str:
    """A short, single-line, printable piece of a body, for a person to recognise it."""
    text = body[: MAX_QUOTED_BODY * 4].decode("utf-8", errors="replace")
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = redact_text(" ".join(text.split()))
    if len(text) > MAX_QUOTED_BODY:
        text = text[: MAX_QUOTED_BODY - 1] + "…"
    return text


def _named_codes(headers: Mapping[str, str], body: bytes) -> set[str]:
    """Every known code (lower case) the `WWW-Authenticate` header or the body names."""
    texts = [_header(headers, "www-authenticate")]
    document = _json(body)
    if isinstance(document, dict):
        texts += [document[f] for f in _CODE_FIELDS if isinstance(document.get(f), str)]
    elif isinstance(document, str):  # a bare JSON string: "T_C_NOT_SIGNED"
        texts.append(document)
    elif document is None and not _looks_like_html(headers, body):
        texts.append(body.decode("utf-8", errors="replace"))
    known = (*REJECTED_CODES, TERMS_CODE)
    return {code.lower() for code in known for text in texts if _names(text, code)}


#: Apple's codes that are also what any proxy says: matched in capitals only.
CAPITALS_ONLY = frozenset({"FORBIDDEN", "ACCESS_DENIED"})


def _names(text: str, code: str) -> bool:
    # Whole words: `token_rejected` must not be found in `not_token_rejected_yet`. Apple's
    # codes that are also plain words (`FORBIDDEN`, `ACCESS_DENIED`) count only as Apple writes
    # them, in capitals: a proxy's "403 Forbidden" is not Apple refusing the token.
    flags = 0 if code in CAPITALS_ONLY else re.I
    pattern = rf"(?<![A-Za-z0-9_]){re.escape(code)}(?![A-Za-z0-9_])"
    return re.search(pattern, text, flags) is not None


def _looks_like_html(headers: Mapping[str, str], body: bytes) -> bool:
    # A proxy's or load balancer's error page ("403 Forbidden") is not Apple naming a code.
    return "html" in _header(headers, "content-type").lower() or body.lstrip()[:1] == b"<"


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return ""


def _json(body: bytes) -> object | None:
    """The decoded JSON body, or None when it is not JSON."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None
