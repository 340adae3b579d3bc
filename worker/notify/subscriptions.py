"""Subscriptions: who is told about which outgoing events. Pure: no I/O.

A subscription is a webhook (`https://...`, signed with a Standard Webhooks secret) or an
e-mail address (`mailto:...`), with the event types it wants and, optionally, the organization
and server it is about.

A webhook URL often carries a secret in its path or query (chat and incident tools do this), so
it is shown only as `redact_url` makes it (scheme, host, port; `https://hooks.example.org/…`)
and stored sealed. An e-mail address is not a secret: it is shown in full.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from events import catalog
from worker.errors import InvalidInput
from worker.names import name_key

WEBHOOK, EMAIL = "webhook", "email"
ACTIVE, DISABLED = "active", "disabled"

#: Standard Webhooks secrets: `whsec_` and base64 of 24 to 64 random bytes.
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
MIN_SECRET_BYTES, MAX_SECRET_BYTES = 24, 64

#: Longest URL accepted, in characters.
MAX_URL_CHARS = 2048

_HOST = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")
_EMAIL = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$")


@dataclass(frozen=True)
class Subscription:
    id: str
    kind: str
    # The e-mail address; for a webhook, the URL when made, its shown form when read from the
    # store (which keeps the full URL sealed: DeliveryStore.open_target).
    target: str
    types: tuple[str, ...]
    created_at: datetime
    org: str = ""
    server: str = ""
    status: str = ACTIVE
    disabled_reason: str = ""
    disabled_at: datetime | None = field(default=None)

    @property
    def shown(self) -> str:
        """The target as logs, errors and the CLI show it: never a webhook URL's path."""
        return self.target if self.kind == EMAIL else redact_url(self.target)

    def wants(self, event: dict[str, Any]) -> bool:
        """Whether this subscription is told about `event` (an outgoing CloudEvent)."""
        if self.status != ACTIVE or not type_matches(self.types, event.get("type", "")):
            return False
        data = event.get("data") or {}
        if self.org and name_key(self.org) != name_key(data.get("org") or ""):
            return False
        return not (self.server and name_key(self.server) != name_key(data.get("server") or ""))


def type_matches(wanted: tuple[str, ...], event_type: str) -> bool:
    """An exact type, or a prefix ending in '.' that the type starts with."""
    return any(event_type == w or (w.endswith(".") and event_type.startswith(w)) for w in wanted)


def parse_types(text: str | None) -> tuple[str, ...]:
    """`--types T1,T2` (types or prefixes ending in '.'); every outgoing type by default."""
    if text is None or not text.strip():
        return tuple(sorted(catalog.OUTGOING_TYPES))
    wanted = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not wanted:
        raise InvalidInput(f"--types {text!r} names no type; leave it out for every type")
    for item in wanted:
        if not any(type_matches((item,), known) for known in catalog.OUTGOING_TYPES):
            known = ", ".join(sorted(catalog.OUTGOING_TYPES))
            raise InvalidInput(
                f"{item!r} is not an outgoing event type or a prefix of one (ending in '.'); "
                f"known types: {known}"
            )
    return wanted


def parse_target(text: str) -> tuple[str, str]:
    """(kind, target) from a subscription URL: http(s)://... or mailto:address."""
    value = text.strip()
    if len(value) > MAX_URL_CHARS:
        raise InvalidInput(f"the URL is {len(value)} characters; at most {MAX_URL_CHARS}")
    if value.lower().startswith("mailto:"):
        address = value[len("mailto:") :].strip()
        if not _EMAIL.match(address):
            raise InvalidInput(f"{address!r} is not an e-mail address; write mailto:it@example.org")
        return EMAIL, address
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        # (the URL is not repeated: its path or query may be a secret)
        raise InvalidInput("the URL is not a valid URL; give https://host/path") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise InvalidInput(
            "the URL is not an http(s) URL; give https://host/path (or mailto:address for e-mail)"
        )
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        # urlsplit drops tabs and line breaks silently; what is stored would still hold them.
        raise InvalidInput("the URL holds spaces or control characters; give it as one word")
    if port == 0:
        raise InvalidInput("the URL names port 0; give the receiver's port (1 to 65535)")
    if not _valid_host(parts.hostname):
        raise InvalidInput(f"{parts.hostname!r} in the URL is not a valid host name")
    if parts.username or parts.password:
        raise InvalidInput("put no credentials in the URL; receivers verify the signature instead")
    return WEBHOOK, value


def redact_url(url: str) -> str:
    """Scheme, host and port (when not the scheme's default) of a URL; a path or query, which
    may hold a secret, becomes '…'. The same for a URL already redacted."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "…"
    host = parts.hostname or "?"
    if ":" in host:  # IPv6
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{port}"
    rest = "/" if parts.path in {"", "/"} and not parts.query else "/…"
    return f"{parts.scheme}://{host}{rest}"


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    return _HOST.fullmatch(ascii_host) is not None


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(os.urandom(SECRET_BYTES)).decode()


def check_secret(secret: str) -> str:
    """A Standard Webhooks secret, or a one-line error saying what a good one looks like."""
    value = secret.strip()
    advice = (
        "give whsec_ followed by base64 of 24 to 64 random bytes, "
        "or leave --secret out to have one generated"
    )
    if not value.startswith(SECRET_PREFIX):
        raise InvalidInput(f"the secret does not start with {SECRET_PREFIX}; {advice}")
    try:
        raw = base64.b64decode(value[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(
            f"the secret is not valid base64 after {SECRET_PREFIX}; {advice}"
        ) from None
    if not MIN_SECRET_BYTES <= len(raw) <= MAX_SECRET_BYTES:
        raise InvalidInput(f"the secret holds {len(raw)} bytes; {advice}")
    return value
