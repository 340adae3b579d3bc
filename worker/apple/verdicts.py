"""What asking Apple about a token comes to: the account it answers, or a classified failure.

These are plain values, so the rules deciding what a verdict means (worker/rules/) stay pure.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, TypeVar

from worker.config import DEFAULT_APPLE_CHECK_INTERVAL_S
from worker.records import AppleState

#: A moment, as a datetime or as milliseconds.
T = TypeVar("T", datetime, int)


class Verdict(enum.StrEnum):
    #: Apple answered `/account`: the token works.
    ACCEPTED = "accepted"
    #: Apple refused the token (revoked, replaced, expired, bad signature, unknown consumer).
    REJECTED = "rejected"
    #: Someone with the right role must accept new terms in the portal; the token itself is fine.
    TERMS_NOT_ACCEPTED = "terms_not_accepted"
    #: Timeouts, connection errors, 429 and 5xx, after the retries: we do not know.
    UNREACHABLE = "unreachable"
    #: An answer we cannot understand: we do not know either, but it is worth a look.
    MALFORMED = "malformed"


#: Apple's error codes (in the body or WWW-Authenticate of a 401/403) that mean the token is dead.
REJECTED_CODES = (
    "token_rejected",
    "token_expired",
    "signature_invalid",
    "consumer_key_rejected",
    "ACCESS_DENIED",
    "FORBIDDEN",
)

#: The 403 code that means new terms and conditions wait to be accepted in the portal.
TERMS_CODE = "T_C_NOT_SIGNED"


@dataclass(frozen=True)
class AppleAccount:
    """What `GET /account` says about the server a token belongs to. Unknown fields are
    ignored; every field but `server_uuid` may be missing."""

    server_uuid: str
    server_name: str | None = None
    #: The Managed Apple Account that generated the token in use (older answers:
    #: `facilitator_id`).
    admin_id: str | None = None
    org_name: str | None = None
    org_email: str | None = None
    org_phone: str | None = None
    org_address: str | None = None
    org_id: str | None = None
    org_id_hash: str | None = None
    org_type: str | None = None
    org_version: str | None = None

    @classmethod
    def from_answer(cls, data: Any) -> AppleAccount | None:
        """The account in a decoded `/account` body, or None when it has no `server_uuid`."""
        if not isinstance(data, dict):
            return None
        uuid = data.get("server_uuid")
        if not isinstance(uuid, str) or not uuid.strip():
            return None
        known = {f.name for f in fields(cls)}
        values = {
            name: value.strip()
            for name, value in data.items()
            if name in known and isinstance(value, str) and value.strip()
        }
        if "admin_id" not in values and isinstance(data.get("facilitator_id"), str):
            values["admin_id"] = data["facilitator_id"].strip() or None
        return cls(**values)


@dataclass(frozen=True)
class CheckResult:
    """One check of one token: the verdict, and the account when Apple accepted it."""

    verdict: Verdict
    account: AppleAccount | None = None
    #: Apple's error code (e.g. `token_rejected`, `T_C_NOT_SIGNED`), or what went wrong on the
    #: way (`timeout`, `connection`, `http_503`, `http_429`, `not_json`...). None when accepted.
    code: str | None = None
    #: One line for a person, never a secret: e.g. "HTTP 503 from /account, 3 attempts".
    detail: str = ""

    @property
    def confirmed(self) -> bool:
        """Apple gave an answer about the token (accepted, rejected or terms)."""
        return self.verdict in (Verdict.ACCEPTED, Verdict.REJECTED, Verdict.TERMS_NOT_ACCEPTED)


#: A token Apple has not confirmed for this many check intervals is shown as unknown.
STALE_INTERVALS = 3


def standing(
    state: AppleState, terms_since: datetime | None, now: datetime, interval_s: int
) -> str:
    """Apple's verdict on a token as a person should read it now: `rejected` (for good),
    `terms_not_accepted`, `accepted`, or `unknown` (never confirmed, or not for
    STALE_INTERVALS intervals: transient failures are not alarms, but they are not news of
    health either). With scheduled checks off (`interval_s` 0), the default interval counts."""
    interval_s = interval_s or DEFAULT_APPLE_CHECK_INTERVAL_S
    if still_refused(state.verdict, state.confirmed_at, state.rejected_at):
        return Verdict.REJECTED.value
    confirmed = state.confirmed_at
    if confirmed is None:
        return "unknown"
    if now - confirmed > timedelta(seconds=STALE_INTERVALS * interval_s):
        return "unknown"
    if terms_since is not None:
        return Verdict.TERMS_NOT_ACCEPTED.value
    return Verdict.ACCEPTED.value


def still_refused(verdict: str | None, confirmed_at: T | None, rejected_at: T | None) -> bool:
    """Apple refused the token (`rejected_at`) and has not accepted it in a later answer: the
    refusal holds through any number of failed checks. Times of any one comparable kind
    (datetimes here, milliseconds in the metrics)."""
    if rejected_at is None:
        return False
    taken_back = (
        verdict == Verdict.ACCEPTED.value
        and confirmed_at is not None
        and confirmed_at > rejected_at
    )
    return not taken_back
