"""Rotation policies: when a server's token is renewed, whether a new key pair comes with it,
and who is responsible for it. Pure: no I/O, no clock.

A policy is set in layers, like cert-manager's `renewBefore` and `rotationPolicy`: a server's
own override, its organization's default, the global default, and the built-in values. Each
field is taken from the most specific layer that sets it, so an organization can say "rotate
keys" while one of its servers only changes its owners.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

ROTATE_ALWAYS, ROTATE_NEVER = "always", "never"
ROTATE_CHOICES = (ROTATE_ALWAYS, ROTATE_NEVER)

#: Built-in values: renewal due 30 days before expiry, the key kept, nobody named.
DEFAULT_RENEW_BEFORE_DAYS = 30
DEFAULT_ROTATE_KEY = ROTATE_NEVER

#: renew-before bounds, in days: a token lives a year, so renewing more than 300 days ahead
#: would renew it again soon after each install.
MIN_RENEW_BEFORE_DAYS, MAX_RENEW_BEFORE_DAYS = 1, 300

#: Owners one layer may name (each is sent every event about the server).
MAX_OWNERS = 10

#: The layers, most specific first, as `policy show` names where a value came from.
SERVER, ORG, GLOBAL, BUILT_IN = "server", "org", "global", "default"


def scope_of(layer: str, ident: str = "") -> str:
    """A layer's scope as the store keys it: `server:<id>`, `org:<org name key>`, `global`."""
    return GLOBAL if layer == GLOBAL else f"{layer}:{ident}"


#: Hash fields of a layer (in the server hash for a server's own, in its own hash otherwise).
RENEW_FIELD, ROTATE_FIELD, OWNERS_FIELD = "p_renew", "p_rotate", "p_owners"
FIELDS = (RENEW_FIELD, ROTATE_FIELD, OWNERS_FIELD)


@dataclass(frozen=True)
class PolicyLayer:
    """What one layer sets; None leaves the field to the layers below."""

    renew_before_days: int | None = None
    rotate_key: str | None = None
    owners: tuple[str, ...] | None = None

    @property
    def is_empty(self) -> bool:
        return self.renew_before_days is None and self.rotate_key is None and self.owners is None

    def overlaid_with(self, change: PolicyLayer) -> PolicyLayer:
        """This layer with what `change` sets (a `servers policy` naming only --owner keeps
        the renew-before and rotate-key set before)."""
        return PolicyLayer(
            renew_before_days=_first(change.renew_before_days, self.renew_before_days),
            rotate_key=_first(change.rotate_key, self.rotate_key),
            owners=_first(change.owners, self.owners),
        )

    def to_fields(self) -> dict[str, str]:
        fields: dict[str, str] = {}
        if self.renew_before_days is not None:
            fields[RENEW_FIELD] = str(self.renew_before_days)
        if self.rotate_key is not None:
            fields[ROTATE_FIELD] = self.rotate_key
        if self.owners is not None:
            fields[OWNERS_FIELD] = json.dumps(list(self.owners))
        return fields

    @classmethod
    def from_fields(cls, data: dict[str, str]) -> PolicyLayer:
        """A layer as stored; a field that does not read back (hand-edited) is left unset."""
        renew = data.get(RENEW_FIELD, "")
        rotate = data.get(ROTATE_FIELD)
        days = int(renew) if renew.isascii() and renew.isdigit() else None
        if days is not None and not MIN_RENEW_BEFORE_DAYS <= days <= MAX_RENEW_BEFORE_DAYS:
            days = None
        return cls(
            renew_before_days=days,
            rotate_key=rotate if rotate in ROTATE_CHOICES else None,
            owners=_owners_from(data.get(OWNERS_FIELD)),
        )

    def describe(self) -> dict[str, object]:
        return {
            "renew_before_days": self.renew_before_days,
            "rotate_key": self.rotate_key,
            "owners": list(self.owners) if self.owners is not None else None,
        }


EMPTY_LAYER = PolicyLayer()


def _first(*values):
    return next((v for v in values if v is not None), None)


def _owners_from(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    return tuple(str(v) for v in value if isinstance(v, str))[:MAX_OWNERS]


@dataclass(frozen=True)
class Policy:
    """The policy in force for a server, and which layer each field came from."""

    renew_before_days: int = DEFAULT_RENEW_BEFORE_DAYS
    rotate_key: str = DEFAULT_ROTATE_KEY
    owners: tuple[str, ...] = ()
    sources: dict[str, str] = field(
        default_factory=lambda: dict.fromkeys(
            ("renew_before_days", "rotate_key", "owners"), BUILT_IN
        )
    )

    @property
    def rotates_key(self) -> bool:
        return self.rotate_key == ROTATE_ALWAYS

    def renewal_at(self, expires_at: datetime) -> datetime:
        """When renewal of a token expiring at `expires_at` becomes due."""
        return expires_at - timedelta(days=self.renew_before_days)

    def describe(self) -> dict[str, object]:
        return {
            "renew_before_days": self.renew_before_days,
            "rotate_key": self.rotate_key,
            "owners": list(self.owners),
            "from": dict(self.sources),
        }


DEFAULT_POLICY = Policy()


def effective(
    server: PolicyLayer = EMPTY_LAYER,
    org: PolicyLayer = EMPTY_LAYER,
    default: PolicyLayer = EMPTY_LAYER,
) -> Policy:
    """The policy in force: each field from the most specific layer that sets it."""
    layers = ((SERVER, server), (ORG, org), (GLOBAL, default))
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    for name, built_in in (
        ("renew_before_days", DEFAULT_RENEW_BEFORE_DAYS),
        ("rotate_key", DEFAULT_ROTATE_KEY),
        ("owners", ()),
    ):
        found = next(
            (
                (where, getattr(layer, name))
                for where, layer in layers
                if getattr(layer, name) is not None
            ),
            None,
        )
        values[name], sources[name] = (found[1], found[0]) if found else (built_in, BUILT_IN)
    return Policy(
        renew_before_days=int(values["renew_before_days"]),  # type: ignore[arg-type]
        rotate_key=str(values["rotate_key"]),
        owners=tuple(values["owners"]),  # type: ignore[arg-type]
        sources=sources,
    )
