"""The people directories are asked about: every user who downloaded a current token, indexed
by Managed Apple Account domain (k.watched), so a source reads only its own domains' users and
a round costs one read per watched person, not per token or per key in Redis.

Install adds the user (transactions.watch_user); nothing removes them on the spot when their
last token is superseded: a round that meets a user without a current token takes them out
(lua/forget_unwatched.lua, atomic with the check).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from importlib import resources

import redis

from events import catalog
from worker.names import user_key
from worker.records import TOKEN_CURRENT, from_ms
from worker.rules.directory import WatchedUser
from worker.store import keys as k
from worker.store.facts import causes_in, token_ids_in

FORGET_UNWATCHED = resources.files("worker.store").joinpath("lua/forget_unwatched.lua").read_text()

#: Tokens read per round trip when the index is filled with the tokens installed before it.
_BACKFILL_BATCH = 1000

_TOKEN_FIELDS = ("downloaded_at", "downloaded_by", "status")


class RedisWatched:
    def __init__(self, client: redis.Redis):
        self._redis = client
        self._forget = client.register_script(FORGET_UNWATCHED)

    def users(self, domains: Sequence[str] | None, batch: int = 200) -> Iterator[list[WatchedUser]]:
        """The watched users of `domains` (None: of every domain), `batch` at a time (a batch
        spans domains: most hold a few people)."""
        names = sorted(domains) if domains is not None else sorted(self.domains())
        pending: list[WatchedUser] = []
        for domain in names:
            for found in self._domain_users(domain, batch):
                pending += found
                while len(pending) >= batch:
                    yield pending[:batch]
                    pending = pending[batch:]
        if pending:
            yield pending

    def _domain_users(self, domain: str, batch: int) -> Iterator[list[WatchedUser]]:
        seen: set[str] = set()  # SSCAN may return a member twice while the set rehashes
        cursor = 0
        while True:
            cursor, members = self._redis.sscan(k.watched(domain), cursor, count=batch)
            fresh = sorted(set(members) - seen)
            seen.update(fresh)
            if fresh and (found := self._read(domain, fresh)):
                yield found
            if cursor == 0:
                return

    def domains(self) -> set[str]:
        return self._redis.smembers(k.WATCHED_DOMAINS)

    def count(self, domains: Sequence[str] | None) -> int:
        names = sorted(domains) if domains is not None else sorted(self.domains())
        pipe = self._redis.pipeline(transaction=False)
        for domain in names:
            pipe.scard(k.watched(domain))
        return sum(pipe.execute())

    def _read(self, domain: str, keys: list[str]) -> list[WatchedUser]:
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(k.user(key))
        hashes = dict(zip(keys, pipe.execute(), strict=True))
        token_ids = {key: token_ids_in(data) for key, data in hashes.items()}
        pipe = self._redis.pipeline(transaction=False)
        wanted = sorted({t for ids in token_ids.values() for t in ids})
        for token_id in wanted:
            pipe.hmget(k.token(token_id), _TOKEN_FIELDS)
        tokens = dict(zip(wanted, pipe.execute(), strict=True))
        users, idle = [], []
        for key in keys:
            current = [tokens[t] for t in token_ids[key] if tokens[t][2] == TOKEN_CURRENT]
            if not current:
                idle.append(key)
                continue
            users.append(_watched(key, current, hashes[key]))
        if idle:
            self.forget_idle(set(idle))
        return users

    def forget_idle(self, keys: set[str]) -> None:
        """Take out those of `keys` who hold no current token any more (a server removed)."""
        by_domain: dict[str, list[str]] = {}
        for key in sorted(keys):
            by_domain.setdefault(k.user_domain(key), []).append(key)
        for domain, members in by_domain.items():
            self._forget(keys=[k.watched(domain), k.WATCHED_DOMAINS, *map(k.user, members)],
                         args=[domain, *members])  # fmt: skip

    def backfill(self) -> int:
        """Index the users of the current tokens installed before the index existed; once.
        Returns how many tokens were read."""
        if self._redis.exists(k.WATCHED_BACKFILLED):
            return 0
        read, start = 0, 0
        while ids := self._redis.zrange(k.TOKENS_NEXT_CHECK, start, start + _BACKFILL_BATCH - 1):
            start += len(ids)
            pipe = self._redis.pipeline(transaction=False)
            for token_id in ids:
                pipe.hget(k.token(token_id), "downloaded_by")
            users = {user_key(u) for u in pipe.execute() if u}
            pipe = self._redis.pipeline(transaction=False)
            for key in users:
                pipe.sadd(k.watched(k.user_domain(key)), key)
                pipe.sadd(k.WATCHED_DOMAINS, k.user_domain(key))
            pipe.execute()
            read += len(ids)
        self._redis.set(k.WATCHED_BACKFILLED, 1)
        return read


def _watched(key: str, tokens: list[list[str | None]], user_hash: dict[str, str]) -> WatchedUser:
    downloads = tuple(sorted(from_ms(t[0]) for t in tokens if t[0]))
    causes = {c.type: c for c in causes_in(user_hash) if c.type in catalog.USER_EVENTS}
    return WatchedUser(key=key, user=tokens[0][1] or key, downloads=downloads, causes=causes)
