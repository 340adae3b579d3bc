"""The store in memory: the same operations as RedisStore (see protocol.py), on plain records
in dicts behind one lock, for fast tests of the services. tests/contract/ runs one suite
against both, so they cannot drift.

Every write that the Redis adapter makes in one transaction happens here under the lock, in
one step: a key staged with its key_regenerated decision, a token installed with what the
install decides. Secrets are still sealed with the keyring, with the same contexts as in
Redis: this is a store of records, not a way around encryption.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime

from worker.crypto.keys import KeyMaterial, load_sealed_key_material
from worker.crypto.payload import unpack_credentials
from worker.crypto.sealing import Keyring
from worker.errors import ConcurrentChange, Conflict, DuplicateServer, NotFound
from worker.names import name_key, user_key
from worker.records import KeyPair, Server, Token, to_ms
from worker.rules.decision import Decision
from worker.rules.facts import NO_REPLACEMENT, EventFacts, InstallFacts, ScanFacts
from worker.rules.policy import SERVER, scope_of
from worker.store import keys as k
from worker.store.facts import scan_facts_of
from worker.store.memory_apple import MemoryAppleChecks
from worker.store.memory_events import InMemoryEvents
from worker.store.memory_facts import event_facts, rotation_facts
from worker.store.memory_policies import MemoryPolicies
from worker.store.memory_state import MemoryState
from worker.store.memory_watched import MemoryWatched
from worker.store.protocol import ResealReport


def _private_key_context(key_id: str) -> str:
    return f"{k.key_pair(key_id)}#{k.SEALED_PRIVATE_KEY}"


def _credentials_context(token_id: str) -> str:
    return k.credentials(token_id)


class InMemoryStore:
    def __init__(self, keyring: Callable[[], Keyring], state: MemoryState | None = None):
        self._state = state or MemoryState()
        self._keyring = keyring
        self.events = InMemoryEvents(self._state)
        self.apple = MemoryAppleChecks(self._state)
        self.watched = MemoryWatched(self._state)
        self.policies = MemoryPolicies(self._state)

    @property
    def lock(self) -> threading.RLock:
        return self._state.lock

    @property
    def state(self) -> MemoryState:
        """The records themselves, shared with the in-memory notification store (the outbox
        its applied decisions write is the one deliveries are made from)."""
        return self._state

    # ---- servers ---------------------------------------------------------------------------

    def get_server(self, server_id: str) -> Server | None:
        with self.lock:
            return self._state.servers.get(server_id)

    def servers_named(self, name: str) -> list[Server]:
        with self.lock:
            found = [s for s in self._state.servers.values() if name_key(s.name) == name_key(name)]
            return sorted(found, key=lambda s: s.id)

    def servers(self) -> list[Server]:
        """Every server, by id (the listings' order)."""
        with self.lock:
            return sorted(self._state.servers.values(), key=lambda s: s.id)

    def server_batches(self, size: int = 500) -> Iterator[list[Server]]:
        every = self.servers()
        for start in range(0, len(every), size):
            yield every[start : start + size]

    def servers_by_id(self, ids: set[str]) -> dict[str, Server]:
        with self.lock:
            servers = self._state.servers
            return {i: servers[i] for i in sorted(ids) if i in servers}

    def add_server(self, server: Server, key: KeyPair, material: KeyMaterial) -> None:
        qualifier = (name_key(server.org), name_key(server.name))
        sealed = self.seal_private_key(key.id, material)
        with self.lock:
            if qualifier in self._state.qualifiers:
                where = f" in organization {server.org!r}" if server.org else ""
                raise DuplicateServer(
                    f"a server named {server.name!r}{where} already exists (names are compared "
                    "ignoring case); choose another name or remove the old server first"
                )
            self._state.qualifiers[qualifier] = server.id
            self._state.servers[server.id] = server
            self._state.keys[key.id] = key
            self._state.sealed_keys[key.id] = sealed

    def remove_server(self, server: Server) -> None:
        state = self._state
        with self.lock:
            state.qualifiers.pop((name_key(server.org), name_key(server.name)), None)
            for token in state.tokens_of(server.id):
                state.forget_token(token)
            for pair in state.keys_of(server.id):
                state.keys.pop(pair.id, None)
                state.sealed_keys.pop(pair.id, None)
            state.servers.pop(server.id, None)
            state.server_causes.pop(server.id, None)
            state.policies.pop(scope_of(SERVER, server.id), None)  # its layer goes with it

    # ---- key pairs -------------------------------------------------------------------------

    def get_key(self, key_id: str) -> KeyPair | None:
        with self.lock:
            return self._state.keys.get(key_id)

    def keys_of(self, server_id: str) -> list[KeyPair]:
        with self.lock:
            return self._state.keys_of(server_id)

    def open_key_material(self, key: KeyPair) -> KeyMaterial:
        with self.lock:
            sealed = self._state.sealed_keys.get(key.id)
        if not sealed:
            raise NotFound(f"key pair {key.id} no longer holds its private key (it was retired)")
        der = self._keyring().open(sealed, _private_key_context(key.id))
        return load_sealed_key_material(key.cert_pem.encode(), der)

    def stage_key(
        self,
        server: Server,
        key: KeyPair,
        material: KeyMaterial,
        *,
        replace_staged: bool = False,
        decide: Callable[[EventFacts], Decision],
    ) -> tuple[KeyPair | None, Decision]:
        """As RedisStore.stage_key: the key staged and its decision applied in one step."""
        sealed = self.seal_private_key(key.id, material)
        state = self._state
        with self.lock:
            fresh = state.servers.get(server.id)
            if fresh is None:
                raise NotFound(f"server {server.name!r} was removed meanwhile")
            previous = state.keys.get(fresh.staged_key_id) if fresh.staged_key_id else None
            if fresh.staged_key_id and not replace_staged:
                when = f" on {previous.created_at:%Y-%m-%d}" if previous else ""
                raise Conflict(
                    f"server {server.name!r} already has a key staged{when}, waiting for "
                    "its token; if its certificate was uploaded, install the token made "
                    "for it; to discard it and stage another, add --replace-staged"
                )
            decision = decide(rotation_facts(state, replace(fresh, staged_key_id=key.id), key))
            if fresh.staged_key_id:
                state.keys.pop(fresh.staged_key_id, None)
                state.sealed_keys.pop(fresh.staged_key_id, None)
            state.keys[key.id] = key
            state.sealed_keys[key.id] = sealed
            state.servers[server.id] = replace(fresh, staged_key_id=key.id)
            self.events.apply_locked(decision)  # after the key is staged: its guards read it
        return previous, decision

    def seal_private_key(self, key_id: str, material: KeyMaterial) -> str:
        return self._keyring().seal(material.private_key_der(), _private_key_context(key_id))

    # ---- tokens ----------------------------------------------------------------------------

    def get_token(self, token_id: str) -> Token | None:
        with self.lock:
            return self._state.tokens.get(token_id)

    def tokens_of_server(self, server_id: str) -> list[Token]:
        with self.lock:
            return self._state.tokens_of(server_id)

    def tokens_by_id(self, ids: set[str]) -> dict[str, Token]:
        with self.lock:
            tokens = self._state.tokens
            return {i: tokens[i] for i in sorted(ids) if i in tokens}

    def current_tokens_of_user(self, user: str) -> list[Token]:
        with self.lock:
            row = self._state.user(user_key(user))
            ids = sorted(row.token_ids) if row else []
            return [self._state.tokens[i] for i in ids if i in self._state.tokens]

    def tokens_due_for_check(
        self, now: datetime, limit: int, offset: int = 0, *, tidy: bool = True
    ) -> tuple[int, list[Token]]:
        """As RedisStore.tokens_due_for_check: soonest first (then by id), a page of them."""
        with self.lock:
            checks, tokens = self._state.next_checks, self._state.tokens
            due = sorted((at, i) for i, at in checks.items() if at <= to_ms(now))
            ids = [i for _, i in due[offset : offset + limit]]
            if tidy:
                for gone in (i for i in ids if i not in tokens):
                    del checks[gone]
            return len(ids), [tokens[i] for i in ids if i in tokens]

    def bring_checks_forward(self, latest_check: Callable[[Token], datetime]) -> int:
        moved = 0
        with self.lock:
            checks = self._state.next_checks
            for token_id, at in list(checks.items()):
                token = self._state.tokens.get(token_id)
                if token is not None and to_ms(latest_check(token)) < at:
                    checks[token_id] = to_ms(latest_check(token))
                    moved += 1
        return moved

    def bring_check_forward(self, token_id: str, at: datetime) -> None:
        with self.lock:
            checks = self._state.next_checks
            if token_id in checks:
                checks[token_id] = min(checks[token_id], to_ms(at))

    def scheduler_thresholds(self) -> str | None:
        return self._state.thresholds

    def set_scheduler_thresholds(self, text: str) -> None:
        self._state.thresholds = text

    def event_facts(
        self, user_keys: set[str], name_keys: set[str], staged_for_names: set[str]
    ) -> EventFacts:
        with self.lock:
            return event_facts(self._state, user_keys, name_keys, staged_for_names)

    def scan_facts(self, tokens: list[Token]) -> list[ScanFacts]:
        with self.lock:
            state = self._state
            ids = sorted({t.server_id for t in tokens} & state.servers.keys())
            servers = [state.servers[i] for i in ids]
            policies = self.policies.effective_for(servers)
            certificates = {
                s.id: state.keys[s.staged_key_id].cert_pem
                for s in servers
                if s.staged_key_id in state.keys
            }
            return [
                scan_facts_of(
                    t,
                    state.servers.get(t.server_id),
                    {},
                    policies,
                    certificates,
                    replacement=state.replacement_facts(t.id),
                )
                for t in tokens
            ]

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
        """As RedisStore.install_token: the token, its indexes, the superseding, the key
        promotion and the decision, in one step; ConcurrentChange when the server's token or
        keys moved since `server` was read."""
        sealed = self.seal_credentials(token.id, credentials_json)
        state = self._state
        with self.lock:
            seen = state.servers.get(server.id)
            if seen is None:
                raise NotFound(f"server {server.name!r} was removed meanwhile")
            if _keys_and_token(seen) != _keys_and_token(server):
                raise ConcurrentChange("the server changed while the token was being installed")
            old = state.tokens.get(replaces) if replaces else None
            user = state.recorded_user(user_key(token.downloaded_by))
            facts = InstallFacts(
                server=seen,
                replaced=old,
                replaced_replacement=state.replacement_facts(old.id) if old else NO_REPLACEMENT,
                causes=[*state.recorded_server(seen.id).causes.values(), *user.causes.values()],
                staged_certificate=staged_certificate,
            )
            decision = decide(facts)
            state.put_token(token, sealed, check_at=now)  # scan it at once
            if old is not None:
                state.supersede(old, token.id, now)
            if promote_key:
                state.promote(state.servers[server.id], promote_key, now)
            self.events.apply_locked(decision)
        return decision

    def seal_credentials(self, token_id: str, credentials_json: bytes) -> str:
        return self._keyring().seal(credentials_json, _credentials_context(token_id))

    def open_credentials(self, token: Token) -> dict[str, str]:
        with self.lock:
            sealed = self._state.credentials.get(token.id)
        if not sealed:
            raise NotFound(f"token {token.id} no longer holds credentials (it was superseded)")
        return unpack_credentials(self._keyring().open(sealed, _credentials_context(token.id)))

    # ---- secrets ---------------------------------------------------------------------------

    def reseal_all(self) -> ResealReport:
        """Re-seal every secret not sealed under the primary master key."""
        keyring = self._keyring()
        examined = resealed = 0
        with self.lock:
            for store, context in (
                (self._state.sealed_keys, _private_key_context),
                (self._state.credentials, _credentials_context),
            ):
                for ident, sealed in store.items():
                    examined += 1
                    if keyring.needs_reseal(sealed):
                        plain = keyring.open(sealed, context(ident))
                        store[ident] = keyring.seal(plain, context(ident))
                        resealed += 1
        return ResealReport(examined=examined, resealed=resealed)

    def sealed_values(self) -> Iterator[tuple[str, str | None, str]]:
        """(where, hash field or None, sealed value) of every stored secret, named as in Redis."""
        with self.lock:
            keys, credentials = self._state.sealed_keys, self._state.credentials
            found = [
                *((k.key_pair(i), k.SEALED_PRIVATE_KEY, s) for i, s in keys.items()),
                *((k.credentials(i), None, s) for i, s in credentials.items()),
            ]
        yield from found

    def ping(self) -> None:
        """Always reachable."""


def _keys_and_token(server: Server) -> tuple[str | None, str | None, str | None]:
    return server.token_id, server.current_key_id, server.staged_key_id
