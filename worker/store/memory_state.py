"""What the in-memory store (memory.py) holds: plain records in dicts, behind one lock.

It mirrors the Redis layout's meaning, not its bytes: a server with its recorded causes, a
user with their current tokens and causes, a token's replacement with its version, and the
orders Redis's sorted sets give (score, then id). Every fact a decision's guard names is read
here (`fact`), as the apply script reads it from a hash field: text, "" when absent.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from worker.names import user_key
from worker.records import (
    KEY_CURRENT,
    KEY_RETIRED,
    TOKEN_SUPERSEDED,
    KeyPair,
    Server,
    Token,
    ms_field,
    to_ms,
)
from worker.rules.decision import (
    EXISTS,
    INSTALLED_TOKEN,
    POLICY,
    REJECTED,
    RENEWAL,
    REPLACEMENT,
    SERVER,
    STAGED_KEY,
    STATUS,
    TERMS,
    TOKEN,
    USER,
    VERSION,
    WARNED,
    Guard,
)
from worker.rules.facts import Recorded, ReplacementFacts
from worker.rules.policy import PolicyLayer
from worker.rules.replacement import Cause, load_reasons


@dataclass
class UserRow:
    """A Managed Apple Account: its current tokens, latest causes and version; forgotten at
    `forget_at` (wall clock, as a Redis TTL) once it holds no current token."""

    version: str = ""
    token_ids: set[str] = field(default_factory=set)
    causes: dict[str, Cause] = field(default_factory=dict)
    forget_at: float | None = None

    def step_version(self) -> None:
        """As HINCRBY on the version field: a version is a number, "" counting as 0."""
        self.version = str(int(self.version or "0") + 1)


@dataclass
class ReplacementRow:
    token_id: str
    server_id: str
    status: str
    opened_at: str | None
    reasons: list[dict[str, Any]]
    omitted: int
    version: str
    #: When it was opened (ms), its place in the replacement listings.
    opened_ms: int
    certificate: str | None = None
    resolved_at: str | None = None
    resolved_by: str | None = None

    def facts(self) -> ReplacementFacts:
        reasons, omitted = load_reasons(self.reasons, self.omitted)
        return ReplacementFacts(
            status=self.status,
            opened_at=self.opened_at,
            reasons=reasons,
            omitted=omitted,
            certificate=self.certificate or None,
            version=self.version,
        )


@dataclass
class MemoryState:
    lock: threading.RLock = field(default_factory=threading.RLock)
    #: (org key, name key) -> server id: names are unique per organization.
    qualifiers: dict[tuple[str, str], str] = field(default_factory=dict)
    servers: dict[str, Server] = field(default_factory=dict)
    server_causes: dict[str, Recorded] = field(default_factory=dict)
    keys: dict[str, KeyPair] = field(default_factory=dict)
    sealed_keys: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)
    credentials: dict[str, str] = field(default_factory=dict)
    users: dict[str, UserRow] = field(default_factory=dict)
    #: Token id -> its next check (ms).
    next_checks: dict[str, int] = field(default_factory=dict)
    #: Token id -> when Apple is next asked about it (ms); whether the schedule was filled
    #: with the tokens installed before it.
    apple_checks: dict[str, int] = field(default_factory=dict)
    apple_backfilled: bool = False
    apple_interval: int | None = None
    replacements: dict[str, ReplacementRow] = field(default_factory=dict)
    #: Token ids with an open replacement.
    open_replacements: set[str] = field(default_factory=set)
    #: Token ids that ever had a replacement (still stored).
    all_replacements: set[str] = field(default_factory=set)
    #: Event key -> when its duplicate marker lapses (wall clock, as a Redis TTL).
    seen: dict[str, float] = field(default_factory=dict)
    thresholds: str | None = None
    #: The outgoing events, by entry number (in order): written by applied decisions
    #: (memory_events), read into deliveries (memory_notify).
    outbox: dict[int, str] = field(default_factory=dict)
    #: Entry number -> when it was written (wall clock ms, as a Redis stream id says).
    outbox_written: dict[int, int] = field(default_factory=dict)
    outbox_last: int = 0
    #: Policy scope (worker.rules.policy.scope_of) -> its layer and version; a server's own
    #: layer is in its record, its version here too.
    policies: dict[str, tuple[PolicyLayer, str]] = field(default_factory=dict)
    #: Scopes changed since the scan last brought their tokens' checks forward -> version.
    policy_changes: dict[str, str] = field(default_factory=dict)

    # ---- reading ---------------------------------------------------------------------------

    def user(self, key: str) -> UserRow | None:
        row = self.users.get(key)
        if row is not None and row.forget_at is not None and row.forget_at <= time.time():
            del self.users[key]
            return None
        return row

    def user_for_write(self, key: str) -> UserRow:
        row = self.user(key)
        if row is None:
            row = self.users[key] = UserRow()
        return row

    def recorded_user(self, key: str) -> Recorded:
        row = self.user(key)
        return Recorded() if row is None else Recorded(row.version, dict(row.causes))

    def recorded_server(self, server_id: str) -> Recorded:
        return self.server_causes.get(server_id, Recorded())

    def replacement_facts(self, token_id: str) -> ReplacementFacts:
        row = self.replacements.get(token_id)
        return ReplacementFacts() if row is None else row.facts()

    def keys_of(self, server_id: str) -> list[KeyPair]:
        found = [p for p in self.keys.values() if p.server_id == server_id]
        return sorted(found, key=lambda p: (to_ms(p.created_at), p.id))

    def tokens_of(self, server_id: str) -> list[Token]:
        found = [t for t in self.tokens.values() if t.server_id == server_id]
        return sorted(found, key=lambda t: (to_ms(t.installed_at), t.id))

    def fact(self, guard: Guard) -> str:
        """What the guard's fact reads now ("" when absent)."""
        record, ident, fact = guard.record, guard.ident, guard.fact
        if record == USER and fact == VERSION:
            row = self.user(ident)
            return row.version if row else ""
        if record == SERVER:
            return self._server_fact(ident, fact)
        if record == TOKEN:
            token = self.tokens.get(ident)
            if token is None:
                return ""
            if fact == STATUS:
                return token.status
            if fact == WARNED:
                return "" if token.warned is None else str(token.warned)
            if fact == REJECTED:
                return ms_field(token.apple.rejected_at)
            if fact == RENEWAL:
                return ms_field(token.renewal_opened)
        if record == POLICY and fact == VERSION:
            return self.policies.get(ident, (None, ""))[1]
        if record == REPLACEMENT and fact == VERSION:
            row = self.replacements.get(ident)
            return row.version if row else ""
        raise ValueError(f"no such guarded fact: {record} {fact}")

    def _server_fact(self, server_id: str, fact: str) -> str:
        if fact == VERSION:
            return self.recorded_server(server_id).version
        server = self.servers.get(server_id)
        if server is None:
            return ""
        values = {
            EXISTS: server.id,
            INSTALLED_TOKEN: server.token_id,
            STAGED_KEY: server.staged_key_id,
            TERMS: ms_field(server.terms_since),
        }
        if fact not in values:
            raise ValueError(f"no such guarded fact: server {fact}")
        return values[fact] or ""

    # ---- the writes installing a token makes ------------------------------------------------

    def put_token(self, token: Token, sealed_credentials: str, *, check_at: datetime) -> None:
        self.tokens[token.id] = token
        self.credentials[token.id] = sealed_credentials
        user = self.user_for_write(user_key(token.downloaded_by))
        user.token_ids.add(token.id)
        user.step_version()
        user.forget_at = None
        self.next_checks[token.id] = to_ms(check_at)
        self.apple_checks[token.id] = to_ms(check_at)
        self.servers[token.server_id] = replace(self.servers[token.server_id], token_id=token.id)

    def supersede(self, old: Token, by: str, now: datetime) -> None:
        self.tokens[old.id] = replace(
            old, status=TOKEN_SUPERSEDED, superseded_at=now, superseded_by=by
        )
        self.credentials.pop(old.id, None)
        user = self.user_for_write(user_key(old.downloaded_by))
        user.token_ids.discard(old.id)
        user.step_version()
        self.next_checks.pop(old.id, None)
        self.apple_checks.pop(old.id, None)

    def promote(self, server: Server, key_id: str, now: datetime) -> None:
        if server.current_key_id and server.current_key_id in self.keys:
            retired = replace(self.keys[server.current_key_id], state=KEY_RETIRED, retired_at=now)
            self.keys[retired.id] = retired
            self.sealed_keys.pop(retired.id, None)  # it decrypts nothing Apple sends again
        self.keys[key_id] = replace(self.keys[key_id], state=KEY_CURRENT, promoted_at=now)
        self.servers[server.id] = replace(
            self.servers[server.id], current_key_id=key_id, staged_key_id=None
        )

    def forget_token(self, token: Token) -> None:
        """Everything kept about a token of a server being removed."""
        user = self.user_for_write(user_key(token.downloaded_by))
        user.token_ids.discard(token.id)
        user.step_version()
        indexes = (self.credentials, self.next_checks, self.apple_checks, self.replacements)
        for index in (*indexes, self.tokens):
            index.pop(token.id, None)
        self.open_replacements.discard(token.id)
        self.all_replacements.discard(token.id)
