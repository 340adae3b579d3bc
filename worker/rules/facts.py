"""What decisions are made on: the facts the store reads for them, as plain records.

Every fact a decision may write back over carries the version it was read at, and the decision
is applied only if that version has not moved meanwhile (else it is made again on fresh facts).
A version is opaque text ("" for a record never written); the rules only compare it and, when
they write the record, step it (`next_version`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from worker.records import KeyPair, Server, Token
from worker.rules.policy import DEFAULT_POLICY, Policy
from worker.rules.replacement import Cause


@dataclass(frozen=True)
class KeyOffer:
    """A key pair made for a server ahead of a decision that may stage it (its policy rotates
    keys with renewal): the pair's public record and its private key already sealed. The rules
    only pass it on; making keys is not theirs to do."""

    pair: KeyPair
    sealed_private_key: str = field(repr=False)


#: A replacement's status while it waits for a newer token, and once one is installed.
OPEN, RESOLVED = "open", "resolved"


def next_version(version: str, *change: str) -> str:
    """The version a record is written at by `change` (what names the decision: its cause and
    `now`), after being read at `version`.

    Derived from both, not counted: a batch's decisions are made in a row, each on the facts
    the one before leaves, so when one of them is refused the next must be refused too, and a
    counter could meet the same number written by another worker's different decision. A
    number, so a version may also be stepped by one (HINCRBY, as installs do with users').
    """
    digest = hashlib.sha256("\0".join((version, *change)).encode()).digest()
    return str(int.from_bytes(digest[:7], "big"))


def cause_change(cause: Cause, now: datetime) -> tuple[str, str, str]:
    """What names a change a cause makes, for next_version."""
    return cause.source, cause.id, now.isoformat()


@dataclass(frozen=True)
class Recorded:
    """The latest cause of each kind seen for a user or a server (kept for a token installed
    later but downloaded earlier), at a version."""

    version: str = ""
    causes: dict[str, Cause] = field(default_factory=dict)

    def is_newer(self, cause: Cause) -> bool:
        known = self.causes.get(cause.type)
        return known is None or known.time < cause.time

    def with_cause(self, cause: Cause, version: str) -> Recorded:
        return Recorded(version, {**self.causes, cause.type: cause})


@dataclass(frozen=True)
class ReplacementFacts:
    """A token's replacement as read ("" status: it never had one), at a version."""

    status: str = ""
    opened_at: str | None = None
    reasons: list[dict[str, Any]] = field(default_factory=list)
    omitted: int = 0
    #: PEM of the certificate to upload that travels with the replacement, if any.
    certificate: str | None = None
    version: str = ""

    @property
    def is_open(self) -> bool:
        return self.status == OPEN


NO_REPLACEMENT = ReplacementFacts()


@dataclass
class EventFacts:
    """What a batch of incoming events is decided on (keys: user keys, name keys, ids)."""

    users: dict[str, Recorded] = field(default_factory=dict)
    user_tokens: dict[str, list[Token]] = field(default_factory=dict)
    servers_named: dict[str, list[Server]] = field(default_factory=dict)
    servers: dict[str, Server] = field(default_factory=dict)
    server_causes: dict[str, Recorded] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)
    replacements: dict[str, ReplacementFacts] = field(default_factory=dict)
    #: Server id -> PEM of its staged key's certificate (read for key changes, and for servers
    #: whose policy rotates keys).
    staged_certificates: dict[str, str] = field(default_factory=dict)
    #: Server id -> its rotation policy in force (read for the servers of the tokens found).
    policies: dict[str, Policy] = field(default_factory=dict)
    #: Server id -> a key pair made for it, when a decision of the batch wanted one.
    key_offers: dict[str, KeyOffer] = field(default_factory=dict)

    def replacement(self, token_id: str) -> ReplacementFacts:
        return self.replacements.get(token_id, NO_REPLACEMENT)

    def link(self, token_ids: dict[str, list[str]], server_ids: dict[str, list[str]]) -> None:
        """Fill the per-user and per-name lists from the ids a store read, keeping only the
        tokens and servers it found (one may go between two reads)."""
        self.user_tokens = {
            key: [self.tokens[t] for t in ids if t in self.tokens] for key, ids in token_ids.items()
        }
        self.servers_named = {
            key: [self.servers[s] for s in ids if s in self.servers]
            for key, ids in server_ids.items()
        }


@dataclass(frozen=True)
class InstallFacts:
    """What installing a token is decided on, read inside the install's transaction."""

    server: Server
    #: The token it supersedes, and that token's replacement.
    replaced: Token | None
    replaced_replacement: ReplacementFacts
    #: The latest causes recorded for the downloader and for the server.
    causes: list[Cause]
    #: PEM of a staged key's certificate, when the token is for the current key while a new
    #: key waits (a recorded key change dooms it, and the notice carries the certificate).
    staged_certificate: str | None = None


@dataclass(frozen=True)
class ScanFacts:
    """What one due token is decided on by the expiry scan."""

    token: Token
    #: None when the token's server is gone.
    server: Server | None
    replacement: ReplacementFacts = NO_REPLACEMENT
    #: The server's rotation policy in force.
    policy: Policy = DEFAULT_POLICY
    #: PEM of the server's staged key's certificate, when one is staged and its policy rotates.
    staged_certificate: str | None = None
    #: A key pair made for the server, when its policy rotates keys and its renewal is due.
    key_offer: KeyOffer | None = None


@dataclass(frozen=True)
class AppleCheckFacts:
    """What the answer of Apple about one token is decided on."""

    token: Token
    #: None when the token's server is gone.
    server: Server | None
    replacement: ReplacementFacts = NO_REPLACEMENT
    #: The record of the user the token is recorded as downloaded by, and the ids of the
    #: current tokens it lists.
    downloader: Recorded = field(default_factory=Recorded)
    downloader_tokens: tuple[str, ...] = ()
    #: The record of the user Apple names, when that is someone else (read for them only).
    named: Recorded | None = None
