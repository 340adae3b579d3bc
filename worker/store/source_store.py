"""The sources in Redis: those of the HTTP intake, and the directories tokenwarden asks on a
schedule (their credential sealed in the source's hash, how their rounds went in
k.source_poll, when the next is due in k.SOURCES_NEXT_POLL)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

from worker.crypto.sealing import Keyring
from worker.errors import Conflict, NotFound
from worker.intake.sources import Source
from worker.records import from_ms, to_ms
from worker.store import keys as k

#: Provisioned users deleted per round trip when their source is removed.
_FORGET_CHUNK = 500


@dataclass(frozen=True)
class PollState:
    """How a polling source's rounds went."""

    last_success: datetime | None = None
    last_round: datetime | None = None
    #: Rounds in a row that failed (0 after a success).
    failures: int = 0
    #: Since when the source is reported failing (None: it is not), and why.
    failing_since: datetime | None = None
    error: str | None = None
    #: What the last successful round found: counts by outcome.
    summary: dict[str, int] | None = None

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> PollState:
        return cls(
            last_success=from_ms(data.get("last_success")),
            last_round=from_ms(data.get("last_round")),
            failures=int(data.get("failures") or 0),
            failing_since=from_ms(data.get("failing_since")),
            error=data.get("error") or None,
            summary=json.loads(data["summary"]) if data.get("summary") else None,
        )


def credentials_context(name: str) -> str:
    """What a source's sealed credential is bound to (as RedisStore's contexts, so `secrets
    reencrypt` re-seals it through k.SEALED_LOCATIONS)."""
    return f"{k.source(name)}#{k.SOURCE_CREDENTIALS}"


class SourceStore:
    def __init__(self, client: redis.Redis, keyring: Callable[[], Keyring] | None = None):
        self._redis = client
        self._keyring = keyring

    def get(self, name: str) -> Source | None:
        data = self._redis.hgetall(k.source(name))
        return Source.from_hash(data) if data else None

    def all(self) -> list[Source]:
        names = sorted(self._redis.smembers(k.SOURCES))
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(k.source(name))
        return [Source.from_hash(d) for d in pipe.execute() if d]

    def add(
        self,
        source: Source,
        credentials: dict[str, Any] | None = None,
        first_round: datetime | None = None,
    ) -> None:
        """Conflict when the name is taken. A polling source's `credentials` are sealed into
        its hash, and its first round is due at `first_round`."""
        fields: dict[str, Any] = dict(source.to_hash())
        if credentials is not None:
            fields[k.SOURCE_CREDENTIALS] = self._seal(source.name, credentials)

        def write(pipe: redis.client.Pipeline) -> None:
            if pipe.exists(k.source(source.name)):
                raise Conflict(
                    f"a source named {source.name!r} exists; remove it first or pick another"
                )
            pipe.multi()
            pipe.delete(k.source_poll(source.name))  # what an earlier source of the name left
            pipe.hset(k.source(source.name), mapping=fields)
            pipe.sadd(k.SOURCES, source.name)
            if first_round is not None:
                pipe.zadd(k.SOURCES_NEXT_POLL, {source.name: to_ms(first_round)})

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
        pipe.zrem(k.SOURCES_NEXT_POLL, name)
        pipe.delete(k.source_poll(name))
        removed, *_ = pipe.execute()
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

    # ---- a polling source's credential ------------------------------------------------------

    def _seal(self, name: str, credentials: dict[str, Any]) -> str:
        if self._keyring is None:
            raise RuntimeError("this SourceStore was made without a keyring")
        plain = json.dumps(credentials, separators=(",", ":")).encode()
        return self._keyring().seal(plain, credentials_context(name))

    def set_credentials(self, name: str, credentials: dict[str, Any], due: datetime) -> None:
        """NotFound when the source was removed meanwhile."""
        sealed = self._seal(name, credentials)

        def write(pipe: redis.client.Pipeline) -> None:
            if not pipe.exists(k.source(name)):
                raise NotFound(f"no source named {name!r}")
            pipe.multi()
            pipe.hset(k.source(name), k.SOURCE_CREDENTIALS, sealed)
            pipe.zadd(k.SOURCES_NEXT_POLL, {name: to_ms(due)})

        self._redis.transaction(write, k.source(name))

    def open_credentials(self, name: str) -> dict[str, Any]:
        """NotFound when the source is gone (or holds no credential)."""
        sealed = self._redis.hget(k.source(name), k.SOURCE_CREDENTIALS)
        if not sealed or self._keyring is None:
            raise NotFound(f"source {name!r} holds no credential")
        return json.loads(self._keyring().open(sealed, credentials_context(name)))

    # ---- a polling source's rounds ----------------------------------------------------------

    def poll_states(self, names: list[str]) -> dict[str, PollState]:
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(k.source_poll(name))
        return {n: PollState.from_hash(d) for n, d in zip(names, pipe.execute(), strict=True)}

    def record_round(self, name: str, now: datetime, summary: dict[str, int] | None) -> PollState:
        """A round ended: a success (with its `summary`) resets the failures in a row; a
        failure (None) adds one. Returns the state after."""
        pipe = self._redis.pipeline()
        key = k.source_poll(name)
        if summary is not None:
            fields = {"last_round": to_ms(now), "last_success": to_ms(now), "failures": 0}
            pipe.hset(key, mapping={**fields, "summary": json.dumps(summary)})
        else:
            pipe.hset(key, "last_round", to_ms(now))
            pipe.hincrby(key, "failures", 1)
        pipe.hgetall(key)
        return PollState.from_hash(pipe.execute()[-1])

    def record_idle_round(self, name: str, now: datetime) -> None:
        """A round that had nobody to ask about: it says nothing of the directory (a failing
        source stays failing, a new one waits for its first real round)."""
        self._redis.hset(k.source_poll(name), mapping={"last_round": to_ms(now), "summary": "{}"})

    def mark_failing(self, name: str, since: datetime, error: str) -> datetime:
        """Record the source failing since `since`, unless it is already (the first time
        wins: it names the report); returns since when it is failing."""
        key = k.source_poll(name)
        pipe = self._redis.pipeline()
        pipe.hsetnx(key, "failing_since", to_ms(since))
        pipe.hset(key, "error", error)
        pipe.hget(key, "failing_since")
        return from_ms(pipe.execute()[-1])

    def clear_failing(self, name: str) -> None:
        self._redis.hdel(k.source_poll(name), "failing_since", "error")

    def due(self, now: datetime, limit: int = 100) -> list[str]:
        """Polling sources whose next round is due, soonest first."""
        return list(self._redis.zrangebyscore(k.SOURCES_NEXT_POLL, "-inf", to_ms(now), 0, limit))

    def next_round(self, name: str) -> datetime | None:
        """When the source's next round is due (None: it polls no more)."""
        score = self._redis.zscore(k.SOURCES_NEXT_POLL, name)
        return None if score is None else from_ms(int(score))

    def schedule(self, name: str, at: datetime) -> None:
        """The source's next round (only while it exists: a removed one stays out)."""
        self._redis.zadd(k.SOURCES_NEXT_POLL, {name: to_ms(at)}, xx=True)

    def lock(self, name: str, timeout_s: float) -> redis.lock.Lock:
        """The lease a scheduled round runs under (one replica acts)."""
        return self._redis.lock(k.source_lock(name), timeout=timeout_s, thread_local=False)
