"""A source: one sender of events into the intake, its kind, its secret (kept only as a hash)
and how its users' domains map to Managed Apple Account domains. Pure."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from worker.errors import InvalidInput
from worker.records import from_ms, to_ms
from worker.timefmt import format_rfc3339

CLOUDEVENTS, OKTA, SCIM = "cloudevents", "okta", "scim"
KINDS = (CLOUDEVENTS, OKTA, SCIM)

#: How long a rotated-out secret keeps working, so the directory can be updated meanwhile.
DEFAULT_GRACE = timedelta(hours=24)

#: A secret given by hand must be at least this long: it is kept as a fast hash.
MIN_SECRET_LENGTH = 24

#: A source name is a path segment of its URL.
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$")


def clean_source_name(raw: str) -> str:
    name = raw.strip().lower()
    if not _NAME.fullmatch(name):
        raise InvalidInput(
            f"source name {raw.strip()!r} is not usable in a URL: use 1 to 63 lowercase "
            "letters, digits, '-' or '_', starting with a letter or digit (e.g. okta-staff)"
        )
    return name


def clean_kind(raw: str) -> str:
    kind = raw.strip().lower()
    if kind not in KINDS:
        raise InvalidInput(f"source kind {raw!r} is not one of {', '.join(KINDS)}")
    return kind


def parse_domain_maps(items: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """`school.edu=appleid.school.edu` -> (("school.edu", "appleid.school.edu"),)."""
    maps = []
    for item in items:
        before, equals, after = item.partition("=")
        pair = (before.strip().lower().lstrip("@"), after.strip().lower().lstrip("@"))
        if not equals or not all(_DOMAIN.fullmatch(d) for d in pair):
            raise InvalidInput(
                f"--map-domain {item!r} is not FROM=TO with two domains "
                "(e.g. school.edu=appleid.school.edu)"
            )
        maps.append(pair)
    if len({before for before, _ in maps}) != len(maps):
        raise InvalidInput("--map-domain names the same directory domain twice")
    return tuple(maps)


def generate_secret() -> str:
    return "tws_" + secrets.token_urlsafe(32)


def check_secret(secret: str) -> str:
    secret = secret.strip()
    if len(secret) < MIN_SECRET_LENGTH or any(c.isspace() for c in secret):
        raise InvalidInput(
            f"the secret must be at least {MIN_SECRET_LENGTH} characters without spaces; "
            "leave out --secret to have one generated"
        )
    return secret


def secret_hash(secret: str) -> str:
    return hashlib.sha256(("tokenwarden-source\0" + secret).encode()).hexdigest()


@dataclass(frozen=True)
class Source:
    name: str
    kind: str
    created_at: datetime
    secret_hash: str = field(repr=False)
    #: The secret replaced by the last rotation, accepted until `previous_until`.
    previous_hash: str | None = field(default=None, repr=False)
    previous_until: datetime | None = None
    domain_maps: tuple[tuple[str, str], ...] = ()

    def accepts(self, secret: str, now: datetime) -> bool:
        """Whether `secret` is this source's (or the previous one, within its grace), compared
        in constant time."""
        given = secret_hash(secret)
        current = hmac.compare_digest(given, self.secret_hash)
        previous = hmac.compare_digest(given, self.previous_hash or "")  # "" matches no hash
        in_grace = self.previous_until is not None and now < self.previous_until
        return current or (previous and in_grace)

    def rotated(self, new_secret: str, now: datetime, grace: timedelta) -> Source:
        return replace(
            self,
            secret_hash=secret_hash(new_secret),
            previous_hash=self.secret_hash if grace > timedelta(0) else None,
            previous_until=now + grace if grace > timedelta(0) else None,
        )

    def map_user(self, user: str) -> str:
        """The Managed Apple Account for a directory login: its domain mapped, if it has one
        of the mapped domains (compared without case)."""
        local, at, domain = user.strip().rpartition("@")
        if not at:
            return user.strip()
        for before, after in self.domain_maps:
            if domain.lower() == before:
                return f"{local}@{after}"
        return user.strip()

    def path(self) -> str:
        return {
            CLOUDEVENTS: f"/sources/{self.name}/events",
            OKTA: f"/sources/{self.name}/okta",
            SCIM: f"/sources/{self.name}/scim/v2",
        }[self.kind]

    def to_hash(self) -> dict[str, str | int]:
        return {
            "name": self.name,
            "kind": self.kind,
            "created_at": to_ms(self.created_at),
            "secret": self.secret_hash,
            "previous": self.previous_hash or "",
            "previous_until": to_ms(self.previous_until) if self.previous_until else "",
            "map_domain": json.dumps([list(pair) for pair in self.domain_maps]),
        }

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Source:
        return cls(
            name=data["name"],
            kind=data["kind"],
            created_at=from_ms(data["created_at"]),
            secret_hash=data["secret"],
            previous_hash=data.get("previous") or None,
            previous_until=from_ms(data.get("previous_until")),
            domain_maps=tuple(tuple(p) for p in json.loads(data.get("map_domain") or "[]")),
        )

    def describe(self, now: datetime) -> dict[str, object]:
        grace = self.previous_until is not None and now < self.previous_until
        return {
            "name": self.name,
            "kind": self.kind,
            "path": self.path(),
            "created_at": format_rfc3339(self.created_at),
            "previous_secret_until": format_rfc3339(self.previous_until) if grace else None,
            "map_domain": [f"{a}={b}" for a, b in self.domain_maps],
        }
