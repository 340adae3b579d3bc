"""The Redis side of notifications: subscriptions (subscription_store.py), the outbox read
through a consumer group (outbox_store.py), and deliveries with their due index and leases
(here, and their claiming in delivery_claims.py). DeliveryStore is all of them in one, the
Redis implementation of notify.store.NotificationStore.

A delivery is tried only by the holder of its lease (`lease` field): the lease is taken when the
delivery is created and sent at once, or when the due index says it is time (a retry, or a lease
that ran out because its holder died). A duplicate or late message holds no lease and does
nothing, so no attempt runs twice and no retry comes early.

A pending delivery is always in exactly one place: the due index (leased or waiting for its
time), or its subscription's parked queue (due, but that subscription had no attempt free).

The event body is stored once per outgoing event (`delivery_body`), not once per delivery, and
kept while a delivery still needs it: a pending one (whatever its retry schedule) or a failed one
(`deliveries retry`). Deliveries written before that hold their body inline (`event`).

Every script is given every key it touches in KEYS.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from datetime import datetime
from importlib import resources
from typing import Any

import redis

from worker.crypto.sealing import Keyring
from worker.notify.owners import is_owner
from worker.notify.records import (
    CANCELLED,
    DELIVERED,
    FAILED,
    PENDING,
    Delivery,
    OutboxEntry,
    about_server,
)
from worker.notify.subscriptions import Subscription
from worker.records import from_ms, to_ms
from worker.store import keys as k
from worker.store.delivery_claims import DeliveryClaims
from worker.store.outbox_store import DISPATCH_GROUP, OutboxStore
from worker.store.server_owners import read_owners
from worker.store.subscription_store import SubscriptionStore
from worker.timefmt import format_rfc3339

#: How long a delivered or cancelled delivery is kept for `deliveries list`, in ms.
FINISHED_KEPT_MS = 7 * 86_400_000

#: How long a failed delivery is kept for `deliveries list --failed` and `deliveries retry`,
#: in ms.
FAILED_KEPT_MS = 30 * 86_400_000

#: Failed deliveries forgotten per tidying, at most.
BATCH_FORGOTTEN = 1_000

#: Longest error text kept per attempt, in characters.
ERROR_KEPT_CHARS = 500

_SCRIPTS = (
    "create_deliveries",
    "claim_due",
    "begin_attempt",
    "record_attempt",
    "claim_parked",
    "forget_failed",
)


def _script(name: str) -> str:
    return resources.files("worker.store").joinpath(f"lua/{name}.lua").read_text()


class DeliveryStore(SubscriptionStore, OutboxStore, DeliveryClaims):
    def __init__(self, client: redis.Redis, keyring: Callable[[], Keyring]):
        self._redis = client
        self._keyring = keyring
        self._scripts = {name: client.register_script(_script(name)) for name in _SCRIPTS}
        self._parked_heads = {}

    def owners_for(self, server_ids: Collection[str]) -> dict[str, tuple[str, ...]]:
        return read_owners(self._redis, server_ids)

    def tidy(self, now: datetime) -> None:
        """Forget what is done: outbox entries dispatched more than a day ago, consumers of
        dispatchers long gone, finished deliveries past their keeping time."""
        self.tidy_outbox(now)
        self._redis.zremrangebyscore(k.DELIVERIES, "-inf", to_ms(now) - FINISHED_KEPT_MS)
        self.forget_failed(now)

    def forget_failed(self, now: datetime) -> int:
        """Deliveries that failed more than FAILED_KEPT_MS ago go, with their share of the
        event body: a receiver gone for good, still subscribed, must not grow Redis for ever.
        Returns how many went (at most BATCH_FORGOTTEN a call; tidying runs often)."""
        old = self._redis.zrangebyscore(
            k.DELIVERIES_FAILED, "-inf", to_ms(now) - FAILED_KEPT_MS, start=0, num=BATCH_FORGOTTEN
        )
        pipe = self._redis.pipeline(transaction=False)
        for delivery_id in old:
            pipe.hget(k.delivery(delivery_id), "event_id")
        forgotten = 0
        for delivery_id, event_id in zip(old, pipe.execute(), strict=True):
            keys = [k.delivery(delivery_id), k.DELIVERIES_FAILED, k.DELIVERIES]
            keys.append(k.delivery_body(event_id or ""))
            args = [delivery_id, event_id or ""]
            forgotten += self._scripts["forget_failed"](keys=keys, args=args)
        return forgotten

    def create_deliveries(
        self,
        event: dict[str, Any],
        subscriptions: list[Subscription],
        delivery_id: Callable[[str, str], str],
        now: datetime,
        lease_ms: int,
        lease: str,
        park: Collection[str] = (),
    ) -> list[str]:
        """Create what does not exist yet; each new delivery is leased to `<lease>:<id>`, or,
        for the subscriptions in `park` (no attempt free), parked in their queues."""
        if not subscriptions:
            return []
        ids = [delivery_id(event["id"], s.id) for s in subscriptions]
        request = {
            "now_ms": to_ms(now),
            "lease_ms": lease_ms,
            "body": json.dumps(event, separators=(",", ":")),
            "deliveries": [
                _new_delivery(ident, s, event, now, f"{lease}:{ident}", s.id in park)
                for ident, s in zip(ids, subscriptions, strict=True)
            ],
        }
        keys = [
            k.DELIVERIES_DUE,
            k.DELIVERIES,
            k.DELIVERIES_PARKED,
            k.delivery_body(event["id"]),
            *(k.delivery(ident) for ident in ids),
            *(k.parked_deliveries(s.id) for s in subscriptions),
        ]
        return list(self._scripts["create_deliveries"](keys=keys, args=[json.dumps(request)]))

    def begin_attempt(
        self, delivery_id: str, lease: str, now: datetime, lease_ms: int
    ) -> int | None:
        """The attempts made so far, if `lease` holds the pending delivery; else None."""
        keys = [k.delivery(delivery_id), k.DELIVERIES_DUE]
        made = self._scripts["begin_attempt"](
            keys=keys, args=[delivery_id, lease, to_ms(now), lease_ms]
        )
        return None if made is None or int(made) < 0 else int(made)

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        """The delivery with its event body."""
        data = self._redis.hgetall(k.delivery(delivery_id))
        if not data.get("id"):
            return None
        if "event" not in data:  # stored once per event (older deliveries hold it inline)
            data["event"] = self._redis.hget(k.delivery_body(data["event_id"]), "body") or ""
        return _delivery(data)

    def record_attempt(
        self,
        delivery: Delivery,
        *,
        lease: str,
        attempt: int,
        outcome: str,
        status: str,
        error: str,
        now: datetime,
        next_at: datetime | None,
        latency_ms: float,
    ) -> bool:
        payload = {
            "id": delivery.id,
            "event_id": delivery.event_id,
            "lease": lease,
            "attempt": attempt,
            "outcome": outcome,
            "status": status,
            "error": error[:ERROR_KEPT_CHARS],
            "now_ms": to_ms(now),
            "now_text": format_rfc3339(now),
            "next_ms": to_ms(next_at) if next_at else 0,
            "latency_ms": f"{latency_ms:.1f}",
            "keep_ms": FINISHED_KEPT_MS,
        }
        keys = [
            k.delivery(delivery.id),
            k.DELIVERIES_DUE,
            k.DELIVERIES_FAILED,
            k.delivery_body(delivery.event_id),
        ]
        return bool(self._scripts["record_attempt"](keys=keys, args=[json.dumps(payload)]))

    def deliveries(self, *, failed_only: bool = False, limit: int = 100) -> list[Delivery]:
        index = k.DELIVERIES_FAILED if failed_only else k.DELIVERIES
        ids = self._redis.zrevrange(index, 0, limit - 1)
        pipe = self._redis.pipeline(transaction=False)
        for delivery_id in ids:
            pipe.hgetall(k.delivery(delivery_id))
        found = [_delivery(d) for d in pipe.execute() if d.get("id")]
        if not failed_only:
            return found
        return [d for d in found if d.status == FAILED]

    def retry(self, delivery_id: str, now: datetime) -> bool:
        """Give a failed delivery a fresh schedule, starting now."""
        key = k.delivery(delivery_id)
        fresh = {
            "status": PENDING,
            "attempts": 0,
            "next_at": to_ms(now),
            "failed_at": "",
            "lease": "",
        }

        def write(pipe: redis.client.Pipeline) -> bool:
            if pipe.hget(key, "status") != FAILED:
                return False
            pipe.multi()
            pipe.hset(key, mapping=fresh)
            pipe.zrem(k.DELIVERIES_FAILED, delivery_id)
            pipe.zadd(k.DELIVERIES_DUE, {delivery_id: to_ms(now)})
            return True

        return self._redis.transaction(write, key, value_from_callable=True)


def _new_delivery(
    ident: str,
    subscription: Subscription,
    event: dict[str, Any],
    now: datetime,
    lease: str,
    park: bool,
) -> dict[str, Any]:
    fields = {
        "subscription": subscription.id,
        "event_id": event["id"],
        "event_type": event["type"],
        "status": PENDING,
        "attempts": 0,
        "created_at": to_ms(now),
        "next_at": to_ms(now),
        # The server page (worker/ui/) finds a server's deliveries by it.
        "server_id": about_server(event),
    }
    if is_owner(subscription.id):  # shown by `deliveries list`; sent to as the policy says
        fields["owner"] = subscription.target
    return {"id": ident, "lease": lease, "park": park, "fields": fields}


def _delivery(data: dict[str, str]) -> Delivery:
    return Delivery(
        id=data["id"],
        subscription_id=data["subscription"],
        event_id=data["event_id"],
        event_type=data["event_type"],
        event=data.get("event", ""),
        status=data["status"],
        attempts=int(data.get("attempts") or 0),
        created_at=from_ms(data["created_at"]),
        next_at=from_ms(data.get("next_at")),
        last_status=data.get("last_status", ""),
        last_error=data.get("last_error", ""),
        last_attempt_at=data.get("last_attempt_at", ""),
        finished_at=data.get("finished_at") or data.get("failed_at", ""),
        owner=data.get("owner", ""),
        server_id=data.get("server_id", ""),
    )


__all__ = [
    "CANCELLED",
    "DELIVERED",
    "DISPATCH_GROUP",
    "FAILED",
    "PENDING",
    "Delivery",
    "DeliveryStore",
    "OutboxEntry",
]
