"""The one place that talks to Redis about servers, key pairs and tokens.

Writes that belong together go in one MULTI/EXEC, guarded by WATCH where they depend on what was
read; a write that lost a race raises ConcurrentChange and the caller decides again on fresh state.
Secrets are sealed here, on the way in, and opened here, on demand, with the Redis key and field
as the sealing context.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import redis

from worker.crypto.keys import KeyMaterial, load_sealed_key_material
from worker.crypto.payload import unpack_credentials
from worker.crypto.sealing import Keyring
from worker.errors import ConcurrentChange, Conflict, DuplicateServer, NotFound, StoreUnavailable
from worker.names import name_key, user_key
from worker.records import (
    KEY_CURRENT,
    KEY_RETIRED,
    KEY_STAGED,
    TOKEN_SUPERSEDED,
    KeyPair,
    Server,
    Token,
    to_ms,
)
from worker.rules.replacement import Cause
from worker.store import keys as k
from worker.store.event_store import EventStore, Plan, causes_in

#: Keys read per round trip when listing or re-sealing.
BATCH = 500

# Replace a sealed value (a hash field, or the whole string when the field is "") only if it
# still holds what was read (re-sealing must not undo a write made meanwhile).
_COMPARE_AND_SET = """
if ARGV[1] == '' then
  if redis.call('GET', KEYS[1]) == ARGV[2] then
    redis.call('SET', KEYS[1], ARGV[3], 'KEEPTTL')
    return 1
  end
  return 0
end
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class ResealReport:
    examined: int
    resealed: int


def _context(redis_key: str, field: str | None) -> str:
    return redis_key if field is None else f"{redis_key}#{field}"


def _credentials_context(token_id: str) -> str:
    return _context(k.credentials(token_id), None)


def token_ids_in(user_hash: dict[str, str]) -> list[str]:
    """The current token ids listed in a user hash."""
    return sorted(
        f[len(k.USER_TOKEN_PREFIX) :] for f in user_hash if f.startswith(k.USER_TOKEN_PREFIX)
    )


def queue_token_writes(
    pipe: redis.client.Pipeline, token: Token, sealed_credentials: str, *, check_at: datetime
) -> None:
    """Every write that makes `token` its server's current token, with its indexes: the one
    place that knows them (install uses it; so does the benchmarks' bulk loader)."""
    pipe.hset(k.token(token.id), mapping=token.to_hash())
    pipe.set(k.credentials(token.id), sealed_credentials)
    pipe.zadd(k.server_tokens(token.server_id), {token.id: to_ms(token.installed_at)})
    user_hash = k.user(user_key(token.downloaded_by))
    pipe.hset(user_hash, k.user_token_field(token.id), 1)
    pipe.hincrby(user_hash, k.USER_VERSION, 1)
    pipe.persist(user_hash)  # it may have been a user known only from events, set to expire
    pipe.zadd(k.TOKENS_NEXT_CHECK, {token.id: to_ms(check_at)})
    pipe.hset(k.server(token.server_id), "token", token.id)


class RedisStore:
    def __init__(
        self, client: redis.Redis, keyring: Callable[[], Keyring], events: EventStore | None = None
    ):
        self._redis = client
        self._keyring = keyring
        self.events = events or EventStore(client)
        self._compare_and_set = client.register_script(_COMPARE_AND_SET)

    # ---- servers ---------------------------------------------------------------------------

    def get_server(self, server_id: str) -> Server | None:
        data = self._redis.hgetall(k.server(server_id))
        return Server.from_hash(data) if data else None

    def servers_named(self, name: str) -> list[Server]:
        ids = sorted(self._redis.smembers(k.servers_named(name_key(name))))
        return [s for s in self._servers(ids) if s is not None]

    def iter_servers(self) -> Iterator[Server]:
        batch: list[str] = []
        for _, server_id in self._redis.hscan_iter(k.SERVERS, count=BATCH):
            batch.append(server_id)
            if len(batch) >= BATCH:
                yield from (s for s in self._servers(batch) if s is not None)
                batch = []
        yield from (s for s in self._servers(batch) if s is not None)

    def add_server(self, server: Server, key: KeyPair, material: KeyMaterial) -> None:
        qualifier = k.server_qualifier(name_key(server.org), name_key(server.name))
        sealed = self._seal_private_key(key.id, material)

        def write(pipe: redis.client.Pipeline) -> None:
            if pipe.hexists(k.SERVERS, qualifier):
                where = f" in organization {server.org!r}" if server.org else ""
                raise DuplicateServer(
                    f"a server named {server.name!r}{where} already exists (names are compared "
                    "ignoring case); choose another name or remove the old server first"
                )
            pipe.multi()
            pipe.hset(k.SERVERS, qualifier, server.id)
            pipe.sadd(k.servers_named(name_key(server.name)), server.id)
            pipe.hset(k.server(server.id), mapping=server.to_hash())
            pipe.hset(k.key_pair(key.id), mapping={**key.to_hash(), k.SEALED_PRIVATE_KEY: sealed})
            pipe.zadd(k.server_keys(server.id), {key.id: to_ms(key.created_at)})

        self._redis.transaction(write, k.SERVERS)

    def remove_server(self, server: Server) -> None:
        qualifier = k.server_qualifier(name_key(server.org), name_key(server.name))
        watched = (k.server(server.id), k.server_keys(server.id), k.server_tokens(server.id))

        def write(pipe: redis.client.Pipeline) -> None:
            # Read the ids under WATCH: a key staged or a token installed meanwhile restarts
            # the transaction instead of being left behind.
            key_ids = pipe.zrange(k.server_keys(server.id), 0, -1)
            token_ids = pipe.zrange(k.server_tokens(server.id), 0, -1)
            tokens = [
                Token.from_hash(d) for d in (pipe.hgetall(k.token(i)) for i in token_ids) if d
            ]
            pipe.multi()
            pipe.hdel(k.SERVERS, qualifier)
            pipe.srem(k.servers_named(name_key(server.name)), server.id)
            for token in tokens:
                pipe.hdel(k.user(user_key(token.downloaded_by)), k.user_token_field(token.id))
                pipe.hincrby(k.user(user_key(token.downloaded_by)), k.USER_VERSION, 1)
                pipe.delete(k.credentials(token.id))
                pipe.zrem(k.TOKENS_NEXT_CHECK, token.id)
                pipe.zrem(k.REPLACEMENTS_OPEN, token.id)
                pipe.zrem(k.REPLACEMENTS, token.id)
                pipe.delete(k.replacement(token.id))
            pipe.delete(
                *watched, *(k.key_pair(i) for i in key_ids), *(k.token(i) for i in token_ids)
            )

        self._redis.transaction(write, *watched)

    # ---- key pairs -------------------------------------------------------------------------

    def get_key(self, key_id: str) -> KeyPair | None:
        data = self._redis.hgetall(k.key_pair(key_id))
        return KeyPair.from_hash(data) if data else None

    def keys_of(self, server_id: str) -> list[KeyPair]:
        ids = self._redis.zrange(k.server_keys(server_id), 0, -1)
        pipe = self._redis.pipeline(transaction=False)
        for key_id in ids:
            pipe.hgetall(k.key_pair(key_id))
        return [KeyPair.from_hash(d) for d in pipe.execute() if d]

    def open_key_material(self, key: KeyPair) -> KeyMaterial:
        redis_key = k.key_pair(key.id)
        sealed = self._redis.hget(redis_key, k.SEALED_PRIVATE_KEY)
        if not sealed:
            raise NotFound(f"key pair {key.id} no longer holds its private key (it was retired)")
        der = self._keyring().open(sealed, _context(redis_key, k.SEALED_PRIVATE_KEY))
        return load_sealed_key_material(key.cert_pem.encode(), der)

    def stage_key(
        self,
        server: Server,
        key: KeyPair,
        material: KeyMaterial,
        *,
        replace_staged: bool = False,
        plan_for: Callable[[Server, Token | None], Plan] | None = None,
    ) -> tuple[KeyPair | None, Plan | None]:
        """Stage a new key pair, discarding one staged before only if `replace_staged`.

        `plan_for(server with the key staged, its current token)` gives the decision the new
        key causes (the key_regenerated event: the token to replace, the notice with the
        certificate to upload), applied in the same transaction, so a key is never staged
        without it. Returns the key discarded, if any, and the plan applied.
        """
        sealed = self._seal_private_key(key.id, material)
        server_key = k.server(server.id)
        discarded: list[KeyPair] = []
        applied: list[Plan] = []

        def write(pipe: redis.client.Pipeline) -> None:
            discarded.clear()
            applied.clear()
            fresh = pipe.hgetall(server_key)
            if not fresh:
                raise NotFound(f"server {server.name!r} was removed meanwhile")
            previous = fresh.get("staged_key")
            if previous:
                data = pipe.hgetall(k.key_pair(previous))
                if data:
                    discarded.append(KeyPair.from_hash(data))
                if not replace_staged:
                    staged = discarded[0] if discarded else None
                    when = f" on {staged.created_at:%Y-%m-%d}" if staged else ""
                    raise Conflict(
                        f"server {server.name!r} already has a key staged{when}, waiting for "
                        "its token; if its certificate was uploaded, install the token made "
                        "for it; to discard it and stage another, add --replace-staged"
                    )
            if plan_for is not None:
                # The token hash is not watched: it changes only with the server's `token`
                # field, which is.
                token_id = fresh.get("token")
                token_data = pipe.hgetall(k.token(token_id)) if token_id else None
                token = Token.from_hash(token_data) if token_data else None
                after = replace(Server.from_hash(fresh), staged_key_id=key.id)
                applied.append(plan_for(after, token))
            pipe.multi()
            if previous:
                pipe.delete(k.key_pair(previous))
                pipe.zrem(k.server_keys(server.id), previous)
            pipe.hset(k.key_pair(key.id), mapping={**key.to_hash(), k.SEALED_PRIVATE_KEY: sealed})
            pipe.zadd(k.server_keys(server.id), {key.id: to_ms(key.created_at)})
            pipe.hset(server_key, "staged_key", key.id)
            if applied:  # after the key is staged: the plan's guards read it
                self.events.queue_apply(pipe, applied[0])

        try:
            self._redis.transaction(write, server_key)
        except redis.ResponseError:
            # EXEC ran but the plan's script failed (MULTI/EXEC does not roll back; say, the
            # script cache was flushed between loading and EXEC): the key is staged, so apply
            # the plan on its own, once; if that fails too, unstage the key, so a key is never
            # left staged without its decision.
            if not applied or self._redis.hget(server_key, "staged_key") != key.id:
                raise
            self._apply_or_unstage(applied[0], server.id, key.id)
        return (discarded[0] if discarded else None), (applied[0] if applied else None)

    def _apply_or_unstage(self, plan: Plan, server_id: str, key_id: str) -> None:
        try:
            outcome = self.events.apply(plan).outcome
        except redis.RedisError:
            outcome = "failed"
        if outcome in ("applied", "duplicate"):
            return
        server_key = k.server(server_id)

        def undo(pipe: redis.client.Pipeline) -> None:
            if pipe.hget(server_key, "staged_key") != key_id:
                return  # someone staged or promoted meanwhile: not ours to undo
            pipe.multi()
            pipe.hdel(server_key, "staged_key")
            pipe.delete(k.key_pair(key_id))
            pipe.zrem(k.server_keys(server_id), key_id)

        self._redis.transaction(undo, server_key)
        raise StoreUnavailable(
            f"Redis refused to record the new key's decision ({outcome}); nothing was staged: "
            "check Redis (memory, logs) and run the command again"
        )

    def _seal_private_key(self, key_id: str, material: KeyMaterial) -> str:
        context = _context(k.key_pair(key_id), k.SEALED_PRIVATE_KEY)
        return self._keyring().seal(material.private_key_der(), context)

    # ---- tokens ----------------------------------------------------------------------------

    def get_token(self, token_id: str) -> Token | None:
        data = self._redis.hgetall(k.token(token_id))
        return Token.from_hash(data) if data else None

    def tokens_of_server(self, server_id: str) -> list[Token]:
        ids = self._redis.zrange(k.server_tokens(server_id), 0, -1)
        return [t for t in self._tokens(ids) if t is not None]

    def tokens_due_for_check(
        self, now: datetime, limit: int, offset: int = 0, *, tidy: bool = True
    ) -> tuple[int, list[Token]]:
        """Current tokens the scheduler must look at by `now`, soonest first, and how many ids
        the index gave (a token gone meanwhile is dropped from it, when `tidy`)."""
        ids = self._redis.zrangebyscore(
            k.TOKENS_NEXT_CHECK, "-inf", to_ms(now), start=offset, num=limit
        )
        found = self._tokens(ids)
        gone = [i for i, t in zip(ids, found, strict=True) if t is None]
        if gone and tidy:  # left behind by a removal that raced the index
            self._redis.zrem(k.TOKENS_NEXT_CHECK, *gone)
        return len(ids), [t for t in found if t is not None]

    def bring_checks_forward(self, latest_check: Callable[[Token], datetime]) -> int:
        """Move each token's next check no later than `latest_check(token)` (after the
        thresholds changed); returns how many moved. One pass over the index."""
        moved = 0
        cursor = 0
        while True:
            cursor, entries = self._redis.zscan(k.TOKENS_NEXT_CHECK, cursor, count=BATCH)
            tokens = self._tokens([member for member, _ in entries])
            pipe = self._redis.pipeline(transaction=False)
            for (member, score), token in zip(entries, tokens, strict=True):
                if token is not None and to_ms(latest_check(token)) < score:
                    pipe.zadd(k.TOKENS_NEXT_CHECK, {member: to_ms(latest_check(token))}, xx=True)
                    moved += 1
            pipe.execute()
            if cursor == 0:
                return moved

    def scheduler_thresholds(self) -> str | None:
        return self._redis.get(k.SCHEDULER_THRESHOLDS)

    def set_scheduler_thresholds(self, text: str) -> None:
        self._redis.set(k.SCHEDULER_THRESHOLDS, text)

    def tokens_by_id(self, ids: set[str]) -> dict[str, Token]:
        """Many tokens in one round trip."""
        ordered = sorted(ids)
        return {t.id: t for t in self._tokens(ordered) if t is not None}

    def servers_by_id(self, ids: set[str]) -> dict[str, Server]:
        ordered = sorted(ids)
        return {s.id: s for s in self._servers(ordered) if s is not None}

    def decision_facts(
        self, user_keys: set[str], name_keys: set[str], staged_for_names: set[str]
    ) -> DecisionFacts:
        return read_decision_facts(self._redis, user_keys, name_keys, staged_for_names)

    def current_tokens_of_user(self, user: str) -> list[Token]:
        ids = token_ids_in(self._redis.hgetall(k.user(user_key(user))))
        return [t for t in self._tokens(ids) if t is not None]

    def install_token(
        self,
        server: Server,
        token: Token,
        credentials_json: bytes,
        *,
        replaces: str | None,
        promote_key: str | None,
        now: datetime,
        plan_for: Callable[[list[Cause], Token | None], Plan],
    ) -> Plan:
        """Store a token as the server's current one, superseding `replaces` and, when the
        token was encrypted to the staged key, promoting that key and retiring the old one.

        `plan_for(recorded causes, superseded token)` gives the decision applied in the same
        transaction: closing the old token's replacement, and opening one for the new token
        when a cause already seen dooms it. Returns the plan applied.
        Raises ConcurrentChange when the server's token or keys moved since they were read.
        """
        server_key = k.server(server.id)
        user_hash = k.user(user_key(token.downloaded_by))
        sealed = self.seal_credentials(token.id, credentials_json)
        applied: list[Plan] = []

        def write(pipe: redis.client.Pipeline) -> None:
            applied.clear()
            fresh = pipe.hgetall(server_key)
            if not fresh:
                raise NotFound(f"server {server.name!r} was removed meanwhile")
            seen = Server.from_hash(fresh)
            if (seen.token_id, seen.current_key_id, seen.staged_key_id) != (
                server.token_id,
                server.current_key_id,
                server.staged_key_id,
            ):
                raise ConcurrentChange("the server changed while the token was being installed")
            old_data = pipe.hgetall(k.token(replaces)) if replaces else None
            old = Token.from_hash(old_data) if old_data else None
            # A cause recorded meanwhile for the user or the server changes a watched key, so
            # the transaction starts again and sees it.
            plan = plan_for(causes_in(fresh) + causes_in(pipe.hgetall(user_hash)), old)
            applied.append(plan)
            pipe.multi()
            queue_token_writes(pipe, token, sealed, check_at=now)  # the scheduler looks now
            if old:
                self._supersede(pipe, old, token.id, now)
            if promote_key:
                self._promote(pipe, seen, promote_key, now)
            self.events.queue_apply(pipe, plan)

        try:
            self._redis.transaction(write, server_key, user_hash)
        except redis.ResponseError:
            # EXEC ran but the plan's script failed (say, the script cache was flushed between
            # loading and EXEC): the token is in, so apply the plan on its own, once.
            if self._redis.hget(server_key, "token") != token.id:
                raise
            self.events.apply(applied[0])
        return applied[0]

    def _supersede(self, pipe: redis.client.Pipeline, old: Token, by: str, now: datetime) -> None:
        superseded = replace(old, status=TOKEN_SUPERSEDED, superseded_at=now, superseded_by=by)
        pipe.hset(k.token(old.id), mapping=superseded.to_hash())
        # A superseded token's credentials are dead; keeping them would only widen exposure.
        pipe.delete(k.credentials(old.id))
        pipe.hdel(k.user(user_key(old.downloaded_by)), k.user_token_field(old.id))
        pipe.hincrby(k.user(user_key(old.downloaded_by)), k.USER_VERSION, 1)
        pipe.zrem(k.TOKENS_NEXT_CHECK, old.id)

    def _promote(
        self, pipe: redis.client.Pipeline, server: Server, key_id: str, now: datetime
    ) -> None:
        if server.current_key_id:
            pipe.hset(
                k.key_pair(server.current_key_id),
                mapping={"state": KEY_RETIRED, "retired_at": to_ms(now)},
            )
            # A retired key decrypts nothing Apple will send again; drop it.
            pipe.hdel(k.key_pair(server.current_key_id), k.SEALED_PRIVATE_KEY)
        pipe.hset(k.key_pair(key_id), mapping={"state": KEY_CURRENT, "promoted_at": to_ms(now)})
        pipe.hset(k.server(server.id), mapping={"current_key": key_id, "staged_key": ""})

    def seal_credentials(self, token_id: str, credentials_json: bytes) -> str:
        return self._keyring().seal(credentials_json, _credentials_context(token_id))

    def open_credentials(self, token: Token) -> dict[str, str]:
        sealed = self._redis.get(k.credentials(token.id))
        if not sealed:
            raise NotFound(f"token {token.id} no longer holds credentials (it was superseded)")
        return unpack_credentials(self._keyring().open(sealed, _credentials_context(token.id)))

    # ---- secrets ---------------------------------------------------------------------------

    def reseal_all(self) -> ResealReport:
        """Re-seal every secret not sealed under the primary master key."""
        keyring = self._keyring()
        examined = resealed = 0
        for redis_key, field, sealed in self.sealed_values():
            examined += 1
            if not keyring.needs_reseal(sealed):
                continue
            context = _context(redis_key, field)
            fresh = keyring.seal(keyring.open(sealed, context), context)
            resealed += self._compare_and_set(keys=[redis_key], args=[field or "", sealed, fresh])
        return ResealReport(examined=examined, resealed=resealed)

    def sealed_values(self) -> Iterator[tuple[str, str | None, str]]:
        """(Redis key, hash field or None for a string, sealed value) of every stored secret."""
        for pattern, field in k.SEALED_LOCATIONS:
            kind = "string" if field is None else "hash"
            for redis_key in self._redis.scan_iter(match=pattern, count=BATCH, _type=kind):
                sealed = (
                    self._redis.get(redis_key)
                    if field is None
                    else self._redis.hget(redis_key, field)
                )
                if sealed:
                    yield redis_key, field, sealed

    def ping(self) -> None:
        self._redis.ping()

    # ---- helpers ---------------------------------------------------------------------------

    def _servers(self, ids: list[str]) -> list[Server | None]:
        pipe = self._redis.pipeline(transaction=False)
        for server_id in ids:
            pipe.hgetall(k.server(server_id))
        return [Server.from_hash(d) if d else None for d in pipe.execute()]

    def _tokens(self, ids: list[str]) -> list[Token | None]:
        pipe = self._redis.pipeline(transaction=False)
        for token_id in ids:
            pipe.hgetall(k.token(token_id))
        return [Token.from_hash(d) if d else None for d in pipe.execute()]


__all__ = ["KEY_STAGED", "ConcurrentChange", "RedisStore", "ResealReport"]


@dataclass
class DecisionFacts:
    """What a batch of events is decided on, read in three pipelined round trips."""

    user_versions: dict[str, str]
    user_tokens: dict[str, list[Token]]
    servers_named: dict[str, list[Server]]
    tokens: dict[str, Token]
    servers: dict[str, Server]
    staged_certificates: dict[str, str]  # server id -> PEM of its staged key


def read_decision_facts(
    client: redis.Redis, user_keys: set[str], name_keys: set[str], staged_for_names: set[str]
) -> DecisionFacts:
    users, names = sorted(user_keys), sorted(name_keys)
    # 1. Each user's version (read before the tokens: an install in between fails the guard,
    #    and the decision is made again) and token ids; the servers bearing each name.
    pipe = client.pipeline(transaction=False)
    for key in users:
        pipe.hgetall(k.user(key))
    for key in names:
        pipe.smembers(k.servers_named(key))
    answers = pipe.execute()
    versions = {key: answers[i].get(k.USER_VERSION, "") for i, key in enumerate(users)}
    token_ids = {key: token_ids_in(answers[i]) for i, key in enumerate(users)}
    server_ids = {key: sorted(answers[len(users) + i]) for i, key in enumerate(names)}
    # 2. Those tokens and servers.
    tokens = _read_hashes(
        client, k.token, {t for ids in token_ids.values() for t in ids}, Token.from_hash
    )
    servers = _read_hashes(
        client, k.server, {s for ids in server_ids.values() for s in ids}, Server.from_hash
    )
    # 3. The servers of those tokens, the tokens of those servers, and staged keys wanted.
    more_servers = {t.server_id for t in tokens.values()} - servers.keys()
    more_tokens = {s.token_id for s in servers.values() if s.token_id} - tokens.keys()
    staged_ids = {
        s.id: s.staged_key_id
        for s in servers.values()
        if s.staged_key_id and name_key(s.name) in staged_for_names
    }
    pipe = client.pipeline(transaction=False)
    for server_id in sorted(more_servers):
        pipe.hgetall(k.server(server_id))
    for token_id in sorted(more_tokens):
        pipe.hgetall(k.token(token_id))
    for key_id in staged_ids.values():
        pipe.hget(k.key_pair(key_id), "cert")
    answers = iter(pipe.execute())
    for _ in sorted(more_servers):
        data = next(answers)
        if data:
            servers[data["id"]] = Server.from_hash(data)
    for _ in sorted(more_tokens):
        data = next(answers)
        if data:
            tokens[data["id"]] = Token.from_hash(data)
    staged = {server_id: cert for server_id, cert in zip(staged_ids, answers, strict=True) if cert}
    return DecisionFacts(
        user_versions=versions,
        user_tokens={
            key: [tokens[t] for t in ids if t in tokens] for key, ids in token_ids.items()
        },
        servers_named={
            key: [servers[s] for s in ids if s in servers] for key, ids in server_ids.items()
        },
        tokens=tokens,
        servers=servers,
        staged_certificates=staged,
    )


def _read_hashes(
    client: redis.Redis,
    key_of: Callable[[str], str],
    ids: set[str],
    build: Callable[[dict[str, str]], Any],
) -> dict[str, Any]:
    ordered = sorted(ids)
    pipe = client.pipeline(transaction=False)
    for ident in ordered:
        pipe.hgetall(key_of(ident))
    return {ident: build(data) for ident, data in zip(ordered, pipe.execute(), strict=True) if data}
