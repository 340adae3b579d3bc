"""A source: one sender of events into the intake (its secret kept only as a hash), or one
directory tokenwarden asks on a schedule (its credential sealed apart, see SourceStore), and how
its users' domains map to Managed Apple Account domains. Pure."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from worker.environment import is_loopback
from worker.errors import InvalidInput
from worker.records import from_ms, to_ms
from worker.timefmt import format_rfc3339

CLOUDEVENTS, OKTA, SCIM = "cloudevents", "okta", "scim"
#: The kinds that push over HTTP (`tokenwarden serve`).
PUSH_KINDS = (CLOUDEVENTS, OKTA, SCIM)
#: The directories tokenwarden asks on a schedule (worker/directories/).
OKTA_API, ENTRA, GOOGLE = "okta-api", "entra", "google"
POLL_KINDS = (OKTA_API, ENTRA, GOOGLE)
KINDS = PUSH_KINDS + POLL_KINDS

#: Seconds between two rounds of a polling source, by default, and the bounds of --interval.
DEFAULT_POLL_INTERVAL_S = 300
MIN_POLL_INTERVAL_S, MAX_POLL_INTERVAL_S = 60, 7 * 86400

#: The options each polling kind needs (not secrets: shown by `sources list`).
POLL_OPTIONS = {
    OKTA_API: ("org_url",),
    ENTRA: ("tenant_id", "client_id"),
    GOOGLE: ("admin_subject",),
}

#: Where the users of a source without '@' in their id are indexed (see Source.watches).
NO_DOMAIN = "-"

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


def parse_domain_maps(
    items: tuple[str, ...], *, polling: bool = False
) -> tuple[tuple[str, str], ...]:
    """`school.edu=appleid.school.edu` -> (("school.edu", "appleid.school.edu"),). A polling
    source maps each Managed Apple Account domain back to one directory domain only."""
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
    if polling and len({after for _, after in maps}) != len(maps):
        raise InvalidInput(
            "--map-domain maps two directory domains to one Managed Apple Account domain; a "
            "source that asks its directory needs one per domain: add a source per directory "
            "domain"
        )
    return tuple(maps)


_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[a-z0-9.-]{1,253}$")


def clean_poll_options(kind: str, given: dict[str, str | None]) -> tuple[tuple[str, str], ...]:
    """The options a polling kind needs, each checked, or InvalidInput naming the flag."""
    options = []
    for name in POLL_OPTIONS[kind]:
        value = (given.get(name) or "").strip()
        flag = "--" + name.replace("_", "-")
        if not value:
            raise InvalidInput(f"a source of kind {kind} needs {flag}")
        options.append((name, _check_option(name, value, flag)))
    return tuple(options)


def _check_option(name: str, value: str, flag: str) -> str:
    if name == "org_url":
        return check_provider_url(value, flag, "https://ORG.okta.com")
    if name == "tenant_id" and not (
        _GUID.fullmatch(value.lower()) or _DOMAIN.fullmatch(value.lower())
    ):
        raise InvalidInput(f"{flag} {value!r} is not a tenant id (a GUID) or a tenant domain")
    if name == "client_id" and not _GUID.fullmatch(value.lower()):
        raise InvalidInput(f"{flag} {value!r} is not an application (client) id: a GUID")
    if name == "admin_subject" and not _EMAIL.fullmatch(value.lower()):
        raise InvalidInput(f"{flag} {value!r} is not an administrator's e-mail address")
    return value.lower() if name != "org_url" else value


def check_provider_url(value: str, flag: str, example: str) -> str:
    """A provider's base URL: https, or http on a loopback address (a test's fake), with no
    path, query or credentials."""
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        parts = None
    usable = (
        parts is not None
        and parts.hostname
        and not (parts.username or parts.password or parts.query or parts.fragment)
        and parts.path in ("", "/")
        and (parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname)))
    )
    if not usable:
        raise InvalidInput(f"{flag} {value.strip()!r} is not a base URL like {example}")
    return value.strip().rstrip("/")


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
    #: "" for a polling source: it accepts no request.
    secret_hash: str = field(repr=False)
    #: The secret replaced by the last rotation, accepted until `previous_until`.
    previous_hash: str | None = field(default=None, repr=False)
    previous_until: datetime | None = None
    domain_maps: tuple[tuple[str, str], ...] = ()
    #: A polling source's options (POLL_OPTIONS of its kind), as (name, value) pairs.
    options: tuple[tuple[str, str], ...] = ()
    #: Seconds between two rounds of a polling source (0 for a push source).
    interval_s: int = 0

    @property
    def polls(self) -> bool:
        return self.kind in POLL_KINDS

    def option(self, name: str) -> str:
        return dict(self.options)[name]

    def accepts(self, secret: str, now: datetime) -> bool:
        """Whether `secret` is this source's (or the previous one, within its grace), compared
        in constant time."""
        if not self.secret_hash:  # a polling source takes no request
            return False
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

    def directory_login(self, user: str) -> str:
        """The directory login of a Managed Apple Account: map_user backwards (the first
        mapping to its domain; a polling source has one per domain, see parse_domain_maps)."""
        local, at, domain = user.strip().rpartition("@")
        for before, after in self.domain_maps if at else ():
            if domain.lower() == after:
                return f"{local}@{before}"
        return user.strip()

    def watched_domains(self) -> tuple[str, ...]:
        """The Managed Apple Account domains whose users a polling source asks about: the
        mapped ones (--domain D is stored as D=D)."""
        return tuple(sorted({after for _, after in self.domain_maps}))

    def path(self) -> str | None:
        if self.polls:
            return None
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
            "options": json.dumps(dict(self.options)),
            "interval": self.interval_s,
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
            options=tuple(sorted(json.loads(data.get("options") or "{}").items())),
            interval_s=int(data.get("interval") or 0),
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
            "options": dict(self.options),
            "interval_s": self.interval_s or None,
        }
