"""The sources of the HTTP intake, in Redis."""

from __future__ import annotations

import redis

from worker.errors import Conflict, NotFound
from worker.intake.sources import Source
from worker.store import keys as k

#: Provisioned users deleted per round trip when their source is removed.
_FORGET_CHUNK = 500


class SourceStore:
    def __init__(self, client: redis.Redis):
        self._redis = client

    def get(self, name: str) -> Source | None:
        data = self._redis.hgetall(k.source(name))
        return Source.from_hash(data) if data else None

    def all(self) -> list[Source]:
        names = sorted(self._redis.smembers(k.SOURCES))
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(k.source(name))
        return [Source.from_hash(d) for d in pipe.execute() if d]

    def add(self, source: Source) -> None:
        """Conflict when the name is taken."""

        def write(pipe: redis.client.Pipeline) -> None:
            if pipe.exists(k.source(source.name)):
                raise Conflict(
                    f"a source named {source.name!r} exists; remove it first or pick another"
                )
            pipe.multi()
            pipe.hset(k.source(source.name), mapping=source.to_hash())
            pipe.sadd(k.SOURCES, source.name)

        self._redis.transaction(write, k.source(source.name))

    def replace(self, source: Source) -> None:
        """Write a changed source (a rotated secret); NotFound when it was removed meanwhile."""

        def write(pipe: redis.client.Pipeline) -> None:
            if not pipe.exists(k.source(source.name)):
                raise NotFound(f"no source named {source.name!r}")
            pipe.multi()
            pipe.hset(k.source(source.name), mapping=source.to_hash())

        self._redis.transaction(write, k.source(source.name))

    def remove(self, name: str) -> bool:
        """Remove the source, then what it provisioned (SCIM users), a chunk at a time: its
        path answers 404 from the first step, so nothing is added meanwhile."""
        pipe = self._redis.pipeline()
        pipe.delete(k.source(name))
        pipe.srem(k.SOURCES, name)
        removed, _ = pipe.execute()
        self._forget_provisioned(name)
        return bool(removed)

    def _forget_provisioned(self, name: str) -> None:
        index = k.scim_users(name)
        while ids := self._redis.zrange(index, 0, _FORGET_CHUNK - 1):
            pipe = self._redis.pipeline()
            pipe.delete(*(k.scim_user(name, user_id) for user_id in ids))
            pipe.zrem(index, *ids)
            pipe.execute()
        self._redis.delete(index, k.scim_user_names(name))
