"""The two writes that carry a decision in their own transaction: staging a key (with the
key_regenerated decision it causes) and installing a token (with what the install decides).

Each reads its facts under WATCH (every key the decision's guards read is watched, so a guard
cannot move before EXEC), asks the caller's rule for the decision, and queues the decision's
script in the same MULTI/EXEC as its own writes: a key is never staged, nor a token installed,
without its decision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

import redis

from worker.errors import Conflict, NotFound, StoreUnavailable
from worker.names import name_key, user_key
from worker.records import KEY_CURRENT, KEY_RETIRED, TOKEN_SUPERSEDED, KeyPair, Server, Token, to_ms
from worker.rules.decision import Decision
from worker.rules.facts import EventFacts, InstallFacts
from worker.store import keys as k
from worker.store.event_store import EventStore
from worker.store.facts import causes_in, recorded_in, replacement_facts


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
    watch_user(pipe, user_key(token.downloaded_by))
    pipe.zadd(k.TOKENS_NEXT_CHECK, {token.id: to_ms(check_at)})
    # Apple is asked about it at the next round of checks (which puts it an interval ahead
    # when the install itself asked Apple).
    pipe.zadd(k.APPLE_NEXT_CHECK, {token.id: to_ms(check_at)})
    pipe.hset(k.server(token.server_id), "token", token.id)


def watch_user(pipe: redis.client.Pipeline, key: str) -> None:
    """Index the user among the people directories are asked about (worker/store/watched.py)."""
    domain = k.user_domain(key)
    pipe.sadd(k.watched(domain), key)
    pipe.sadd(k.WATCHED_DOMAINS, domain)


# ---- staging a key ---------------------------------------------------------------------------


def stage_key(
    client: redis.Redis,
    events: EventStore,
    server: Server,
    key: KeyPair,
    sealed_private_key: str,
    *,
    replace_staged: bool,
    decide: Callable[[EventFacts], Decision],
) -> tuple[KeyPair | None, Decision]:
    """Stage `key`, discarding one staged before only if `replace_staged`, with the decision
    `decide(facts of the server with the key staged)` in the same transaction. Returns the key
    discarded, if any, and the decision."""
    server_key = k.server(server.id)
    discarded: list[KeyPair] = []
    decided: list[Decision] = []

    def write(pipe: redis.client.Pipeline) -> None:
        discarded.clear()
        decided.clear()
        fresh = pipe.hgetall(server_key)
        if not fresh:
            raise NotFound(f"server {server.name!r} was removed meanwhile")
        previous = fresh.get("staged_key")
        if previous:
            discarded.extend(_previous_key(pipe, server, previous, replace_staged))
        decided.append(decide(_rotation_facts(pipe, fresh, key)))
        pipe.multi()
        if previous:
            pipe.delete(k.key_pair(previous))
            pipe.zrem(k.server_keys(server.id), previous)
        pipe.hset(
            k.key_pair(key.id), mapping={**key.to_hash(), k.SEALED_PRIVATE_KEY: sealed_private_key}
        )
        pipe.zadd(k.server_keys(server.id), {key.id: to_ms(key.created_at)})
        pipe.hset(server_key, "staged_key", key.id)
        events.queue_apply(pipe, decided[0])  # after the key is staged: its guards read it

    try:
        client.transaction(write, server_key)
    except redis.ResponseError:
        # EXEC ran but the decision's script failed (MULTI/EXEC does not roll back; say, the
        # script cache was flushed between loading and EXEC): the key is staged, so apply the
        # decision on its own, once; if that fails too, unstage the key, so a key is never
        # left staged without its decision.
        if not decided or client.hget(server_key, "staged_key") != key.id:
            raise
        _apply_or_unstage(client, events, decided[0], server.id, key.id)
    events.replicated("key staged")
    return (discarded[0] if discarded else None), decided[0]


def _previous_key(
    pipe: redis.client.Pipeline, server: Server, previous: str, replace_staged: bool
) -> list[KeyPair]:
    """The key staged before, which may be discarded only if `replace_staged` says so (its
    certificate may have been uploaded)."""
    data = pipe.hgetall(k.key_pair(previous))
    staged = KeyPair.from_hash(data) if data else None
    if not replace_staged:
        when = f" on {staged.created_at:%Y-%m-%d}" if staged else ""
        raise Conflict(
            f"server {server.name!r} already has a key staged{when}, waiting for "
            "its token; if its certificate was uploaded, install the token made "
            "for it; to discard it and stage another, add --replace-staged"
        )
    return [staged] if staged else []


def _rotation_facts(pipe: redis.client.Pipeline, fresh: dict[str, str], key: KeyPair) -> EventFacts:
    """The server as it stands with `key` staged, its token and that token's replacement."""
    after = replace(Server.from_hash(fresh), staged_key_id=key.id)
    facts = EventFacts(
        servers_named={name_key(after.name): [after]},
        servers={after.id: after},
        server_causes={after.id: recorded_in(fresh, k.SERVER_VERSION)},
        staged_certificates={after.id: key.cert_pem},
    )
    if after.token_id:
        # The token hash is not watched: it changes only with the server's `token` field,
        # which is. Its replacement is.
        pipe.watch(k.replacement(after.token_id))
        data = pipe.hgetall(k.token(after.token_id))
        if data:
            facts.tokens[after.token_id] = Token.from_hash(data)
            facts.replacements[after.token_id] = replacement_facts(
                pipe.hgetall(k.replacement(after.token_id))
            )
    return facts


def _apply_or_unstage(
    client: redis.Redis, events: EventStore, decision: Decision, server_id: str, key_id: str
) -> None:
    try:
        outcome = events.apply(decision).outcome
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

    client.transaction(undo, server_key)
    raise StoreUnavailable(
        f"Redis refused to record the new key's decision ({outcome}); nothing was staged: "
        "check Redis (memory, logs) and run the command again"
    )


# ---- installing a token ----------------------------------------------------------------------


def install_token(
    client: redis.Redis,
    events: EventStore,
    server: Server,
    token: Token,
    sealed_credentials: str,
    *,
    replaces: str | None,
    promote_key: str | None,
    staged_certificate: str | None,
    now: datetime,
    decide: Callable[[InstallFacts], Decision],
) -> Decision | None:
    """Store `token` as the server's current one with the decision `decide(facts)`, in one
    transaction. Returns the decision, or None when the server's token or keys moved since
    `server` was read (nothing written: read again and retry)."""
    server_key = k.server(server.id)
    user_hash = k.user(user_key(token.downloaded_by))
    watched = [server_key, user_hash] + ([k.replacement(replaces)] if replaces else [])
    decided: list[Decision | None] = []

    def write(pipe: redis.client.Pipeline) -> None:
        decided.clear()
        facts = _install_facts(pipe, server, user_hash, replaces, staged_certificate)
        decided.append(decide(facts) if facts is not None else None)
        if facts is None:
            return
        pipe.multi()
        queue_token_writes(pipe, token, sealed_credentials, check_at=now)  # scan it at once
        if facts.replaced:
            _supersede(pipe, facts.replaced, token.id, now)
        if promote_key:
            _promote(pipe, facts.server, promote_key, now)
        events.queue_apply(pipe, decided[0])

    try:
        client.transaction(write, *watched)
    except redis.ResponseError:
        # EXEC ran but the decision's script failed (say, the script cache was flushed between
        # loading and EXEC): the token is in, so apply the decision on its own, once.
        if client.hget(server_key, "token") != token.id:
            raise
        events.apply(decided[0])
    if decided[0] is not None:
        events.replicated("token installed")
    return decided[0]


def _install_facts(
    pipe: redis.client.Pipeline,
    server: Server,
    user_hash: str,
    replaces: str | None,
    staged_certificate: str | None,
) -> InstallFacts | None:
    """What the install is decided on, read under WATCH; None when the server's token or keys
    moved since `server` was read."""
    fresh = pipe.hgetall(k.server(server.id))
    if not fresh:
        raise NotFound(f"server {server.name!r} was removed meanwhile")
    seen = Server.from_hash(fresh)
    if _keys_and_token(seen) != _keys_and_token(server):
        return None
    old_data = pipe.hgetall(k.token(replaces)) if replaces else None
    old = Token.from_hash(old_data) if old_data else None
    # A cause recorded meanwhile for the user or the server changes a watched key, so the
    # transaction starts again and sees it.
    return InstallFacts(
        server=seen,
        replaced=old,
        replaced_replacement=replacement_facts(pipe.hgetall(k.replacement(old.id)) if old else {}),
        causes=causes_in(fresh) + causes_in(pipe.hgetall(user_hash)),
        staged_certificate=staged_certificate,
    )


def _keys_and_token(server: Server) -> tuple[str | None, str | None, str | None]:
    return server.token_id, server.current_key_id, server.staged_key_id


def _supersede(pipe: redis.client.Pipeline, old: Token, by: str, now: datetime) -> None:
    superseded = replace(old, status=TOKEN_SUPERSEDED, superseded_at=now, superseded_by=by)
    pipe.hset(k.token(old.id), mapping=superseded.to_hash())
    # A superseded token's credentials are dead; keeping them would only widen exposure.
    pipe.delete(k.credentials(old.id))
    pipe.hdel(k.user(user_key(old.downloaded_by)), k.user_token_field(old.id))
    pipe.hincrby(k.user(user_key(old.downloaded_by)), k.USER_VERSION, 1)
    pipe.zrem(k.TOKENS_NEXT_CHECK, old.id)
    pipe.zrem(k.APPLE_NEXT_CHECK, old.id)


def _promote(pipe: redis.client.Pipeline, server: Server, key_id: str, now: datetime) -> None:
    if server.current_key_id:
        pipe.hset(
            k.key_pair(server.current_key_id),
            mapping={"state": KEY_RETIRED, "retired_at": to_ms(now)},
        )
        # A retired key decrypts nothing Apple will send again; drop it.
        pipe.hdel(k.key_pair(server.current_key_id), k.SEALED_PRIVATE_KEY)
    pipe.hset(k.key_pair(key_id), mapping={"state": KEY_CURRENT, "promoted_at": to_ms(now)})
    pipe.hset(k.server(server.id), mapping={"current_key": key_id, "staged_key": ""})
