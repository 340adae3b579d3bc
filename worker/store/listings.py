"""Whole-estate reads for listings (`status`, `tokens list`, `replacements list`): every server,
in a fixed number of round trips however many there are (RedisStore.iter_servers streams them
in batches instead, for jobs that must not hold them all)."""

from __future__ import annotations

import redis

from worker.records import Server
from worker.store import keys as k


class Listings:
    def __init__(self, client: redis.Redis):
        self._redis = client

    def servers(self) -> list[Server]:
        """Every server, in two round trips."""
        ids = sorted(set(self._redis.hvals(k.SERVERS)))
        pipe = self._redis.pipeline(transaction=False)
        for server_id in ids:
            pipe.hgetall(k.server(server_id))
        return [Server.from_hash(d) for d in pipe.execute() if d]
