"""What the services (handling.py, registry.py, services/estate.py, scheduler/scan.py) need of a
store on the event and registry side, and nothing more: plain records in and out
(worker/records.py, worker/rules/), no Redis types.

Two implementations: RedisStore (redis_store.py, with event_store.py) in production, and
InMemoryStore (memory.py) for fast tests. tests/contract/ runs one suite against both. The
notification side has its own protocol, worker/notify/store.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from worker.crypto.keys import KeyMaterial
from worker.records import KeyPair, Replacement, Server, Token
from worker.rules.decision import Decision
from worker.rules.directory import WatchedUser
from worker.rules.facts import AppleCheckFacts, EventFacts, InstallFacts, ScanFacts
from worker.rules.policy import Policy, PolicyLayer


@dataclass(frozen=True)
class Applied:
    """What applying a decision came to, and what it did (nothing unless applied)."""

    outcome: str  # applied | duplicate | retry
    results: list[dict[str, Any]]

    @classmethod
    def of(cls, decision: Decision, outcome: str) -> Applied:
        return cls(outcome, decision.results if outcome == "applied" else [])


@dataclass(frozen=True)
class ResealReport:
    examined: int
    resealed: int


class EventLog(Protocol):
    """Decisions applied, the audit trail, the dead letters and the replacements."""

    def apply(self, decision: Decision) -> Applied:
        """Atomically: "duplicate" when the decision's event was applied before, "retry" when
        a fact it was made on (a guard) moved, else every write it means ("applied")."""
        ...

    def apply_many(self, decisions: list[Decision]) -> list[Applied]:
        """Each decision applied on its own, in order."""
        ...

    def record_dead(
        self, payload: Any, reason: str, now: datetime, message_id: str | None = None
    ) -> None: ...

    def audit(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest audit entries, newest first."""
        ...

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest dead letters, newest first."""
        ...

    def replacements(self, *, include_resolved: bool = False) -> list[Replacement]:
        """Open replacements (every one kept, if asked), oldest opened first."""
        ...

    def replacements_by_token(self, token_ids: set[str]) -> dict[str, Replacement]: ...


class AppleChecks(Protocol):
    """When Apple's enrollment service is next asked about each current token, and the facts
    its answer is decided on (apple_checks.py, memory_apple.py)."""

    def schedule(self, token_id: str, at: datetime, *, only_if_scheduled: bool = False) -> None: ...

    def reschedule(self, times: Mapping[str, datetime]) -> None:
        """Each token's next check in one write; a token out of the schedule stays out."""
        ...

    def unschedule(self, token_ids: list[str]) -> None: ...

    def claim_due(self, now: datetime, limit: int, lease_until: datetime) -> list[str]:
        """Ids due by `now` (at most `limit`, soonest first), each moved to `lease_until` so
        no other round takes it meanwhile."""
        ...

    def due_count(self, now: datetime) -> int: ...

    def scheduled_count(self) -> int: ...

    def backfill(self, now: datetime, spread_s: int) -> int:
        """Put the current tokens installed before the schedule existed into it, spread over
        `spread_s`; once. Returns how many were added."""
        ...

    def interval(self) -> int | None:
        """The check interval the schedule was made with (None: not recorded yet)."""
        ...

    def set_interval(self, seconds: int) -> None: ...

    def bring_forward(self, now: datetime, interval_s: int) -> int:
        """Move every check later than one interval from now into the coming interval,
        spread; returns how many moved."""
        ...

    def facts(self, token_ids: list[str], named: dict[str, str]) -> list[AppleCheckFacts]:
        """`named`: token id -> key of the user Apple named as its downloader, to read too."""
        ...

    def current_tokens(self, token_ids: list[str]) -> list[Token]: ...


class WatchedUsers(Protocol):
    """The people directories are asked about: users holding a current token, by domain
    (watched.py, memory_watched.py)."""

    def users(self, domains: Sequence[str] | None, batch: int = 200) -> Iterator[list[WatchedUser]]:
        """Those of `domains` (None: every domain), `batch` at a time."""
        ...

    def count(self, domains: Sequence[str] | None) -> int: ...

    def domains(self) -> set[str]: ...

    def backfill(self) -> int:
        """Index the users of tokens installed before the index existed; once."""
        ...


class Policies(Protocol):
    """Rotation policy layers (policies.py, memory_policies.py); written only by decisions."""

    def layer(self, scope: str) -> tuple[PolicyLayer, str]:
        """The layer of a scope (worker.rules.policy.scope_of) and its version ("": never)."""
        ...

    def effective_for(self, servers: list[Server]) -> dict[str, Policy]:
        """The policy in force for each server, by id."""
        ...

    def layers(self) -> dict[str, PolicyLayer]:
        """Every organization and global layer that sets something, by scope."""
        ...

    def changes(self) -> dict[str, str]:
        """Scopes changed since the scan last brought their tokens' checks forward."""
        ...

    def forget_changes(self, handled: dict[str, str]) -> None:
        """Forget those handled, unless changed again since (another version)."""
        ...


class Store(Protocol):
    """Servers, key pairs and tokens, the facts decisions are made on, and the two writes that
    carry a decision in one step (staging a key, installing a token)."""

    @property
    def events(self) -> EventLog: ...

    @property
    def apple(self) -> AppleChecks: ...

    @property
    def watched(self) -> WatchedUsers: ...

    @property
    def policies(self) -> Policies: ...

    def ping(self) -> None:
        """Raises when the store cannot be reached."""
        ...

    def get_server(self, server_id: str) -> Server | None: ...

    def servers_named(self, name: str) -> list[Server]:
        """The servers bearing this name (compared ignoring case), across organizations."""
        ...

    def servers_by_id(self, ids: set[str]) -> dict[str, Server]: ...

    def add_server(self, server: Server, key: KeyPair, material: KeyMaterial) -> None:
        """DuplicateServer when the name is taken in its organization."""
        ...

    def remove_server(self, server: Server) -> None: ...

    def get_key(self, key_id: str) -> KeyPair | None: ...

    def keys_of(self, server_id: str) -> list[KeyPair]:
        """Oldest first."""
        ...

    def open_key_material(self, key: KeyPair) -> KeyMaterial:
        """NotFound when the key no longer holds its private key (retired)."""
        ...

    def stage_key(
        self,
        server: Server,
        key: KeyPair,
        material: KeyMaterial,
        *,
        replace_staged: bool = False,
        decide: Callable[[EventFacts], Decision],
    ) -> tuple[KeyPair | None, Decision]:
        """Stage `key` with the decision `decide(facts with the key staged)`, in one step;
        Conflict when a key is staged already and not `replace_staged`. Returns the key
        discarded, if any, and the decision."""
        ...

    def seal_private_key(self, key_id: str, material: KeyMaterial) -> str:
        """A private key sealed as key pair `key_id` keeps it (for a KeyOffer)."""
        ...

    def bring_check_forward(self, token_id: str, at: datetime) -> None:
        """Check the token no later than `at` (a policy changed)."""
        ...

    def get_token(self, token_id: str) -> Token | None: ...

    def tokens_of_server(self, server_id: str) -> list[Token]:
        """Every token of the server, superseded ones too, oldest installed first."""
        ...

    def tokens_by_id(self, ids: set[str]) -> dict[str, Token]: ...

    def install_token(
        self,
        server: Server,
        token: Token,
        credentials_json: bytes,
        *,
        replaces: str | None,
        promote_key: str | None,
        now: datetime,
        decide: Callable[[InstallFacts], Decision],
        staged_certificate: str | None = None,
    ) -> Decision:
        """Install `token` with the decision `decide(facts)`, in one step; ConcurrentChange
        when the server's token or keys moved since `server` was read."""
        ...

    def event_facts(
        self, user_keys: set[str], name_keys: set[str], staged_for_names: set[str]
    ) -> EventFacts: ...

    def scan_facts(self, tokens: list[Token]) -> list[ScanFacts]: ...

    def tokens_due_for_check(
        self, now: datetime, limit: int, offset: int = 0, *, tidy: bool = True
    ) -> tuple[int, list[Token]]:
        """Current tokens whose next check is due by `now`, soonest first, and how many ids
        the index gave (ids of tokens gone are dropped from it, when `tidy`)."""
        ...

    def bring_checks_forward(self, latest_check: Callable[[Token], datetime]) -> int: ...

    def scheduler_thresholds(self) -> str | None: ...

    def set_scheduler_thresholds(self, text: str) -> None: ...

    def reseal_all(self) -> ResealReport: ...

    def sealed_values(self) -> Iterator[tuple[str, str | None, str]]:
        """(where, field or None, sealed value) of every stored secret."""
        ...


class ServerListing(Protocol):
    """Every server at once, for the listings (store/listings.py; InMemoryStore has it too)."""

    def servers(self) -> list[Server]: ...

    def server_batches(self, size: int = 500) -> Iterator[list[Server]]:
        """Every server, about `size` at a time (one may come twice; the reader drops it)."""
        ...
