"""Reading the facts decisions are made on (worker/rules/facts.py), in pipelined round trips:
a batch of events in three, a batch of due tokens in one."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import redis

from worker.names import name_key
from worker.records import Replacement, Server, Token, from_ms, to_ms
from worker.rules.facts import EventFacts, Recorded, ReplacementFacts, ScanFacts
from worker.rules.policy import Policy
from worker.rules.replacement import Cause, load_reasons
from worker.store import keys as k
from worker.store.policies import policies_from, queue_policy_reads
from worker.timefmt import format_rfc3339


def cause_to_json(cause: Cause) -> dict[str, Any]:
    return {
        "type": cause.type,
        "id": cause.id,
        "source": cause.source,
        "time": format_rfc3339(cause.time),
        "at": to_ms(cause.time),
    }


def cause_from_json(value: str) -> Cause:
    data = json.loads(value)
    return Cause(type=data["type"], id=data["id"], source=data["source"], time=from_ms(data["at"]))


def causes_in(data: dict[str, str]) -> list[Cause]:
    return [
        cause_from_json(value)
        for name, value in data.items()
        if name.startswith(k.CAUSE_FIELD_PREFIX)
    ]


def recorded_in(data: dict[str, str], version_field: str) -> Recorded:
    """The causes a user or server hash records, at its version."""
    return Recorded(
        version=data.get(version_field, ""), causes={c.type: c for c in causes_in(data)}
    )


def replacement_from_hash(data: dict[str, str]) -> Replacement:
    """A replacement as stored, its reasons merged if they were recorded one per event."""
    stored = Replacement.from_hash(data)
    reasons, omitted = load_reasons(stored.reasons, stored.omitted)
    return replace(stored, reasons=reasons, omitted=omitted)


def replacement_facts(data: dict[str, str]) -> ReplacementFacts:
    """A token's replacement hash as a decision reads it (empty: it never had one)."""
    if not data:
        return ReplacementFacts()
    stored = replacement_from_hash(data)
    return ReplacementFacts(
        status=stored.status,
        opened_at=stored.opened_at,
        reasons=stored.reasons,
        omitted=stored.omitted,
        certificate=data.get("certificate") or None,
        version=data.get(k.REPLACEMENT_VERSION, ""),
    )


def token_ids_in(user_hash: dict[str, str]) -> list[str]:
    """The current token ids listed in a user hash."""
    return sorted(
        f[len(k.USER_TOKEN_PREFIX) :] for f in user_hash if f.startswith(k.USER_TOKEN_PREFIX)
    )


def read_event_facts(
    client: redis.Redis, user_keys: set[str], name_keys: set[str], staged_for_names: set[str]
) -> EventFacts:
    """What a batch of events is decided on: its users, the servers bearing its names, their
    tokens, those tokens' replacements, and the staged certificates of `staged_for_names`."""
    users, names = sorted(user_keys), sorted(name_keys)
    facts = EventFacts()
    # 1. Each user's record (version, token ids, causes; read before the tokens: an install in
    #    between fails the version guard, and the decision is made again), and each name's
    #    servers.
    pipe = client.pipeline(transaction=False)
    for key in users:
        pipe.hgetall(k.user(key))
    for key in names:
        pipe.smembers(k.servers_named(key))
    answers = pipe.execute()
    token_ids = {key: token_ids_in(answers[i]) for i, key in enumerate(users)}
    facts.users = {key: recorded_in(answers[i], k.USER_VERSION) for i, key in enumerate(users)}
    server_ids = {key: sorted(answers[len(users) + i]) for i, key in enumerate(names)}
    # 2. Those tokens with their replacements, and those servers.
    wanted_tokens = {t for ids in token_ids.values() for t in ids}
    wanted_servers = {s for ids in server_ids.values() for s in ids}
    _read_into(client, facts, wanted_tokens, wanted_servers, {})
    # 3. The servers of those tokens, the tokens of those servers, and the staged keys wanted.
    staged = {
        s.id: s.staged_key_id
        for s in facts.servers.values()
        if s.staged_key_id and name_key(s.name) in staged_for_names
    }
    _read_into(
        client,
        facts,
        {s.token_id for s in facts.servers.values() if s.token_id} - facts.tokens.keys(),
        {t.server_id for t in facts.tokens.values()} - facts.servers.keys(),
        staged,
    )
    facts.link(token_ids, server_ids)
    if user_keys:
        read_policies(client, facts)
    return facts


def read_policies(client: redis.Redis, facts: EventFacts) -> None:
    """4. The servers' rotation policies, and then the staged certificates of the servers whose
    policy rotates keys (a password change or departure rotates their key too)."""
    servers = list(facts.servers.values())
    if not servers:
        return
    pipe = client.pipeline(transaction=False)
    scopes = queue_policy_reads(pipe, servers)
    facts.policies = policies_from(servers, scopes, pipe.execute())
    staged = {
        s.id: s.staged_key_id
        for s in servers
        if s.staged_key_id
        and facts.policies[s.id].rotates_key
        and s.id not in facts.staged_certificates
    }
    if staged:
        _read_into(client, facts, set(), set(), staged)


def _read_into(
    client: redis.Redis,
    facts: EventFacts,
    token_ids: set[str],
    server_ids: set[str],
    staged_keys: dict[str, str],
) -> None:
    """One round trip: tokens with their replacements, servers, staged certificates."""
    tokens, servers = sorted(token_ids), sorted(server_ids)
    pipe = client.pipeline(transaction=False)
    for token_id in tokens:
        pipe.hgetall(k.token(token_id))
        pipe.hgetall(k.replacement(token_id))
    for server_id in servers:
        pipe.hgetall(k.server(server_id))
    for key_id in staged_keys.values():
        pipe.hget(k.key_pair(key_id), "cert")
    answers = iter(pipe.execute())
    for token_id in tokens:
        data, replacement = next(answers), next(answers)
        if data:
            facts.tokens[token_id] = Token.from_hash(data)
            facts.replacements[token_id] = replacement_facts(replacement)
    for server_id in servers:
        data = next(answers)
        if data:
            facts.servers[server_id] = Server.from_hash(data)
            facts.server_causes[server_id] = recorded_in(data, k.SERVER_VERSION)
    for server_id, cert in zip(staged_keys, answers, strict=True):
        if cert:
            facts.staged_certificates[server_id] = cert


def read_scan_facts(client: redis.Redis, tokens: list[Token]) -> list[ScanFacts]:
    """What the expiry scan decides due tokens on: their servers, replacements and rotation
    policies, in two round trips. Most due tokens never had a replacement: the index (which
    holds every replacement hash, opened and resolved) says which did, and only those are
    read."""
    if not tokens:
        return []
    server_ids = sorted({t.server_id for t in tokens})
    pipe = client.pipeline(transaction=False)
    for server_id in server_ids:
        pipe.hgetall(k.server(server_id))
    pipe.zmscore(k.REPLACEMENTS, [t.id for t in tokens])
    *answers, scores = pipe.execute()
    servers = {i: Server.from_hash(d) for i, d in zip(server_ids, answers, strict=True) if d}
    had = [t.id for t, score in zip(tokens, scores, strict=True) if score is not None]
    staged = {s.id: s.staged_key_id for s in servers.values() if s.staged_key_id}
    pipe = client.pipeline(transaction=False)
    for token_id in had:
        pipe.hgetall(k.replacement(token_id))
    for key_id in staged.values():
        pipe.hget(k.key_pair(key_id), "cert")
    scopes = queue_policy_reads(pipe, servers.values())
    answers = pipe.execute()
    replacements = dict(zip(had, answers, strict=False))
    certificates = dict(zip(staged, answers[len(had) :], strict=False))
    policies = policies_from(servers.values(), scopes, answers[len(had) + len(staged) :])
    return [
        scan_facts_of(
            token,
            servers.get(token.server_id),
            replacements.get(token.id, {}),
            policies,
            certificates,
        )
        for token in tokens
    ]


def scan_facts_of(
    token: Token,
    server: Server | None,
    stored: dict[str, str],
    policies: dict[str, Policy],
    certificates: dict[str, str | None],
    *,
    replacement: ReplacementFacts | None = None,
) -> ScanFacts:
    """One token's scan facts (its replacement as stored, or as read already)."""
    read = replacement if replacement is not None else replacement_facts(stored)
    if server is None:
        return ScanFacts(token, None, read)
    policy = policies[server.id]
    return ScanFacts(
        token,
        server,
        read,
        policy=policy,
        staged_certificate=certificates.get(server.id) if policy.rotates_key else None,
    )
