"""Reading the facts decisions are made on from the in-memory state: the same facts, read in
the same order, as store/facts.py and transactions.py read them from Redis."""

from __future__ import annotations

from worker.names import name_key
from worker.records import KeyPair, Server
from worker.rules.facts import EventFacts
from worker.store.memory_policies import MemoryPolicies
from worker.store.memory_state import MemoryState


def event_facts(
    state: MemoryState, user_keys: set[str], name_keys: set[str], staged_for_names: set[str]
) -> EventFacts:
    """What a batch of events is decided on: its users, the servers bearing its names, their
    tokens, those tokens' replacements, and the staged certificates of `staged_for_names`.
    Like the three round trips of read_event_facts: the users' tokens and the named servers;
    then the servers of those tokens and the tokens of those servers."""
    facts = EventFacts()
    token_ids: dict[str, list[str]] = {}
    for key in sorted(user_keys):
        row = state.user(key)
        token_ids[key] = sorted(row.token_ids) if row else []
        facts.users[key] = state.recorded_user(key)
    server_ids = {
        key: sorted(s.id for s in state.servers.values() if name_key(s.name) == key)
        for key in sorted(name_keys)
    }
    _read_into(state, facts, {t for ids in token_ids.values() for t in ids})
    _read_servers(state, facts, {s for ids in server_ids.values() for s in ids})
    staged = {
        s.id: s.staged_key_id
        for s in facts.servers.values()
        if s.staged_key_id and name_key(s.name) in staged_for_names
    }
    named_tokens = {s.token_id for s in facts.servers.values() if s.token_id}
    token_servers = {t.server_id for t in facts.tokens.values()}
    _read_into(state, facts, named_tokens - facts.tokens.keys())
    _read_servers(state, facts, token_servers - facts.servers.keys())
    for server_id, key_id in staged.items():
        pair = state.keys.get(key_id)
        if pair is not None:
            facts.staged_certificates[server_id] = pair.cert_pem
    facts.link(token_ids, server_ids)
    if user_keys:
        _read_policies(state, facts)
    return facts


def _read_policies(state: MemoryState, facts: EventFacts) -> None:
    """As read_policies: the servers' policies, and the staged certificates of rotating ones."""
    facts.policies = MemoryPolicies(state).effective_for(list(facts.servers.values()))
    for server in facts.servers.values():
        pair = state.keys.get(server.staged_key_id or "")
        if pair is not None and facts.policies[server.id].rotates_key:
            facts.staged_certificates.setdefault(server.id, pair.cert_pem)


def _read_into(state: MemoryState, facts: EventFacts, token_ids: set[str]) -> None:
    for token_id in sorted(token_ids):
        token = state.tokens.get(token_id)
        if token is not None:
            facts.tokens[token_id] = token
            facts.replacements[token_id] = state.replacement_facts(token_id)


def _read_servers(state: MemoryState, facts: EventFacts, server_ids: set[str]) -> None:
    for server_id in sorted(server_ids):
        server = state.servers.get(server_id)
        if server is not None:
            facts.servers[server_id] = server
            facts.server_causes[server_id] = state.recorded_server(server_id)


def rotation_facts(state: MemoryState, after: Server, key: KeyPair) -> EventFacts:
    """The server as it stands with `key` staged, its token and that token's replacement
    (as transactions._rotation_facts)."""
    facts = EventFacts(
        servers_named={name_key(after.name): [after]},
        servers={after.id: after},
        server_causes={after.id: state.recorded_server(after.id)},
        staged_certificates={after.id: key.cert_pem},
    )
    token = state.tokens.get(after.token_id) if after.token_id else None
    if token is not None:
        facts.tokens[token.id] = token
        facts.replacements[token.id] = state.replacement_facts(token.id)
    return facts
