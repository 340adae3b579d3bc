"""A decision, as a value: what one cause of change does to the stored state.

The rules build it from facts and `now`; the store applies it atomically (or not at all, when
a fact it was made on moved: then it is made again on fresh facts), and alone knows how each
part is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from worker.records import AppleState
from worker.rules.facts import KeyOffer, ReplacementFacts
from worker.rules.policy import PolicyLayer
from worker.rules.replacement import Cause

#: The records a guard names (a POLICY record's ident is its scope: see policy.scope_of).
USER, SERVER, TOKEN, REPLACEMENT, POLICY = "user", "server", "token", "replacement", "policy"

#: The facts a guard names: a record's version; a server's existence, installed token,
#: staged key and pending terms; a token's status, the expiry level last warned about, and
#: when Apple first refused it.
VERSION, EXISTS, INSTALLED_TOKEN, STAGED_KEY, TERMS, STATUS, WARNED, REJECTED, RENEWAL = (
    "version",
    "exists",
    "token",
    "staged_key",
    "terms",
    "status",
    "warned",
    "rejected",
    "renewal",
)


@dataclass(frozen=True)
class Guard:
    """The decision holds only while `fact` of record (`record`, `ident`) still reads `value`
    ("" = absent; for EXISTS, the record's own id)."""

    record: str
    ident: str
    fact: str
    value: str


@dataclass(frozen=True)
class RememberCause:
    """Keep `cause` as the latest of its kind for a user or a server, writing that record at
    `version`."""

    record: str  # USER or SERVER
    ident: str
    cause: Cause
    version: str


@dataclass(frozen=True)
class ReplacementChange:
    """A replacement opened (written afresh) or extended, as it stands after the decision."""

    token_id: str
    server_id: str
    opened: bool
    state: ReplacementFacts
    #: Whether the certificate in `state` is new and must be written.
    certificate_changed: bool = False


@dataclass(frozen=True)
class Resolution:
    """A token's open replacement closed by the token that replaced it."""

    token_id: str
    by: str
    state: ReplacementFacts


@dataclass(frozen=True)
class NextCheck:
    """When the expiry scan looks at a token next (None: never again)."""

    token_id: str
    at: datetime | None


@dataclass(frozen=True)
class Warned:
    """The expiry level (threshold days, 0 = expired) a token was just warned about."""

    token_id: str
    level: int


@dataclass(frozen=True)
class AppleChecked:
    """What asking Apple about a token found, as the token keeps it from now on."""

    token_id: str
    state: AppleState


@dataclass(frozen=True)
class ServerSeenByApple:
    """What Apple calls a server and its organization, and since when new terms wait to be
    accepted for it (None: none)."""

    server_id: str
    apple_name: str | None
    apple_org: str | None
    terms_since: datetime | None


@dataclass(frozen=True)
class DownloaderCorrected:
    """Apple names another person as the one who downloaded a token: the token moves from
    one user's record to the other's, each written at a new version."""

    token_id: str
    user: str  # as Apple gives it
    old_key: str
    new_key: str
    old_version: str
    new_version: str
    #: The old user holds no other current token: their record is forgotten in time.
    forget_old: bool


@dataclass(frozen=True)
class Doomed:
    """A token a cause dooms (whether or not its replacement had news to tell)."""

    token_id: str
    cause_type: str


@dataclass(frozen=True)
class StagedKey:
    """A key offer staged for its server by the decision (guarded: no key was staged)."""

    offer: KeyOffer


@dataclass(frozen=True)
class RenewalOpened:
    """The scheduler opened a token's renewal (its policy's renew-before was reached)."""

    token_id: str


@dataclass(frozen=True)
class PolicyWrite:
    """A policy layer written afresh at `version` (an empty layer: removed); `scope` as
    policy.scope_of names it."""

    scope: str
    layer: PolicyLayer
    version: str


@dataclass(frozen=True)
class AuditEntry:
    """What the audit trail keeps of the decision (its `decisions` are Decision.results)."""

    kind: str  # event | install | scan
    event: dict[str, Any]


@dataclass
class Decision:
    now: datetime
    #: The incoming event's `source` + `id`: once applied, a repeat of it is dropped.
    event_key: str | None = None
    guards: list[Guard] = field(default_factory=list)
    causes: list[RememberCause] = field(default_factory=list)
    #: Users (keys) who hold no current token: their record is forgotten in time.
    forget_users: list[str] = field(default_factory=list)
    doomed: list[Doomed] = field(default_factory=list)
    replacements: list[ReplacementChange] = field(default_factory=list)
    resolutions: list[Resolution] = field(default_factory=list)
    #: Outgoing events, in the order they are sent.
    outgoing: list[dict[str, Any]] = field(default_factory=list)
    next_checks: list[NextCheck] = field(default_factory=list)
    warned: list[Warned] = field(default_factory=list)
    apple: list[AppleChecked] = field(default_factory=list)
    servers_seen: list[ServerSeenByApple] = field(default_factory=list)
    downloaders: list[DownloaderCorrected] = field(default_factory=list)
    renewals: list[RenewalOpened] = field(default_factory=list)
    staged_keys: list[StagedKey] = field(default_factory=list)
    policies: list[PolicyWrite] = field(default_factory=list)
    #: Servers whose policy wants a new key staged by this decision, for which no key offer
    #: was at hand: the caller makes offers and decides again.
    keys_wanted: list[str] = field(default_factory=list)
    audit: AuditEntry | None = None
    #: What was done, one entry per action, as the audit trail and the logs show it.
    results: list[dict[str, Any]] = field(default_factory=list)
    #: Why the decision has no effect, when that is worth telling (unknown server, ...).
    note: str = ""
