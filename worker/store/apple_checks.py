"""What the checks with Apple's enrollment service keep in Redis: when each token is next asked
about (the sorted set APPLE_NEXT_CHECK), and the facts an answer is decided on. The answers
themselves are applied as decisions (decisions.py), like every other.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from datetime import datetime
from importlib import resources

import redis

from worker.names import user_key
from worker.records import TOKEN_CURRENT, Server, Token, to_ms
from worker.rules.facts import AppleCheckFacts
from worker.store import keys as k
from worker.store.facts import recorded_in, replacement_facts, token_ids_in

CLAIM_APPLE_CHECKS = (
    resources.files("worker.store").joinpath("lua/claim_apple_checks.lua").read_text()
)

#: Ids added per round trip when the schedule is filled with the tokens installed before it.
_BACKFILL_BATCH = 1000


def spread_offset_ms(token_id: str, spread_s: int) -> int:
    """Where in an interval a token's checks fall, the same every time for the same token:
    a stable hash, so tokens filled in at once are spread evenly rather than bunched."""
    return zlib.crc32(token_id.encode()) % max(1, spread_s * 1000)


class RedisAppleChecks:
    def __init__(self, client: redis.Redis):
        self._redis = client
        self._claim = client.register_script(CLAIM_APPLE_CHECKS)

    def schedule(self, token_id: str, at: datetime, *, only_if_scheduled: bool = False) -> None:
        """Ask Apple about the token at `at` (only if it is still in the schedule, when
        `only_if_scheduled`: a token superseded meanwhile stays out)."""
        self._redis.zadd(k.APPLE_NEXT_CHECK, {token_id: to_ms(at)}, xx=only_if_scheduled)

    def reschedule(self, times: Mapping[str, datetime]) -> None:
        """Each token's next check, in one write; a token out of the schedule stays out."""
        if times:
            self._redis.zadd(k.APPLE_NEXT_CHECK, {t: to_ms(at) for t, at in times.items()}, xx=True)

    def unschedule(self, token_ids: list[str]) -> None:
        if token_ids:
            self._redis.zrem(k.APPLE_NEXT_CHECK, *token_ids)

    def claim_due(self, now: datetime, limit: int, lease_until: datetime) -> list[str]:
        return list(
            self._claim(keys=[k.APPLE_NEXT_CHECK], args=[to_ms(now), limit, to_ms(lease_until)])
        )

    def due_count(self, now: datetime) -> int:
        return self._redis.zcount(k.APPLE_NEXT_CHECK, "-inf", to_ms(now))

    def scheduled_count(self) -> int:
        return self._redis.zcard(k.APPLE_NEXT_CHECK)

    def backfill(self, now: datetime, spread_s: int) -> int:
        """Put every current token not yet in the schedule into it, spread over `spread_s`
        (tokens installed before tokenwarden asked Apple). Once: a marker says it was done;
        doing it twice would add nothing anyway (ZADD NX)."""
        if self._redis.exists(k.APPLE_BACKFILLED):
            return 0
        added, batch = 0, []
        for token_id, _ in self._redis.zscan_iter(k.TOKENS_NEXT_CHECK, count=_BACKFILL_BATCH):
            batch.append(token_id)
            if len(batch) >= _BACKFILL_BATCH:
                added += self._add_spread(batch, now, spread_s)
                batch = []
        added += self._add_spread(batch, now, spread_s)
        self._redis.set(k.APPLE_BACKFILLED, to_ms(now))
        return added

    def _add_spread(self, token_ids: list[str], now: datetime, spread_s: int) -> int:
        if not token_ids:
            return 0
        start = to_ms(now)
        spread = {t: start + spread_offset_ms(t, spread_s) for t in token_ids}
        return self._redis.zadd(k.APPLE_NEXT_CHECK, spread, nx=True)

    def interval(self) -> int | None:
        value = self._redis.get(k.APPLE_INTERVAL)
        return int(value) if value else None

    def set_interval(self, seconds: int) -> None:
        self._redis.set(k.APPLE_INTERVAL, seconds)

    def bring_forward(self, now: datetime, interval_s: int) -> int:
        """Every check scheduled later than one interval from now moves into the coming
        interval, spread as a backfill is (after the interval was shortened)."""
        latest, moved = to_ms(now) + interval_s * 1000, 0
        while ids := self._redis.zrangebyscore(
            k.APPLE_NEXT_CHECK, f"({latest}", "+inf", start=0, num=_BACKFILL_BATCH
        ):
            start = to_ms(now)
            spread = {t: start + spread_offset_ms(t, interval_s) for t in ids}
            moved += len(ids)
            self._redis.zadd(k.APPLE_NEXT_CHECK, spread, xx=True)
        return moved

    def facts(self, token_ids: list[str], named: dict[str, str]) -> list[AppleCheckFacts]:
        """What each token's answer is decided on (tokens gone are left out); `named` maps a
        token id to the key of the user Apple named as its downloader, when that user's
        record is needed."""
        pipe = self._redis.pipeline(transaction=False)
        for token_id in token_ids:
            pipe.hgetall(k.token(token_id))
            pipe.hgetall(k.replacement(token_id))
        answers = iter(pipe.execute())
        read = [(Token.from_hash(t), r) for t, r in zip(answers, answers, strict=True) if t]
        pipe = self._redis.pipeline(transaction=False)
        for token, _ in read:
            pipe.hgetall(k.server(token.server_id))
            pipe.hgetall(k.user(user_key(token.downloaded_by)))
            if token.id in named:
                pipe.hgetall(k.user(named[token.id]))
        answers = iter(pipe.execute())
        found = []
        for token, replacement in read:
            server, downloader = next(answers), next(answers)
            other = recorded_in(next(answers), k.USER_VERSION) if token.id in named else None
            found.append(
                AppleCheckFacts(
                    token=token,
                    server=Server.from_hash(server) if server else None,
                    replacement=replacement_facts(replacement),
                    downloader=recorded_in(downloader, k.USER_VERSION),
                    downloader_tokens=tuple(token_ids_in(downloader)),
                    named=other,
                )
            )
        return found

    def current_tokens(self, token_ids: list[str]) -> list[Token]:
        """The tokens among `token_ids` that are still current (the others are dropped)."""
        pipe = self._redis.pipeline(transaction=False)
        for token_id in token_ids:
            pipe.hgetall(k.token(token_id))
        tokens = [Token.from_hash(d) for d in pipe.execute() if d]
        return [t for t in tokens if t.status == TOKEN_CURRENT]
