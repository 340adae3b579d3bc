"""The viewers of the web pages in Redis (k.viewer, k.VIEWERS), and the count of failed logins
that throttles the login form (k.login_failures: one counter per client address and one per
name, each living one window)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime

import redis

from worker.errors import Conflict
from worker.records import from_ms, to_ms
from worker.store import keys as k


@dataclass(frozen=True)
class Viewer:
    name: str
    password_hash: str = field(repr=False)
    created_at: datetime
    #: Random, made at each `viewers add`: a cookie names it, so a viewer removed (or removed
    #: and added again) is refused with every cookie given before.
    generation: str

    def to_hash(self) -> dict[str, str | int]:
        return {
            "name": self.name,
            "hash": self.password_hash,
            "created_at": to_ms(self.created_at),
            "generation": self.generation,
        }

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Viewer:
        created_at = from_ms(data["created_at"])
        assert created_at is not None
        return cls(data["name"], data["hash"], created_at, data["generation"])


class ViewerStore:
    def __init__(self, client: redis.Redis):
        self._redis = client

    def add(self, viewer: Viewer) -> None:
        """Conflict when the name is taken."""

        def write(pipe: redis.client.Pipeline) -> None:
            if pipe.exists(k.viewer(viewer.name)):
                raise Conflict(
                    f"a viewer named {viewer.name!r} exists; remove it first to give them a new "
                    "password"
                )
            pipe.multi()
            pipe.hset(k.viewer(viewer.name), mapping=viewer.to_hash())
            pipe.sadd(k.VIEWERS, viewer.name)

        self._redis.transaction(write, k.viewer(viewer.name))

    def get(self, name: str) -> Viewer | None:
        data = self._redis.hgetall(k.viewer(name))
        return Viewer.from_hash(data) if data else None

    def renew_generation(self, name: str, generation: str) -> None:
        """A new generation for the viewer (their cookies signed before are refused), only if
        it is still the one read (a viewer removed or made again is left alone)."""

        def write(pipe: redis.client.Pipeline) -> None:
            if pipe.hget(k.viewer(name), "generation") != generation:
                return
            pipe.multi()
            pipe.hset(k.viewer(name), "generation", secrets.token_hex(8))

        self._redis.transaction(write, k.viewer(name))

    def generation(self, name: str) -> str | None:
        """The viewer's generation (None: no such viewer), in one small read."""
        return self._redis.hget(k.viewer(name), "generation")

    def all(self) -> list[Viewer]:
        names = sorted(self._redis.smembers(k.VIEWERS))
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(k.viewer(name))
        return [Viewer.from_hash(data) for data in pipe.execute() if data]

    def remove(self, name: str) -> bool:
        pipe = self._redis.pipeline()
        pipe.delete(k.viewer(name))
        pipe.srem(k.VIEWERS, name)
        removed, _ = pipe.execute()
        return bool(removed)

    def set_hash(self, name: str, generation: str, password_hash: str) -> None:
        """A new hash of the same password, unless the viewer was removed (or made again)
        meanwhile."""

        def write(pipe: redis.client.Pipeline) -> None:
            if pipe.hget(k.viewer(name), "generation") != generation:
                return
            pipe.multi()
            pipe.hset(k.viewer(name), "hash", password_hash)

        self._redis.transaction(write, k.viewer(name))


@dataclass(frozen=True)
class Limits:
    """Failed logins allowed in a window, per client address and per name."""

    per_address: int
    per_name: int
    window_s: int


class LoginThrottle:
    """Counts failed logins in fixed windows. A key lives one window from its first failure,
    so there are at most as many as failures in a window, and the per-address limit bounds
    the names one address can make keys for."""

    def __init__(self, client: redis.Redis, limits: Limits):
        self._redis = client
        self.limits = limits

    def _keys(self, address: str, name: str) -> tuple[str, str]:
        return (
            k.login_failures("address", _digest(address)),
            k.login_failures("name", _digest(name)),
        )

    def attempt(self, address: str, name: str) -> int | None:
        """Count a login attempt before its password is checked (so attempts made at once are
        all counted), and say how long to wait when it is one too many (None: check it)."""
        keys = self._keys(address, name)
        pipe = self._redis.pipeline()
        for key in keys:
            pipe.set(key, 0, ex=self.limits.window_s, nx=True)
            pipe.incr(key)
            pipe.ttl(key)
        _, by_address, address_ttl, _, by_name, name_ttl = pipe.execute()
        waits = [
            max(ttl, 1)
            for count, ttl, limit in (
                (by_address, address_ttl, self.limits.per_address),
                (by_name, name_ttl, self.limits.per_name),
            )
            if count > limit
        ]
        return max(waits) if waits else None

    def succeeded(self, address: str, name: str) -> None:
        """The name's attempts are forgotten, and this one is taken back from the address's
        count (the rest stay: it may be guessing others)."""
        by_address, by_name = self._keys(address, name)
        pipe = self._redis.pipeline()
        pipe.delete(by_name)
        pipe.decr(by_address)
        pipe.execute()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]
