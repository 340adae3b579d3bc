"""Whole-estate reads for listings (`status`, `tokens list`, `replacements list`): every server,
in a fixed number of round trips however many there are; or in batches (server_batches), for
reads that must not hold them all (the renewal plan)."""

from __future__ import annotations

from collections.abc import Iterator

import redis

from worker.records import Server
from worker.store import keys as k

#: Servers read per pipelined round trip by server_batches.
BATCH = 500


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

    def server_batches(self, size: int = BATCH) -> Iterator[list[Server]]:
        """Every server, about `size` at a time: HSCAN, not HVALS (a million servers read in
        slices, not in one blocking command), then one pipelined read per batch. As with any
        SCAN, a server added or removed meanwhile may be missed, and one may come twice."""
        batch: list[str] = []
        for _, server_id in self._redis.hscan_iter(k.SERVERS, count=size):
            batch.append(server_id)
            if len(batch) >= size:
                yield self._read(batch)
                batch = []
        if batch:
            yield self._read(batch)

    def _read(self, ids: list[str]) -> list[Server]:
        pipe = self._redis.pipeline(transaction=False)
        for server_id in ids:
            pipe.hgetall(k.server(server_id))
        return [Server.from_hash(d) for d in pipe.execute() if d]
