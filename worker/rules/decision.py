"""A decision, as a value: what one cause of change does to the stored state.

The rules build it from facts and `now`; the store applies it atomically (or not at all, when
a fact it was made on moved: then it is made again on fresh facts), and alone knows how each
part is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from worker.rules.facts import ReplacementFacts
from worker.rules.replacement import Cause

#: The records a guard names.
USER, SERVER, TOKEN, REPLACEMENT = "user", "server", "token", "replacement"

#: The facts a guard names: a record's version; a server's existence, installed token and
#: staged key; a token's status and the expiry level last warned about.
VERSION, EXISTS, INSTALLED_TOKEN, STAGED_KEY, STATUS, WARNED = (
    "version",
    "exists",
    "token",
    "staged_key",
    "status",
    "warned",
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
class Doomed:
    """A token a cause dooms (whether or not its replacement had news to tell)."""

    token_id: str
    cause_type: str


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
    audit: AuditEntry | None = None
    #: What was done, one entry per action, as the audit trail and the logs show it.
    results: list[dict[str, Any]] = field(default_factory=list)
    #: Why the decision has no effect, when that is worth telling (unknown server, ...).
    note: str = ""
