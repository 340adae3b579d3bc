"""The Redis side of notifications: subscriptions (secrets sealed), reading the outbox through a
consumer group, and deliveries with their due index."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

import redis

from worker.crypto.sealing import Keyring
from worker.notify.subscriptions import ACTIVE, DISABLED, Subscription
from worker.records import from_ms, to_ms
from worker.store import keys as k
from worker.timefmt import format_rfc3339


def _script(name: str) -> str:
    return resources.files("worker.store").joinpath(f"lua/{name}.lua").read_text()


#: Consumer group that turns outbox entries into deliveries.
DISPATCH_GROUP = "dispatch"

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


@dataclass(frozen=True)
class Delivery:
    id: str
    subscription_id: str
    event_id: str
    event_type: str
    event: str  # the CloudEvent, JSON, exactly as sent
    status: str
    attempts: int
    created_at: datetime
    next_at: datetime | None = None
    last_status: str = ""
    last_error: str = ""
    last_attempt_at: str = ""
    delivered_at: str = ""

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Delivery:
        return cls(
            id=data["id"],
            subscription_id=data["subscription"],
            event_id=data["event_id"],
            event_type=data["event_type"],
            event=data["event"],
            status=data["status"],
            attempts=int(data.get("attempts") or 0),
            created_at=from_ms(data["created_at"]),
            next_at=from_ms(data.get("next_at")),
            last_status=data.get("last_status", ""),
            last_error=data.get("last_error", ""),
            last_attempt_at=data.get("last_attempt_at", ""),
            delivered_at=data.get("delivered_at", ""),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "subscription": self.subscription_id,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "status": self.status,
            "attempts": self.attempts,
            "created_at": format_rfc3339(self.created_at),
            "next_attempt_at": format_rfc3339(self.next_at)
            if self.next_at and self.status == PENDING
            else None,
            "last_status": self.last_status or None,
            "last_error": self.last_error or None,
            "last_attempt_at": self.last_attempt_at or None,
            "delivered_at": self.delivered_at or None,
        }


def _subscription_context(subscription_id: str) -> str:
    return f"{k.subscription(subscription_id)}#secret"


class DeliveryStore:
    def __init__(self, client: redis.Redis, keyring: Callable[[], Keyring]):
        self._redis = client
        self._keyring = keyring
        self._create = client.register_script(_script("create_deliveries"))
        self._claim = client.register_script(_script("claim_due"))
        self._record = client.register_script(_script("record_attempt"))

    # ---- subscriptions -----------------------------------------------------------------------

    def add_subscription(self, subscription: Subscription, secret: str | None) -> None:
        fields = {
            "id": subscription.id,
            "kind": subscription.kind,
            "target": subscription.target,
            "types": ",".join(subscription.types),
            "org": subscription.org,
            "server": subscription.server,
            "status": subscription.status,
            "created_at": to_ms(subscription.created_at),
        }
        if secret is not None:
            context = _subscription_context(subscription.id)
            fields["secret"] = self._keyring().seal(secret.encode(), context)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(k.subscription(subscription.id), mapping=fields)
        pipe.sadd(k.SUBSCRIPTIONS, subscription.id)
        pipe.execute()

    def subscriptions(self) -> list[Subscription]:
        ids = sorted(self._redis.smembers(k.SUBSCRIPTIONS))
        pipe = self._redis.pipeline(transaction=False)
        for subscription_id in ids:
            pipe.hgetall(k.subscription(subscription_id))
        return [_subscription(d) for d in pipe.execute() if d]

    def get_subscription(self, subscription_id: str) -> Subscription | None:
        data = self._redis.hgetall(k.subscription(subscription_id))
        return _subscription(data) if data else None

    def open_secret(self, subscription: Subscription) -> str:
        sealed = self._redis.hget(k.subscription(subscription.id), "secret")
        if not sealed:
            raise LookupError(f"subscription {subscription.id} has no secret")
        return self._keyring().open(sealed, _subscription_context(subscription.id)).decode()

    def remove_subscription(self, subscription_id: str) -> bool:
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(k.subscription(subscription_id))
        pipe.srem(k.SUBSCRIPTIONS, subscription_id)
        return bool(pipe.execute()[0])

    def disable_subscription(self, subscription_id: str, reason: str, now: datetime) -> None:
        key = k.subscription(subscription_id)
        if self._redis.exists(key):
            self._redis.hset(
                key,
                mapping={"status": DISABLED, "disabled_reason": reason, "disabled_at": to_ms(now)},
            )

    def enable_subscription(self, subscription_id: str) -> None:
        self._redis.hset(
            k.subscription(subscription_id),
            mapping={"status": ACTIVE, "disabled_reason": "", "disabled_at": ""},
        )

    # ---- the outbox, through a consumer group --------------------------------------------------

    def ensure_dispatch_group(self) -> None:
        try:
            self._redis.xgroup_create(k.OUTBOX, DISPATCH_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read_outbox(
        self, consumer: str, count: int, block_ms: int
    ) -> list[tuple[str, dict[str, Any]]]:
        answer = self._redis.xreadgroup(
            DISPATCH_GROUP, consumer, {k.OUTBOX: ">"}, count=count, block=block_ms
        )
        return [
            (entry_id, json.loads(fields["event"]))
            for _, entries in answer or []
            for entry_id, fields in entries
            if fields
        ]

    def claim_stale_outbox(
        self, consumer: str, min_idle_ms: int, count: int
    ) -> list[tuple[str, dict[str, Any]]]:
        """Entries another dispatcher read but never acknowledged (it died): take them over."""
        answer = self._redis.xautoclaim(
            k.OUTBOX, DISPATCH_GROUP, consumer, min_idle_ms, start_id="0-0", count=count
        )
        return [(entry_id, json.loads(fields["event"])) for entry_id, fields in answer[1] if fields]

    def ack_outbox(self, entry_ids: list[str]) -> None:
        if entry_ids:
            self._redis.xack(k.OUTBOX, DISPATCH_GROUP, *entry_ids)

    # ---- deliveries --------------------------------------------------------------------------

    def create_deliveries(
        self,
        event: dict[str, Any],
        subscriptions: list[Subscription],
        delivery_id: Callable[[str, str], str],
        now: datetime,
        lease_ms: int,
    ) -> list[str]:
        body = json.dumps(event, separators=(",", ":"))
        request = {
            "now_ms": to_ms(now),
            "lease_ms": lease_ms,
            "deliveries": [
                {
                    "id": delivery_id(event["id"], s.id),
                    "fields": {
                        "subscription": s.id,
                        "event_id": event["id"],
                        "event_type": event["type"],
                        "event": body,
                        "status": PENDING,
                        "attempts": 0,
                        "created_at": to_ms(now),
                        "next_at": to_ms(now),
                    },
                }
                for s in subscriptions
            ],
        }
        if not request["deliveries"]:
            return []
        created = self._create(args=[json.dumps(request)])
        return list(created or [])

    def claim_due(self, now: datetime, lease_ms: int, limit: int) -> list[str]:
        return list(self._claim(args=[to_ms(now), lease_ms, limit]) or [])

    def extend_lease(self, delivery_id: str, until: datetime) -> None:
        self._redis.zadd(k.DELIVERIES_DUE, {delivery_id: to_ms(until)}, xx=True)

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        data = self._redis.hgetall(k.delivery(delivery_id))
        return Delivery.from_hash(data) if data else None

    def record_attempt(
        self,
        delivery: Delivery,
        *,
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
            "attempt": attempt,
            "outcome": outcome,
            "status": status,
            "error": error[:500],
            "now_ms": to_ms(now),
            "now_text": format_rfc3339(now),
            "next_ms": to_ms(next_at) if next_at else 0,
            "latency_ms": f"{latency_ms:.1f}",
        }
        return bool(self._record(args=[json.dumps(payload)]))

    def deliveries(self, *, failed_only: bool = False, limit: int = 100) -> list[Delivery]:
        index = k.DELIVERIES_FAILED if failed_only else k.DELIVERIES
        ids = self._redis.zrevrange(index, 0, limit - 1)
        pipe = self._redis.pipeline(transaction=False)
        for delivery_id in ids:
            pipe.hgetall(k.delivery(delivery_id))
        return [Delivery.from_hash(d) for d in pipe.execute() if d]

    def retry(self, delivery_id: str, now: datetime) -> bool:
        """Give a failed delivery a fresh schedule, starting now."""
        key = k.delivery(delivery_id)

        def write(pipe: redis.client.Pipeline) -> bool:
            if pipe.hget(key, "status") != FAILED:
                return False
            pipe.multi()
            pipe.hset(
                key,
                mapping={"status": PENDING, "attempts": 0, "next_at": to_ms(now), "failed_at": ""},
            )
            pipe.zrem(k.DELIVERIES_FAILED, delivery_id)
            pipe.zadd(k.DELIVERIES_DUE, {delivery_id: to_ms(now)})
            return True

        return self._redis.transaction(write, key, value_from_callable=True)


def _subscription(data: dict[str, str]) -> Subscription:
    return Subscription(
        id=data["id"],
        kind=data["kind"],
        target=data["target"],
        types=tuple(t for t in data.get("types", "").split(",") if t),
        created_at=from_ms(data["created_at"]),
        org=data.get("org", ""),
        server=data.get("server", ""),
        status=data.get("status", ACTIVE),
        disabled_reason=data.get("disabled_reason", ""),
        disabled_at=from_ms(data.get("disabled_at")),
    )
