"""Leasing deliveries for their attempts: due ones (a retry, or a lease whose holder died) and
the next one parked for a subscription.

A claim is two steps: the candidates are read (the heads of the due index and of the parked
queues, with each delivery's subscription), then one script checks each again and leases it.
The script is given every key it touches, so it learns no key name while it runs; a candidate
that another process claimed or changed between the two steps is passed over (its score in the
index says so), so nothing is claimed twice and nothing is lost: an unclaimed delivery stays
where it was, due or parked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import redis
from redis.commands.core import Script

from worker.records import to_ms
from worker.store import keys as k

#: Parked queues looked at per claim, at most.
PARKED_QUEUES_LOOKED_AT = 100

#: Claims in a row while a busy subscription's deliveries, parked out of the way, still leave
#: the batch short (each parks what blocked the head of the due index).
CLAIM_ROUNDS = 10

#: Parked deliveries of one subscription looked at per claim_parked (the ones no longer
#: pending are dropped on the way).
PARKED_LOOKS = 10

Claimed = tuple[str, str]  # (delivery id, subscription id)


@dataclass
class _Claim:
    """One claim_due call: what it may take, and what is in hand per subscription so far."""

    now_ms: int
    lease_ms: int
    limit: int
    lease: str
    bound: int  # attempts in hand per subscription, at most (0: no bound)
    in_hand: dict[str, int] = field(default_factory=dict)

    def room(self, subscription_id: str) -> int:
        if self.bound <= 0:
            return self.limit
        return self.bound - self.in_hand.get(subscription_id, 0)


@dataclass(frozen=True)
class _Candidate:
    id: str
    subscription: str  # "" when the delivery is gone
    score: float


class DeliveryClaims:
    """The claiming part of the notification store (see delivery_store.DeliveryStore)."""

    _redis: redis.Redis
    _scripts: dict[str, Script]
    #: Per subscription, the head of its parked queue as the latest claim_parked saw it.
    _parked_heads: dict[str, list[str]]

    def claim_due(
        self,
        now: datetime,
        lease_ms: int,
        limit: int,
        lease: str,
        *,
        per_subscription: int = 0,
        in_hand: Mapping[str, int] | None = None,
    ) -> list[Claimed]:
        """Lease due deliveries, each to `<lease>:<id>`, at most `per_subscription` (0: no
        bound) in hand per subscription counting `in_hand`; the others of a subscription at
        its bound are parked. Returns (delivery id, subscription id) of those leased."""
        held = {s: n for s, n in (in_hand or {}).items() if n > 0}
        claim = _Claim(to_ms(now), lease_ms, limit, lease, per_subscription, held)
        claimed: list[Claimed] = []
        for _ in range(CLAIM_ROUNDS):
            passed, got = self._claim_round(claim, limit - len(claimed))
            claimed += got
            for _, subscription_id in got:
                claim.in_hand[subscription_id] = claim.in_hand.get(subscription_id, 0) + 1
            if not passed or len(claimed) >= limit:
                break
        return claimed

    def _claim_round(self, claim: _Claim, want: int) -> tuple[int, list[Claimed]]:
        """One read and one claim; returns how many candidates left the due index unclaimed
        (parked, or finished) and what was claimed."""
        parked_subscriptions, due = self._read_heads(claim.now_ms, want)
        if not parked_subscriptions and not due:
            return 0, []
        with_room = [s for s in parked_subscriptions if claim.room(s) > 0]
        subscriptions, waiting = self._read_candidates(claim, due, with_room)
        queues = list(dict.fromkeys([*parked_subscriptions, *(s for s in subscriptions if s)]))
        unparked = [
            _Candidate(i, s, min(score, claim.now_ms)) for s, w in waiting.items() for i, score in w
        ]
        due_now = [
            _Candidate(i, s, score) for (i, score), s in zip(due, subscriptions, strict=True)
        ]
        candidates = list({c.id: c for c in sorted(unparked + due_now, key=_score)}.values())
        flat = self._claim_candidates(claim, queues, unparked, candidates)
        return int(flat[0]), list(zip(flat[1::2], flat[2::2], strict=True))

    def _read_heads(self, now_ms: int, want: int) -> tuple[list[str], list[tuple[str, float]]]:
        """The subscriptions with parked deliveries, and the head of the due index."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.zrange(k.DELIVERIES_PARKED, 0, PARKED_QUEUES_LOOKED_AT - 1)
        pipe.zrangebyscore(k.DELIVERIES_DUE, "-inf", now_ms, start=0, num=want, withscores=True)
        parked, due = pipe.execute()
        return list(parked), [(i, float(score)) for i, score in due]

    def _read_candidates(
        self, claim: _Claim, due: list[tuple[str, float]], with_room: list[str]
    ) -> tuple[list[str], dict[str, list[tuple[str, float]]]]:
        """The subscription of each due delivery, and the heads of the parked queues with room."""
        pipe = self._redis.pipeline(transaction=False)
        for delivery_id, _ in due:
            pipe.hget(k.delivery(delivery_id), "subscription")
        for subscription_id in with_room:
            queue = k.parked_deliveries(subscription_id)
            pipe.zrange(queue, 0, claim.room(subscription_id) - 1, withscores=True)
        answers = pipe.execute()
        subscriptions = [s or "" for s in answers[: len(due)]]
        waiting = dict(zip(with_room, answers[len(due) :], strict=True))
        return subscriptions, {s: [(i, float(score)) for i, score in w] for s, w in waiting.items()}

    def _claim_candidates(
        self,
        claim: _Claim,
        queues: list[str],
        unparked: list[_Candidate],
        candidates: list[_Candidate],
    ) -> list[str]:
        position = {s: j for j, s in enumerate(queues, start=1)}
        request = {
            "now_ms": claim.now_ms,
            "lease_ms": claim.lease_ms,
            "limit": claim.limit,
            "claim": claim.lease,
            "bound": claim.bound,
            "in_hand": claim.in_hand,
            "queues": queues,
            "unpark": [{"id": c.id, "queue": position[c.subscription]} for c in unparked],
            "candidates": [
                {"id": c.id, "queue": position.get(c.subscription, 0)} for c in candidates
            ],
        }
        keys = [
            k.DELIVERIES_DUE,
            k.DELIVERIES_PARKED,
            *(k.parked_deliveries(s) for s in queues),
            *(k.delivery(c.id) for c in candidates),
        ]
        return list(self._scripts["claim_due"](keys=keys, args=[json.dumps(request)]))

    def claim_parked(
        self, subscription_id: str, now: datetime, lease_ms: int, lease: str
    ) -> str | None:
        """Lease the next parked delivery of a subscription (to `<lease>:<id>`), if any.

        The candidates are the head of the parked queue as the previous claim for the
        subscription left it (one round trip, as the attempts of a busy subscription go on
        one after another), else as read now."""
        queue = k.parked_deliveries(subscription_id)
        head = self._parked_heads.pop(subscription_id, None)
        if head is None:
            head = self._redis.zrange(queue, 0, PARKED_LOOKS - 1)
        for _ in range(2):  # the second with the head as it is now, if none was left
            if not head:
                return None
            keys = [queue, k.DELIVERIES_PARKED, k.DELIVERIES_DUE, *(k.delivery(i) for i in head)]
            args = [subscription_id, to_ms(now), lease_ms, lease, PARKED_LOOKS, *head]
            claimed, *head = self._scripts["claim_parked"](keys=keys, args=args)
            if claimed:
                if head:
                    self._parked_heads[subscription_id] = head
                return claimed
        return None


def _score(candidate: _Candidate) -> float:
    return candidate.score
