"""What the store keeps, as plain frozen records, and how each maps to a Redis hash.

Times are stored as integer milliseconds since the epoch (compact, and they sort); secrets never
appear in these records: they are sealed in their own hash fields and opened only on demand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from worker.rules.policy import EMPTY_LAYER, PolicyLayer
from worker.timefmt import format_rfc3339

KEY_STAGED, KEY_CURRENT, KEY_RETIRED = "staged", "current", "retired"
TOKEN_CURRENT, TOKEN_SUPERSEDED = "current", "superseded"


def to_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def from_ms(value: str | int | None) -> datetime | None:
    if value in (None, ""):
        return None
    return datetime.fromtimestamp(int(value) / 1000, UTC)


def ms_field(moment: datetime | None) -> str:
    """A time as a hash field holds it ("" when unset), e.g. for a guard to compare."""
    return str(to_ms(moment)) if moment else ""


def _opt(value: str | None) -> str | None:
    return value or None


@dataclass(frozen=True)
class Server:
    id: str
    name: str
    org: str
    created_at: datetime
    current_key_id: str | None = None
    staged_key_id: str | None = None
    token_id: str | None = None
    #: What Apple's enrollment service calls the server and its organization.
    apple_name: str | None = None
    apple_org: str | None = None
    #: Since when new terms wait to be accepted in the portal (None: none that we know of).
    terms_since: datetime | None = None
    #: The server's own rotation policy (worker/rules/policy.py): what it overrides.
    policy: PolicyLayer = EMPTY_LAYER

    def to_hash(self) -> dict[str, str | int]:
        fields = {
            "id": self.id,
            "name": self.name,
            "org": self.org,
            "created_at": to_ms(self.created_at),
            "current_key": self.current_key_id or "",
            "staged_key": self.staged_key_id or "",
            "token": self.token_id or "",
        }
        apple = {
            "apple_name": self.apple_name or "",
            "apple_org": self.apple_org or "",
            "terms_since": to_ms(self.terms_since) if self.terms_since else "",
        }
        kept = {name: value for name, value in apple.items() if value != ""}
        return fields | kept | self.policy.to_fields()

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Server:
        return cls(
            id=data["id"],
            name=data["name"],
            org=data.get("org", ""),
            created_at=from_ms(data["created_at"]),
            current_key_id=_opt(data.get("current_key")),
            staged_key_id=_opt(data.get("staged_key")),
            token_id=_opt(data.get("token")),
            apple_name=_opt(data.get("apple_name")),
            apple_org=_opt(data.get("apple_org")),
            terms_since=from_ms(data.get("terms_since")),
            policy=PolicyLayer.from_fields(data),
        )


@dataclass(frozen=True)
class KeyPair:
    """A key pair's public facts; its private key stays sealed in the store."""

    id: str
    server_id: str
    state: str
    fingerprint: str
    serial_number: str
    not_after: datetime
    created_at: datetime
    cert_pem: str
    promoted_at: datetime | None = None
    retired_at: datetime | None = None

    def to_hash(self) -> dict[str, str | int]:
        return {
            "id": self.id,
            "server_id": self.server_id,
            "state": self.state,
            "fingerprint": self.fingerprint,
            "serial": self.serial_number,
            "not_after": to_ms(self.not_after),
            "created_at": to_ms(self.created_at),
            "cert": self.cert_pem,
            "promoted_at": to_ms(self.promoted_at) if self.promoted_at else "",
            "retired_at": to_ms(self.retired_at) if self.retired_at else "",
        }

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> KeyPair:
        return cls(
            id=data["id"],
            server_id=data["server_id"],
            state=data["state"],
            fingerprint=data["fingerprint"],
            serial_number=data.get("serial", ""),
            not_after=from_ms(data["not_after"]),
            created_at=from_ms(data["created_at"]),
            cert_pem=data["cert"],
            promoted_at=from_ms(data.get("promoted_at")),
            retired_at=from_ms(data.get("retired_at")),
        )

    def describe(self) -> dict[str, str | None]:
        return {
            "id": self.id,
            "state": self.state,
            "fingerprint_sha256": self.fingerprint,
            "serial": self.serial_number,
            "created_at": format_rfc3339(self.created_at),
            "certificate_not_after": format_rfc3339(self.not_after),
            "promoted_at": format_rfc3339(self.promoted_at) if self.promoted_at else None,
            "retired_at": format_rfc3339(self.retired_at) if self.retired_at else None,
        }


@dataclass(frozen=True)
class AppleState:
    """What asking Apple's enrollment service about a token found (decided by
    worker/rules/apple.py). Kept in the token's hash under the field names of `to_fields`."""

    #: A worker.apple.verdicts.Verdict value; None: Apple was never asked.
    verdict: str | None = None
    #: Apple's error code, or what went wrong on the way, for the verdict.
    code: str | None = None
    #: When Apple was last asked, and when it last gave an answer about the token.
    checked_at: datetime | None = None
    confirmed_at: datetime | None = None
    #: When Apple first refused the token (set once: the alarm is raised once).
    rejected_at: datetime | None = None
    #: The MDM server entry in ASM/ABM the token belongs to, as Apple names it.
    server_uuid: str | None = None

    def to_fields(self) -> dict[str, str | int]:
        """Every field, "" for the unknown ones (a write must clear an old code)."""
        return {
            "a_verdict": self.verdict or "",
            "a_code": self.code or "",
            "a_checked": to_ms(self.checked_at) if self.checked_at else "",
            "a_confirmed": to_ms(self.confirmed_at) if self.confirmed_at else "",
            "a_rejected": to_ms(self.rejected_at) if self.rejected_at else "",
            "server_uuid": self.server_uuid or "",
        }

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> AppleState:
        return cls(
            verdict=_opt(data.get("a_verdict")),
            code=_opt(data.get("a_code")),
            checked_at=from_ms(data.get("a_checked")),
            confirmed_at=from_ms(data.get("a_confirmed")),
            rejected_at=from_ms(data.get("a_rejected")),
            server_uuid=_opt(data.get("server_uuid")),
        )


NEVER_ASKED = AppleState()


@dataclass(frozen=True)
class Token:
    """An installed server token's public facts; its four credentials stay sealed."""

    id: str
    server_id: str
    consumer_id: str
    fingerprint: str
    downloaded_by: str
    downloaded_at: datetime
    expires_at: datetime
    installed_at: datetime
    key_id: str
    status: str = TOKEN_CURRENT
    superseded_at: datetime | None = None
    superseded_by: str | None = None
    #: The expiry level last warned about (threshold days, 0 = expired), by the scheduler.
    warned: int | None = None
    apple: AppleState = NEVER_ASKED
    #: When the scheduler opened this token's renewal (its policy's renew-before reached).
    renewal_opened: datetime | None = None

    def to_hash(self) -> dict[str, str | int]:
        """Only the fields that hold something: small hashes stay in Redis's compact form."""
        fields = {
            "id": self.id,
            "server_id": self.server_id,
            "consumer_id": self.consumer_id,
            "fingerprint": self.fingerprint,
            "downloaded_by": self.downloaded_by,
            "downloaded_at": to_ms(self.downloaded_at),
            "expires_at": to_ms(self.expires_at),
            "installed_at": to_ms(self.installed_at),
            "key_id": self.key_id,
            "status": self.status,
            "superseded_at": to_ms(self.superseded_at) if self.superseded_at else "",
            "superseded_by": self.superseded_by or "",
            "warned": "" if self.warned is None else self.warned,
            "renewal": to_ms(self.renewal_opened) if self.renewal_opened else "",
            **self.apple.to_fields(),
        }
        return {name: value for name, value in fields.items() if value != ""}

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Token:
        return cls(
            id=data["id"],
            server_id=data["server_id"],
            consumer_id=data["consumer_id"],
            fingerprint=data["fingerprint"],
            downloaded_by=data["downloaded_by"],
            downloaded_at=from_ms(data["downloaded_at"]),
            expires_at=from_ms(data["expires_at"]),
            installed_at=from_ms(data["installed_at"]),
            key_id=data["key_id"],
            status=data.get("status", TOKEN_CURRENT),
            superseded_at=from_ms(data.get("superseded_at")),
            superseded_by=_opt(data.get("superseded_by")),
            warned=int(data["warned"]) if data.get("warned") else None,
            apple=AppleState.from_hash(data),
            renewal_opened=from_ms(data.get("renewal")),
        )

    def status_at(self, now: datetime) -> str:
        """`current`, `expired` (current but past its limit) or `superseded`."""
        if self.status == TOKEN_CURRENT and now >= self.expires_at:
            return "expired"
        return self.status


@dataclass(frozen=True)
class Replacement:
    """The standing fact that a token must be replaced, with its reasons (merged by kind, at
    most MAX_REASONS of worker.rules.replacement; causes beyond them counted in `omitted`),
    until a newer token for its server is installed. Written by the decisions that open, extend
    or resolve it (worker/rules/replacing.py)."""

    token_id: str
    server_id: str
    status: str
    opened_at: str
    resolved_at: str | None
    resolved_by: str | None
    reasons: list[dict]
    omitted: int = 0

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Replacement:
        reasons = json.loads(data.get("reasons") or "[]")
        return cls(
            token_id=data["token"],
            server_id=data["server"],
            status=data["status"],
            opened_at=data["opened_at"],
            resolved_at=_opt(data.get("resolved_at")),
            resolved_by=_opt(data.get("resolved_by")),
            reasons=reasons if isinstance(reasons, list) else [],
            omitted=int(data.get("omitted") or 0),
        )

    @property
    def most_urgent(self) -> dict:
        return max(self.reasons, key=lambda r: r.get("rank", 0), default={})

    @property
    def event_count(self) -> int:
        """Every cause recorded, the omitted ones included."""
        return sum(r.get("count", 1) for r in self.reasons) + self.omitted

    def label(self, *, times: bool = False) -> str:
        """Its reasons as a person reads them in a table, e.g. "password changed \u00d73000
        (first 2026-11-26T10:14:00Z, last 2026-11-27T08:00:00Z), user left"."""
        labels = [reason_label(r, times=times) for r in self.reasons]
        if self.omitted:
            labels.append(f"{self.omitted} more")
        return ", ".join(labels)


def reason_label(reason: dict, *, times: bool = False) -> str:
    """One reason in a few words: its kind, how many causes of that kind, and (with `times`)
    when the first and the last happened."""
    label = str(reason.get("type", "?")).rsplit(".", 1)[-1].replace("_", " ")
    count = reason.get("count", 1)
    if count != 1:
        label += f" \N{MULTIPLICATION SIGN}{count}"
    if not times:
        return label
    first, last = reason.get("time"), (reason.get("last") or {}).get("time")
    if last in (None, first):
        return f"{label} ({first})"
    return f"{label} (first {first}, last {last})"
