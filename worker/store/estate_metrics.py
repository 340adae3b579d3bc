"""The estate as a scrape of the metrics reads it (worker/metrics/records.py), in batches: a
few fixed round trips, then one pipelined round trip per READ_BATCH servers, tokens or open
replacements. It reads only the fields the metrics need: never a sealed value or a secret's
hash. Also records when each expiry scan ran (k.SCHEDULER_LAST_SCAN)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime

import redis

from worker.intake.sources import POLL_KINDS
from worker.metrics.records import (
    EstateFacts,
    OpenReplacement,
    SourceFacts,
    TermsPending,
    TokenFacts,
)
from worker.records import TOKEN_CURRENT, to_ms
from worker.store import keys as k
from worker.store.outbox_store import DISPATCH_GROUP

#: Keys read per pipelined round trip.
READ_BATCH = 500

#: The fields read of each record.
_SERVER_FIELDS = ("name", "org", "token", "terms_since")
_TOKEN_FIELDS = (
    "expires_at", "downloaded_at", "status", "a_verdict", "a_confirmed", "a_rejected"
)  # fmt: skip
_POLL_FIELDS = ("last_success", "failing_since")


class EstateMetricsStore:
    def __init__(self, client: redis.Redis):
        self._redis = client

    def record_scan(self, at: datetime) -> None:
        self._redis.set(k.SCHEDULER_LAST_SCAN, to_ms(at))

    def read(self) -> EstateFacts:
        pipe = self._redis.pipeline(transaction=False)
        pipe.zrange(k.REPLACEMENTS_OPEN, 0, -1, withscores=True)
        pipe.get(k.SCHEDULER_LAST_SCAN)
        open_ids, last_scan = pipe.execute()
        # HSCAN, not HVALS: a million servers read in slices, not in one blocking command.
        server_ids = {v for _, v in self._redis.hscan_iter(k.SERVERS, count=READ_BATCH)}
        tokens, terms = self._tokens(sorted(server_ids))
        return EstateFacts(
            tokens=tokens,
            terms_pending=terms,
            replacements=self._replacements(open_ids),
            dead_total=self._dead_total(),
            deliveries=self._deliveries(),
            outbox_pending=self._outbox_pending(),
            last_scan_ms=int(last_scan) if last_scan else None,
            sources=self._sources(),
        )

    def _tokens(self, server_ids: list[str]) -> tuple[list[TokenFacts], list[TermsPending]]:
        """The current token of every server, and the servers whose terms wait."""
        tokens: list[TokenFacts] = []
        terms: list[TermsPending] = []
        for ids in _batches(server_ids):
            servers = self._hmget_all([k.server(i) for i in ids], _SERVER_FIELDS)
            holding = [s for s in servers if s[0] is not None and s[2]]
            read = self._hmget_all([k.token(s[2]) for s in holding], _TOKEN_FIELDS)
            for (name, org, token_id, _), fields in zip(holding, read, strict=True):
                expires, downloaded, status, verdict, confirmed, rejected = fields
                if expires is None or status != TOKEN_CURRENT:
                    continue  # removed or superseded meanwhile
                tokens.append(
                    TokenFacts(
                        token_id=token_id,
                        server=name,
                        org=org or "",
                        expires_ms=int(expires),
                        downloaded_ms=int(downloaded or 0),
                        apple_verdict=verdict or None,
                        apple_confirmed_ms=int(confirmed) if confirmed else None,
                        apple_rejected_ms=int(rejected) if rejected else None,
                    )
                )
            terms += [TermsPending(s[0], s[1] or "", int(s[3])) for s in servers if s[0] and s[3]]
        return tokens, terms

    def _replacements(self, open_ids: list[tuple[str, float]]) -> list[OpenReplacement]:
        found: list[OpenReplacement] = []
        for batch in _batches(open_ids):
            pipe = self._redis.pipeline(transaction=False)
            for token_id, _ in batch:
                pipe.hget(k.replacement(token_id), "reasons")
            for (token_id, opened), text in zip(batch, pipe.execute(), strict=True):
                reasons = _reasons(text)
                urgent = max(reasons, key=lambda r: r.get("rank", 0), default={})
                found.append(
                    OpenReplacement(
                        token_id=token_id,
                        opened_ms=int(opened),
                        urgency=str(urgent.get("urgency", "")),
                        reason_types=tuple(str(r.get("type", "")) for r in reasons),
                    )
                )
        return found

    def _dead_total(self) -> int:
        if not self._redis.exists(k.DEAD):
            return 0
        return int(self._redis.xinfo_stream(k.DEAD).get("entries-added") or 0)

    def _deliveries(self) -> dict[str, int]:
        pipe = self._redis.pipeline(transaction=False)
        pipe.zcard(k.DELIVERIES_DUE)
        pipe.zcard(k.DELIVERIES_FAILED)
        pipe.zrange(k.DELIVERIES_PARKED, 0, -1)
        pending, failed, parked_subscriptions = pipe.execute()
        parked = 0
        for batch in _batches(parked_subscriptions):
            pipe = self._redis.pipeline(transaction=False)
            for subscription_id in batch:
                pipe.zcard(k.parked_deliveries(subscription_id))
            parked += sum(pipe.execute())
        return {"pending": pending, "parked": parked, "failed": failed}

    def _outbox_pending(self) -> int:
        """Entries the dispatch group has not read, and those read but not acknowledged."""
        if not self._redis.exists(k.OUTBOX):
            return 0
        for group in self._redis.xinfo_groups(k.OUTBOX):
            if group["name"] == DISPATCH_GROUP:
                lag = group.get("lag")
                if lag is None:  # Redis cannot tell (entries deleted): count what is there
                    return int(self._redis.xlen(k.OUTBOX))
                return int(lag) + int(group.get("pending") or 0)
        return int(self._redis.xlen(k.OUTBOX))  # no dispatcher ever ran: all of it waits

    def _sources(self) -> list[SourceFacts]:
        """The directory sources asked on a schedule (those with a next round)."""
        names = sorted(self._redis.smembers(k.SOURCES))
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.hget(k.source(name), "kind")
            pipe.hmget(k.source_poll(name), *_POLL_FIELDS)
        answers = pipe.execute()
        found = []
        for name, kind, (last_success, failing_since) in zip(
            names, answers[::2], answers[1::2], strict=True
        ):
            if kind in POLL_KINDS:
                last = int(last_success) if last_success else None
                found.append(SourceFacts(name, last, failing=bool(failing_since)))
        return found

    def _hmget_all(self, keys: list[str], fields: tuple[str, ...]) -> list[list[str | None]]:
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, *fields)
        return pipe.execute() if keys else []


def _batches(items: list) -> Iterator[list]:
    for first in range(0, len(items), READ_BATCH):
        yield items[first : first + READ_BATCH]


def _reasons(text: str | None) -> list[dict]:
    try:
        reasons = json.loads(text or "[]")
    except json.JSONDecodeError:
        return []
    return [r for r in reasons if isinstance(r, dict)] if isinstance(reasons, list) else []
