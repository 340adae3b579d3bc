"""The one place that talks to Redis about servers, key pairs and tokens.

Writes that belong together go in one MULTI/EXEC, guarded by WATCH where they depend on what was
read; a write that lost a race raises ConcurrentChange and the caller decides again on fresh state.
Decisions are applied by the event store (decisions.py); the two writes that carry one in their
own transaction, staging a key and installing a token, are in transactions.py.
Secrets are sealed here, on the way in, and opened here, on demand, with the Redis key and field
as the sealing context.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

import redis

from worker.crypto.keys import KeyMaterial, load_sealed_key_material
from worker.crypto.payload import unpack_credentials
from worker.crypto.sealing import Keyring
from worker.errors import ConcurrentChange, DuplicateServer, NotFound
from worker.names import name_key, user_key
from worker.records import KEY_STAGED, KeyPair, Server, Token, to_ms
from worker.rules.decision import Decision
from worker.rules.facts import EventFacts, InstallFacts, ScanFacts
from worker.store import keys as k
from worker.store import transactions
from worker.store.apple_checks import RedisAppleChecks
from worker.store.event_store import EventStore
from worker.store.facts import read_event_facts, read_scan_facts, token_ids_in
from worker.store.policies import RedisPolicies
from worker.store.protocol import ResealReport
from worker.store.watched import RedisWatched

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


def _context(redis_key: str, field: str | None) -> str:
    return redis_key if field is None else f"{redis_key}#{field}"


def _credentials_context(token_id: str) -> str:
    return _context(k.credentials(token_id), None)


class RedisStore:
    def __init__(
        self, client: redis.Redis, keyring: Callable[[], Keyring], events: EventStore | None = None
    ):
        self._redis = client
        self._keyring = keyring
        self.events = events or EventStore(client)
        self.apple = RedisAppleChecks(client)
        self.watched = RedisWatched(client)
        self.policies = RedisPolicies(client)
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
        sealed = self.seal_private_key(key.id, material)

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
        removed_tokens: list[Token] = []

        def write(pipe: redis.client.Pipeline) -> None:
            # Read the ids under WATCH: a key staged or a token installed meanwhile restarts
            # the transaction instead of being left behind.
            key_ids = pipe.zrange(k.server_keys(server.id), 0, -1)
            token_ids = pipe.zrange(k.server_tokens(server.id), 0, -1)
            tokens = [
                Token.from_hash(d) for d in (pipe.hgetall(k.token(i)) for i in token_ids) if d
            ]
            removed_tokens[:] = tokens
            pipe.multi()
            pipe.hdel(k.SERVERS, qualifier)
            pipe.srem(k.servers_named(name_key(server.name)), server.id)
            for token in tokens:
                pipe.hdel(k.user(user_key(token.downloaded_by)), k.user_token_field(token.id))
                pipe.hincrby(k.user(user_key(token.downloaded_by)), k.USER_VERSION, 1)
                pipe.delete(k.credentials(token.id))
                pipe.zrem(k.TOKENS_NEXT_CHECK, token.id)
                pipe.zrem(k.APPLE_NEXT_CHECK, token.id)
                pipe.zrem(k.REPLACEMENTS_OPEN, token.id)
                pipe.zrem(k.REPLACEMENTS, token.id)
                pipe.delete(k.replacement(token.id))
            pipe.delete(
                *watched, *(k.key_pair(i) for i in key_ids), *(k.token(i) for i in token_ids)
            )

        self._redis.transaction(write, *watched)
        # Its downloaders holding no other current token are asked about no more.
        self.watched.forget_idle({user_key(t.downloaded_by) for t in removed_tokens})

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
        decide: Callable[[EventFacts], Decision],
    ) -> tuple[KeyPair | None, Decision]:
        """Stage a new key pair, discarding one staged before only if `replace_staged`.

        `decide(facts of the server with the key staged)` gives the decision the new key causes
        (the key_regenerated event: the token to replace, the notice with the certificate to
        upload), applied in the same transaction, so a key is never staged without it. Returns
        the key discarded, if any, and the decision.
        """
        sealed = self.seal_private_key(key.id, material)
        return transactions.stage_key(
            self._redis,
            self.events,
            server,
            key,
            sealed,
            replace_staged=replace_staged,
            decide=decide,
        )

    def seal_private_key(self, key_id: str, material: KeyMaterial) -> str:
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

    def bring_check_forward(self, token_id: str, at: datetime) -> None:
        """Check the token no later than `at` (only if it is still checked at all)."""
        self._redis.zadd(k.TOKENS_NEXT_CHECK, {token_id: to_ms(at)}, xx=True, lt=True)

    def scheduler_thresholds(self) -> str | None:
        return self._redis.get(k.SCHEDULER_THRESHOLDS)

    def set_scheduler_thresholds(self, text: str) -> None:
        self._redis.set(k.SCHEDULER_THRESHOLDS, text)

    def servers_by_id(self, ids: set[str]) -> dict[str, Server]:
        return {s.id: s for s in self._servers(sorted(ids)) if s is not None}

    def tokens_by_id(self, ids: set[str]) -> dict[str, Token]:
        """Many tokens in one round trip."""
        ordered = sorted(ids)
        return {t.id: t for t in self._tokens(ordered) if t is not None}

    def event_facts(
        self, user_keys: set[str], name_keys: set[str], staged_for_names: set[str]
    ) -> EventFacts:
        """What a batch of events is decided on, in three round trips (see facts.py)."""
        return read_event_facts(self._redis, user_keys, name_keys, staged_for_names)

    def scan_facts(self, tokens: list[Token]) -> list[ScanFacts]:
        """What the expiry scan decides due tokens on, in one round trip."""
        return read_scan_facts(self._redis, tokens)

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
        decide: Callable[[InstallFacts], Decision],
        staged_certificate: str | None = None,
    ) -> Decision:
        """Store a token as the server's current one, superseding `replaces` and, when the
        token was encrypted to the staged key, promoting that key and retiring the old one.

        `decide(facts)` gives the decision applied in the same transaction: closing the old
        token's replacement, and opening one for the new token when a cause already seen
        dooms it. Returns the decision applied.
        Raises ConcurrentChange when the server's token or keys moved since they were read.
        """
        decision = transactions.install_token(
            self._redis,
            self.events,
            server,
            token,
            self.seal_credentials(token.id, credentials_json),
            replaces=replaces,
            promote_key=promote_key,
            staged_certificate=staged_certificate,
            now=now,
            decide=decide,
        )
        if decision is None:
            raise ConcurrentChange("the server changed while the token was being installed")
        return decision

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

    def check_writable(self) -> None:
        """Redis answers and takes writes (`/readyz`): a short-lived write, not PING, since a
        client left on an old master that came back as a replica after a failover still gets
        PONG."""
        self._redis.set(k.READY_PROBE, "1", px=60_000)

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
