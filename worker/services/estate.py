"""Servers, tokens, replacements, the audit trail and sealed secrets, as the CLI reads them
(registry.py holds what changes them). Listings read in a fixed number of round trips, however
many rows: every server at once (store.listings), then their tokens and replacements each in
one pipelined read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from worker.records import KeyPair, Replacement, Server, Token
from worker.registry import resolve_server
from worker.store.protocol import ResealReport, ServerListing, Store


def check_reachable(store: Store) -> None:
    """Redis answers (else a redis.ConnectionError, which the CLI reports with exit code 3)."""
    store.ping()


def servers(listings: ServerListing) -> list[Server]:
    return listings.servers()


def keys_and_token(store: Store, server: Server) -> tuple[list[KeyPair], Token | None]:
    """A server's key pairs, oldest first, and its current token."""
    token = store.get_token(server.token_id) if server.token_id else None
    return store.keys_of(server.id), token


def remove_server(store: Store, server: Server) -> None:
    store.remove_server(server)


def tokens(
    store: Store, listings: ServerListing, *, include_superseded: bool
) -> tuple[list[Token], dict[str, Server]]:
    """The current tokens of every server (with superseded ones too if asked), and the servers
    by id."""
    every_server = listings.servers()
    if include_superseded:
        found = [t for s in every_server for t in store.tokens_of_server(s.id)]
    else:
        found = list(store.tokens_by_id({s.token_id for s in every_server if s.token_id}).values())
    return found, {s.id: s for s in every_server}


def current_tokens(
    store: Store, listings: ServerListing, names: tuple[str, ...], org: str | None
) -> tuple[list[Token], dict[str, Server]]:
    """The current tokens of the servers named (of every server when none is), and those
    servers by id. An unknown name is NotFound."""
    if names:
        chosen = {s.id: s for s in (resolve_server(store, n, org) for n in names)}
    else:
        chosen = {s.id: s for s in listings.servers()}
    found = store.tokens_by_id({s.token_id for s in chosen.values() if s.token_id})
    tokens = sorted(found.values(), key=lambda t: (chosen[t.server_id].name.casefold(), t.id))
    return tokens, chosen


def as_stored(store: Store, tokens: list[Token]) -> list[tuple[Token, Server | None]]:
    """Each token as stored now (after a check wrote to it), with its server."""
    fresh = store.tokens_by_id({t.id for t in tokens})
    current = [fresh.get(t.id, t) for t in tokens]
    servers = store.servers_by_id({t.server_id for t in current})
    return [(t, servers.get(t.server_id)) for t in current]


def current_state(
    store: Store, listings: ServerListing
) -> list[tuple[Server, Token | None, Replacement | None]]:
    """Every server with its current token and that token's open replacement."""
    every_server = listings.servers()
    current = store.tokens_by_id({s.token_id for s in every_server if s.token_id})
    replacements = store.events.replacements_by_token(set(current))
    rows = []
    for server in every_server:
        token = current.get(server.token_id) if server.token_id else None
        replacement = replacements.get(token.id) if token else None
        if replacement is not None and replacement.status != "open":
            replacement = None
        rows.append((server, token, replacement))
    return rows


def replacements(
    store: Store, *, include_resolved: bool
) -> list[tuple[Replacement, Server | None, Token | None]]:
    """Open replacements (resolved ones too if asked), oldest first, each with its server and
    token."""
    found = store.events.replacements(include_resolved=include_resolved)
    by_server = store.servers_by_id({r.server_id for r in found})
    by_token = store.tokens_by_id({r.token_id for r in found})
    return [(r, by_server.get(r.server_id), by_token.get(r.token_id)) for r in found]


def audit(store: Store, limit: int) -> list[dict[str, Any]]:
    return store.events.audit(limit)


def dead_letters(store: Store, limit: int) -> list[dict[str, Any]]:
    return store.events.dead_letters(limit)


def reseal_all(store: Store) -> ResealReport:
    """Every stored secret sealed again under the primary master key."""
    return store.reseal_all()


def sealed_key_ids(store: Store) -> Iterator[str]:
    """The master key id of each stored sealed value."""
    for _, _, sealed in store.sealed_values():
        yield sealed.split(":", 2)[1]
