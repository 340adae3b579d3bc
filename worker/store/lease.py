"""A lease in Redis: one holder at a time, for a time-to-live, renewed while it lives.

Several scheduler processes may run; the one holding the lease acts. If it dies (even by
SIGKILL), the lease runs out and another takes it.
"""

from __future__ import annotations

import redis

from worker.store import keys as k

# Take the lease if free, or renew it if ours; answer whether we hold it.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Lease:
    def __init__(self, client: redis.Redis, key: str, owner: str, ttl_ms: int):
        self.key = key
        self.owner = owner
        self.ttl_ms = ttl_ms
        self._redis = client
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)

    def hold(self) -> bool:
        """Take or renew the lease; True while this owner holds it."""
        return bool(self._acquire(keys=[self.key], args=[self.owner, self.ttl_ms]))

    def release(self) -> None:
        self._release(keys=[self.key], args=[self.owner])

    def holder(self) -> str | None:
        return self._redis.get(self.key)


def scheduler_lease(client: redis.Redis, owner: str, ttl_ms: int) -> Lease:
    """The lease of the scheduler replica that acts (k.SCHEDULER_LEADER)."""
    return Lease(client, k.SCHEDULER_LEADER, owner, ttl_ms)
