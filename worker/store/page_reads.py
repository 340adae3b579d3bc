"""What the web pages (worker/ui/) read of the whole estate, fast enough for 10,000 servers:
the fields a page shows of many hashes in one script call per READ_BATCH keys
(lua/hmget_many.lua) rather than one command per hash, and each record parsed once for as long
as its stored fields stay the same. Every page view reads Redis afresh; nothing sealed is read.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Generic, TypeVar

import redis

from worker.records import NEVER_ASKED, TOKEN_CURRENT, AppleState, Replacement, Server, from_ms
from worker.rules import policy
from worker.rules.policy import EMPTY_LAYER, Policy, PolicyLayer
from worker.store import keys as k
from worker.store.facts import replacement_from_hash
from worker.store.policies import org_scope, queue_policy_reads

#: Hashes read per script call (each call holds Redis for about a millisecond).
READ_BATCH = 1_000

#: The fields read of each record: all a page shows, never a sealed one.
SERVER_FIELDS = (
    "id", "name", "org", "created_at", "current_key", "staged_key", "token", "apple_name",
    "apple_org", "terms_since", *policy.FIELDS,
)  # fmt: skip
TOKEN_FIELDS = (
    "id", "expires_at", "downloaded_by", "status", "a_verdict", "a_confirmed", "a_rejected"
)  # fmt: skip
REPLACEMENT_FIELDS = (
    "token", "server", "status", "opened_at", "resolved_at", "resolved_by", "reasons", "omitted",
)  # fmt: skip

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class TokenSummary:
    """A current token as the estate pages show it (what worker.rules.status reads of a
    token): fewer fields than a Token, so 10,000 of them read quickly."""

    id: str
    expires_at: datetime
    downloaded_by: str
    apple: AppleState

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> TokenSummary | None:
        """None for a token no longer current (superseded meanwhile)."""
        if data.get("status", TOKEN_CURRENT) != TOKEN_CURRENT:
            return None
        return cls(
            id=data["id"],
            expires_at=from_ms(data["expires_at"]),
            downloaded_by=data.get("downloaded_by", ""),
            apple=AppleState.from_hash(data) if "a_verdict" in data else NEVER_ASKED,
        )


@dataclass(frozen=True)
class EstateEntry:
    """One server as the estate pages show it: its current token, that token's open
    replacement, and the rotation policy in force."""

    server: Server
    token: TokenSummary | None
    replacement: Replacement | None
    policy: Policy


class _Parsed(Generic[R]):
    """Records parsed from their stored fields, kept for as long as those fields read the same
    (a page view re-parses only what changed); holds only what the latest read saw."""

    def __init__(self, fields: Sequence[str], parse: Callable[[dict[str, str]], R | None]):
        self._fields = fields
        self._parse = parse
        self._seen: dict[Hashable, R | None] = {}

    def __call__(self, rows: list[list[str | None]]) -> list[R]:
        seen, kept, found = self._seen, {}, []
        for row in rows:
            raw = tuple(row)
            if raw[0] is None:
                continue  # removed meanwhile
            if raw in seen:
                record = seen[raw]
            else:
                data = {f: v for f, v in zip(self._fields, raw, strict=True) if v is not None}
                record = self._parse(data)
            kept[raw] = record
            if record is not None:
                found.append(record)
        self._seen = kept
        return found


class PageReads:
    def __init__(self, client: redis.Redis):
        self._redis = client
        script = resources.files("worker.store").joinpath("lua/hmget_many.lua").read_text()
        self._hmget_many = client.register_script(script)
        self._servers = _Parsed(SERVER_FIELDS, Server.from_hash)
        self._tokens = _Parsed(TOKEN_FIELDS, TokenSummary.from_hash)

    def estate(self) -> list[EstateEntry]:
        """Every server with its current token, the token's open replacement and its policy."""
        # HSCAN, not HVALS: a very large estate is read in slices, not in one blocking command.
        ids = sorted({v for _, v in self._redis.hscan_iter(k.SERVERS, count=READ_BATCH)})
        servers = self._servers(self._read([k.server(i) for i in ids], SERVER_FIELDS))
        held = [s.token_id for s in servers if s.token_id]
        tokens = {
            t.id: t for t in self._tokens(self._read([k.token(i) for i in held], TOKEN_FIELDS))
        }
        replacements = self._open_replacements(set(tokens))
        policies = self._policies(servers)
        entries = []
        for server in servers:
            token = tokens.get(server.token_id or "")
            replacement = replacements.get(token.id) if token else None
            entries.append(EstateEntry(server, token, replacement, policies[server.id]))
        return entries

    def _open_replacements(self, current: set[str]) -> dict[str, Replacement]:
        ids = [i for i in self._redis.zrange(k.REPLACEMENTS_OPEN, 0, -1) if i in current]
        rows = self._read([k.replacement(i) for i in ids], REPLACEMENT_FIELDS)
        found = {}
        for row in rows:
            data = {f: v for f, v in zip(REPLACEMENT_FIELDS, row, strict=True) if v is not None}
            if data.get("status") == "open":
                found[data["token"]] = replacement_from_hash(data)
        return found

    def _policies(self, servers: list[Server]) -> dict[str, Policy]:
        """The policy in force for each server: the layers read once, and each combination
        of a server's own layer and its organization's worked out once."""
        pipe = self._redis.pipeline(transaction=False)
        scopes = queue_policy_reads(pipe, servers)
        answers = pipe.execute()
        layers = {s: PolicyLayer.from_fields(d) for s, d in zip(scopes, answers, strict=True)}
        default = layers[policy.GLOBAL]

        @functools.cache
        def in_force(own: PolicyLayer, org: str) -> Policy:
            org_layer = layers.get(org_scope(org), EMPTY_LAYER) if org else EMPTY_LAYER
            return policy.effective(own, org_layer, default)

        return {s.id: in_force(s.policy, s.org) for s in servers}

    def _read(self, keys: list[str], fields: Sequence[str]) -> list[list[str | None]]:
        """`fields` of each of `keys`, in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for batch in _batches(keys):
            self._hmget_many(keys=batch, args=list(fields), client=pipe)
        return [row for rows in pipe.execute() for row in rows]


def _batches(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), READ_BATCH):
        yield items[start : start + READ_BATCH]
