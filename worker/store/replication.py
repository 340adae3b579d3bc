"""Waiting for replicas (TOKENWARDEN_REDIS_WAIT_REPLICAS): Redis replicates asynchronously,
so a write the master has acknowledged is lost if the master dies before a replica received
it and Sentinel promotes that replica.

With N replicas to wait for, the writes tokenwarden acknowledges to someone else are followed
by Redis `WAIT N timeout` on the same connection: an event enqueued (emit, the API, serve's
answer) and each batch of decisions (before the broker message is acknowledged). WAIT never
undoes a write: when fewer than N replicas confirm within the timeout, the write stands on the
master and a warning says that a failover then could lose it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
import structlog

from worker.config import DEFAULT_WAIT_TIMEOUT_MS, Settings
from worker.store import keys as k

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ReplicaWait:
    replicas: int = 0  # 0: off
    timeout_ms: int = DEFAULT_WAIT_TIMEOUT_MS

    @classmethod
    def of(cls, settings: Settings) -> ReplicaWait:
        return cls(settings.redis_wait_replicas, settings.redis_wait_timeout_ms)

    def queue(self, pipe: Any) -> bool:
        """Add WAIT at the end of a pipeline (its answer is the pipeline's last); False when
        off, and nothing was added."""
        if self.replicas:
            pipe.execute_command("WAIT", self.replicas, self.timeout_ms)
        return bool(self.replicas)

    def check(self, reached: int, what: str) -> None:
        if reached < self.replicas:
            log.warning(
                "redis_replicas_behind",
                what=what,
                wanted=self.replicas,
                reached=reached,
                timeout_ms=self.timeout_ms,
                meaning="written on the master; a failover before a replica catches up loses it",
            )

    def after_transaction(self, client: redis.Redis, what: str) -> None:
        """WAIT after a MULTI/EXEC made on a connection given back since: a write of a mark on
        this connection orders it after the transaction, and WAIT covers everything before."""
        if not self.replicas:
            return
        pipe = client.pipeline(transaction=False)
        pipe.incr(k.REPLICATION_MARK)
        self.queue(pipe)
        self.check(pipe.execute()[-1], what)
