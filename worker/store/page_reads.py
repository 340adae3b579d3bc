"""What the web pages (worker/ui/) read of the whole estate, fast enough for 10,000 servers:
the fields a page shows of many hashes in one script call per READ_BATCH keys
(lua/hmget_many.lua) rather than one command per hash, and each record parsed once for as long
as its stored fields stay the same. Every page view reads Redis afresh; nothing sealed is read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
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
from worker.store.policies import org_scope

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


@dataclass(slots=True)
class EstateEntry:
    """One server as the estate pages show it: its current token, that token's open
    replacement, and the rotation policy in force."""

    server: Server
    token: TokenSummary | None
    replacement: Replacement | None
    policy: Policy


#: What lua/hmget_many.lua joins a hash's values with.
SEPARATOR = "\x1f"


class _Parsed(Generic[R]):
    """Records parsed from their stored fields, kept for as long as those fields read the
    same: a page view parses again only what changed. Holds only what the latest read saw."""

    def __init__(
        self,
        fields: Sequence[str],
        parse: Callable[[dict[str, str]], R | None],
        reread: Callable[[str, Sequence[str]], list[str | None]],
    ):
        self._fields = fields
        self._parse = parse
        self._reread = reread
        self._seen: dict[str, R | None] = {}

    def __call__(self, keys: list[str], rows: list[str]) -> list[R]:
        """The records of `keys` from their `rows` (as lua/hmget_many.lua joins them); a hash
        gone meanwhile is left out."""
        seen, kept, found = self._seen, {}, []
        for key, row in zip(keys, rows, strict=True):
            if row in seen:
                record = seen[row]
            else:
                values: list[str | None] = list(row.split(SEPARATOR))
                if len(values) != len(self._fields):  # a value holds the separator
                    values = self._reread(key, self._fields)
                data = {f: v for f, v in zip(self._fields, values, strict=True) if v}
                record = self._parse(data) if data else None
            kept[row] = record
            if record is not None:
                found.append(record)
        self._seen = kept
        return found


class PageReads:
    def __init__(self, client: redis.Redis):
        self._redis = client
        script = resources.files("worker.store").joinpath("lua/hmget_many.lua").read_text()
        self._hmget_many = client.register_script(script)
        self._servers = _Parsed(SERVER_FIELDS, Server.from_hash, self._hmget)
        self._tokens = _Parsed(TOKEN_FIELDS, TokenSummary.from_hash, self._hmget)
        self._replacements = _Parsed(REPLACEMENT_FIELDS, _open_replacement, self._hmget)

    def estate(self) -> list[EstateEntry]:
        """Every server with its current token, the token's open replacement and its policy."""
        # HSCAN, not HVALS: a very large estate is read in slices, not in one blocking command.
        ids = sorted({v for _, v in self._redis.hscan_iter(k.SERVERS, count=READ_BATCH)})
        servers = self._servers(*self._read([k.server(i) for i in ids], SERVER_FIELDS))
        held = [k.token(s.token_id) for s in servers if s.token_id]
        tokens = {t.id: t for t in self._tokens(*self._read(held, TOKEN_FIELDS))}
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
        read = self._read([k.replacement(i) for i in ids], REPLACEMENT_FIELDS)
        return {r.token_id: r for r in self._replacements(*read)}

    def _policies(self, servers: list[Server]) -> dict[str, Policy]:
        """The policy in force for each server: the layers read once, the policy of the
        servers without a layer of their own worked out once per organization."""
        scopes = {org: org_scope(org) for org in {s.org for s in servers if s.org}}
        wanted = [*sorted(set(scopes.values())), policy.GLOBAL]
        pipe = self._redis.pipeline(transaction=False)
        for scope in wanted:
            pipe.hgetall(k.policy_holder(scope))
        answers = pipe.execute()
        layers = {s: PolicyLayer.from_fields(d) for s, d in zip(wanted, answers, strict=True)}
        default = layers[policy.GLOBAL]

        def in_force(own: PolicyLayer, org: str) -> Policy:
            org_layer = layers.get(scopes[org], EMPTY_LAYER) if org else EMPTY_LAYER
            return policy.effective(own, org_layer, default)

        by_org: dict[str, Policy] = {}
        found = {}
        for server in servers:
            if not server.policy.is_empty:
                found[server.id] = in_force(server.policy, server.org)
                continue
            if server.org not in by_org:
                by_org[server.org] = in_force(EMPTY_LAYER, server.org)
            found[server.id] = by_org[server.org]
        return found

    def _read(self, keys: list[str], fields: Sequence[str]) -> tuple[list[str], list[str]]:
        """`keys`, and `fields` of each, joined (lua/hmget_many.lua), in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for batch in _batches(keys):
            self._hmget_many(keys=batch, args=list(fields), client=pipe)
        return keys, [row for rows in pipe.execute() for row in rows]

    def _hmget(self, key: str, fields: Sequence[str]) -> list[str | None]:
        return self._redis.hmget(key, list(fields))


def _open_replacement(data: dict[str, str]) -> Replacement | None:
    """A replacement still open (None: resolved meanwhile)."""
    return replacement_from_hash(data) if data.get("status") == "open" else None


def _batches(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), READ_BATCH):
        yield items[start : start + READ_BATCH]
