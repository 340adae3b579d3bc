"""The Redis side of notifications: subscriptions (secrets and webhook URLs sealed), reading the
outbox through a consumer group, and deliveries with their due index and leases.

A webhook subscription's hash holds its URL sealed (`url`) and, in `target`, only what may be
shown (subscriptions.redact_url). Subscriptions stored before URLs were sealed hold the full URL
in `target` and no `url`: they are read as they are, and seal_plain_urls (run when a worker
starts) seals them.

A delivery is tried only by the holder of its lease (`lease` field): the lease is taken when the
delivery is created and sent at once, or when the due index says it is time (a retry, or a lease
that ran out because its holder died). A duplicate or late message holds no lease and does
nothing, so no attempt runs twice and no retry comes early.

A pending delivery is always in exactly one place: the due index (leased or waiting for its
time), or its subscription's parked queue (due, but that subscription had no attempt free).

The event body is stored once per outgoing event (`delivery_body`), not once per delivery, and
kept while a delivery still needs it: a pending one (whatever its retry schedule) or a failed one
(`deliveries retry`). Deliveries written before that hold their body inline (`event`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

import redis

from worker.crypto.sealing import Keyring
from worker.errors import NotFound
from worker.notify.subscriptions import (
    ACTIVE,
    DISABLED,
    EMAIL,
    WEBHOOK,
    Subscription,
    redact_url,
)
from worker.records import from_ms, to_ms
from worker.store import keys as k
from worker.timefmt import format_rfc3339


def _script(name: str) -> str:
    return resources.files("worker.store").joinpath(f"lua/{name}.lua").read_text()


#: Consumer group that turns outbox entries into deliveries.
DISPATCH_GROUP = "dispatch"

PENDING, DELIVERED, FAILED, CANCELLED = "pending", "delivered", "failed", "cancelled"

#: How long a delivered or cancelled delivery is kept for `deliveries list`, in ms.
FINISHED_KEPT_MS = 7 * 86_400_000

#: How long a failed delivery is kept for `deliveries list --failed` and `deliveries retry`,
#: in ms.
FAILED_KEPT_MS = 30 * 86_400_000

#: Failed deliveries forgotten per tidying, at most.
BATCH_FORGOTTEN = 1_000

#: How long outgoing events stay in the outbox once dispatched, in ms (for inspection).
OUTBOX_KEPT_MS = 86_400_000

#: A dispatcher consumer silent this long, with nothing pending, is forgotten, in ms.
IDLE_CONSUMER_MS = 3_600_000


@dataclass(frozen=True)
class OutboxEntry:
    entry_id: str
    event: dict[str, Any] | None  # None: the entry is not a readable event
    raw: str


@dataclass(frozen=True)
class Delivery:
    id: str
    subscription_id: str
    event_id: str
    event_type: str
    event: str  # the CloudEvent, JSON, exactly as sent ("" when it is gone)
    status: str
    attempts: int
    created_at: datetime
    next_at: datetime | None = None
    last_status: str = ""
    last_error: str = ""
    last_attempt_at: str = ""
    finished_at: str = ""

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Delivery:
        return cls(
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
            "finished_at": self.finished_at or None,
        }


def _subscription_context(subscription_id: str, field: str = "secret") -> str:
    """What a sealed field of a subscription is bound to (the same as RedisStore's contexts,
    so `secrets reencrypt` re-seals it through k.SEALED_LOCATIONS)."""
    return f"{k.subscription(subscription_id)}#{field}"


class DeliveryStore:
    def __init__(self, client: redis.Redis, keyring: Callable[[], Keyring]):
        self._redis = client
        self._keyring = keyring
        self._create = client.register_script(_script("create_deliveries"))
        self._claim = client.register_script(_script("claim_due"))
        self._begin = client.register_script(_script("begin_attempt"))
        self._record = client.register_script(_script("record_attempt"))
        self._claim_parked = client.register_script(_script("claim_parked"))
        self._forget_failed = client.register_script(_script("forget_failed"))

    # ---- subscriptions -----------------------------------------------------------------------

    def add_subscription(self, subscription: Subscription, secret: str | None) -> None:
        fields = {
            "id": subscription.id,
            "kind": subscription.kind,
            # A webhook's URL is sealed in `url`, its redacted form in `shown`; there is no
            # `target` (the field that held the full URL before), so a worker of an older
            # version meeting it fails instead of posting to the redacted form.
            _PLAIN_FIELD[subscription.kind]: subscription.shown,
            "types": ",".join(subscription.types),
            "org": subscription.org,
            "server": subscription.server,
            "status": subscription.status,
            "created_at": to_ms(subscription.created_at),
        }
        if secret is not None:
            context = _subscription_context(subscription.id)
            fields["secret"] = self._keyring().seal(secret.encode(), context)
        if subscription.kind == WEBHOOK:
            fields["url"] = self._seal_url(subscription.id, subscription.target)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(k.subscription(subscription.id), mapping=fields)
        pipe.sadd(k.SUBSCRIPTIONS, subscription.id)
        pipe.execute()

    def subscriptions(self) -> list[Subscription]:
        ids = sorted(self._redis.smembers(k.SUBSCRIPTIONS))
        pipe = self._redis.pipeline(transaction=False)
        for subscription_id in ids:
            pipe.hgetall(k.subscription(subscription_id))
        return [_subscription(d) for d in pipe.execute() if d.get("id")]

    def get_subscription(self, subscription_id: str) -> Subscription | None:
        data = self._redis.hgetall(k.subscription(subscription_id))
        return _subscription(data) if data.get("id") else None

    def open_secret(self, subscription: Subscription) -> str:
        sealed = self._redis.hget(k.subscription(subscription.id), "secret")
        if not sealed:
            raise NotFound(
                f"subscription {subscription.id} has no secret; remove it and add it again "
                "(`tokenwarden subscriptions remove`, then `add`)"
            )
        return self._keyring().open(sealed, _subscription_context(subscription.id)).decode()

    def open_target(self, subscription: Subscription) -> str:
        """Where to send: the full webhook URL (never to be logged or shown unasked), or the
        e-mail address."""
        if subscription.kind != WEBHOOK:
            return subscription.target
        key = k.subscription(subscription.id)
        sealed, plain = self._redis.hmget(key, ["url", "target"])
        if not sealed:  # stored before URLs were sealed
            if not plain:
                raise NotFound(
                    f"subscription {subscription.id} has no URL; remove it and add it again "
                    "(`tokenwarden subscriptions remove`, then `add`)"
                )
            return plain
        context = _subscription_context(subscription.id, "url")
        return self._keyring().open(sealed, context).decode()

    def seal_plain_urls(self) -> int:
        """Seal the URLs of webhook subscriptions stored before URLs were sealed; returns how
        many. Idempotent, and safe beside other processes doing the same."""
        sealed = 0
        for subscription_id in sorted(self._redis.smembers(k.SUBSCRIPTIONS)):
            key = k.subscription(subscription_id)

            def write(pipe: redis.client.Pipeline, subscription_id: str = subscription_id) -> int:
                kind, url, target = pipe.hmget(
                    k.subscription(subscription_id), "kind", "url", "target"
                )
                if kind != WEBHOOK or url or not target:
                    return 0
                fields = {
                    "url": self._seal_url(subscription_id, target),
                    "shown": redact_url(target),
                }
                pipe.multi()
                pipe.hset(k.subscription(subscription_id), mapping=fields)
                pipe.hdel(k.subscription(subscription_id), "target")
                return 1

            sealed += self._redis.transaction(write, key, value_from_callable=True)
        return sealed

    def _seal_url(self, subscription_id: str, url: str) -> str:
        return self._keyring().seal(url.encode(), _subscription_context(subscription_id, "url"))

    def remove_subscription(self, subscription_id: str) -> bool:
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(k.subscription(subscription_id))
        pipe.srem(k.SUBSCRIPTIONS, subscription_id)
        return bool(pipe.execute()[0])

    def disable_subscription(self, subscription_id: str, reason: str, now: datetime) -> None:
        self._set_if_exists(
            subscription_id,
            {"status": DISABLED, "disabled_reason": reason, "disabled_at": to_ms(now)},
        )

    def enable_subscription(self, subscription_id: str) -> None:
        self._set_if_exists(
            subscription_id, {"status": ACTIVE, "disabled_reason": "", "disabled_at": ""}
        )

    def _set_if_exists(self, subscription_id: str, fields: dict[str, Any]) -> None:
        key = k.subscription(subscription_id)

        def write(pipe: redis.client.Pipeline) -> None:
            if pipe.exists(key):  # a removal meanwhile must not leave half a hash behind
                pipe.multi()
                pipe.hset(key, mapping=fields)

        self._redis.transaction(write, key)

    # ---- the outbox, through a consumer group --------------------------------------------------

    def ensure_dispatch_group(self) -> None:
        try:
            self._redis.xgroup_create(k.OUTBOX, DISPATCH_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read_outbox(self, consumer: str, count: int, block_ms: int) -> list[OutboxEntry]:
        answer = self._redis.xreadgroup(
            DISPATCH_GROUP, consumer, {k.OUTBOX: ">"}, count=count, block=block_ms
        )
        return [
            _entry(entry_id, fields) for _, entries in answer or [] for entry_id, fields in entries
        ]

    def claim_stale_outbox(self, consumer: str, min_idle_ms: int, count: int) -> list[OutboxEntry]:
        """Entries another dispatcher read but never acknowledged (it died): take them over."""
        answer = self._redis.xautoclaim(
            k.OUTBOX, DISPATCH_GROUP, consumer, min_idle_ms, start_id="0-0", count=count
        )
        return [_entry(entry_id, fields) for entry_id, fields in answer[1]]

    def ack_outbox(self, entry_ids: list[str]) -> None:
        if entry_ids:
            self._redis.xack(k.OUTBOX, DISPATCH_GROUP, *entry_ids)

    def dead_outbox_entry(self, entry: OutboxEntry, now: datetime) -> None:
        self._redis.xadd(
            k.DEAD,
            {
                "at": format_rfc3339(now),
                "reason": "an outbox entry is not a readable event",
                "message_id": entry.entry_id,
                "payload": entry.raw[:4096],
                "truncated": "0",
            },
            maxlen=10_000,
            approximate=True,
        )

    def tidy(self, now: datetime) -> None:
        """Forget what is done: outbox entries dispatched more than a day ago, consumers of
        dispatchers long gone, finished deliveries past their keeping time."""
        # Entries with ids below the horizon go: older than the keeping time, and neither
        # pending (read, not acknowledged) nor unread.
        horizon = (to_ms(now) - OUTBOX_KEPT_MS, 0)
        pending = self._redis.xpending(k.OUTBOX, DISPATCH_GROUP)
        if pending and pending.get("pending") and pending.get("min"):
            horizon = min(horizon, _stream_id(pending["min"]))
        for group in self._redis.xinfo_groups(k.OUTBOX):
            if group["name"] == DISPATCH_GROUP:
                ms, seq = _stream_id(group["last-delivered-id"])
                horizon = min(horizon, (ms, seq + 1))
        if horizon[0] > 0:
            self._redis.xtrim(k.OUTBOX, minid=f"{horizon[0]}-{horizon[1]}", approximate=False)
        for consumer in self._redis.xinfo_consumers(k.OUTBOX, DISPATCH_GROUP):
            if consumer["pending"] == 0 and consumer["idle"] > IDLE_CONSUMER_MS:
                self._redis.xgroup_delconsumer(k.OUTBOX, DISPATCH_GROUP, consumer["name"])
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
            forgotten += self._forget_failed(keys=keys, args=[delivery_id, event_id or ""])
        return forgotten

    # ---- deliveries --------------------------------------------------------------------------

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
        deliveries = []
        for subscription in subscriptions:
            ident = delivery_id(event["id"], subscription.id)
            deliveries.append(
                {
                    "id": ident,
                    "lease": f"{lease}:{ident}",
                    "park": subscription.id in park,
                    "fields": {
                        "subscription": subscription.id,
                        "event_id": event["id"],
                        "event_type": event["type"],
                        "status": PENDING,
                        "attempts": 0,
                        "created_at": to_ms(now),
                        "next_at": to_ms(now),
                    },
                }
            )
        if not deliveries:
            return []
        request = {
            "now_ms": to_ms(now),
            "lease_ms": lease_ms,
            "body_key": k.delivery_body(event["id"]),
            "body": json.dumps(event, separators=(",", ":")),
            "parked_prefix": k.PARKED_PREFIX,
            "deliveries": deliveries,
        }
        return list(self._create(args=[json.dumps(request)]) or [])

    def claim_due(
        self,
        now: datetime,
        lease_ms: int,
        limit: int,
        lease: str,
        *,
        per_subscription: int = 0,
        in_hand: Mapping[str, int] | None = None,
    ) -> list[tuple[str, str]]:
        """Lease due deliveries, each to `<lease>:<id>`, at most `per_subscription` (0: no
        bound) in hand per subscription counting `in_hand`; the others of a subscription at
        its bound are parked. Returns (delivery id, subscription id) of those leased."""
        request = {
            "now_ms": to_ms(now),
            "lease_ms": lease_ms,
            "limit": limit,
            "claim": lease,
            "bound": per_subscription,
            "in_hand": {s: n for s, n in (in_hand or {}).items() if n > 0},
            "parked_prefix": k.PARKED_PREFIX,
        }
        flat = list(self._claim(args=[json.dumps(request)]) or [])
        return list(zip(flat[0::2], flat[1::2], strict=True))

    def claim_parked(
        self, subscription_id: str, now: datetime, lease_ms: int, lease: str
    ) -> str | None:
        """Lease the next parked delivery of a subscription (to `<lease>:<id>`), if any."""
        parked = k.parked_deliveries(subscription_id)
        claimed = self._claim_parked(args=[parked, subscription_id, to_ms(now), lease_ms, lease])
        return claimed or None

    def begin_attempt(
        self, delivery_id: str, lease: str, now: datetime, lease_ms: int
    ) -> int | None:
        """The attempts made so far, if `lease` holds the pending delivery; else None."""
        made = self._begin(args=[delivery_id, lease, to_ms(now), lease_ms])
        return None if made is None or int(made) < 0 else int(made)

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        """The delivery with its event body."""
        data = self._redis.hgetall(k.delivery(delivery_id))
        if not data.get("id"):
            return None
        if "event" not in data:  # stored once per event (older deliveries hold it inline)
            data["event"] = self._redis.hget(k.delivery_body(data["event_id"]), "body") or ""
        return Delivery.from_hash(data)

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
            "lease": lease,
            "attempt": attempt,
            "outcome": outcome,
            "status": status,
            "error": error[:500],
            "now_ms": to_ms(now),
            "now_text": format_rfc3339(now),
            "next_ms": to_ms(next_at) if next_at else 0,
            "latency_ms": f"{latency_ms:.1f}",
            "keep_ms": FINISHED_KEPT_MS,
            "body_prefix": k.DELIVERY_BODY_PREFIX,
        }
        return bool(self._record(args=[json.dumps(payload)]))

    def deliveries(self, *, failed_only: bool = False, limit: int = 100) -> list[Delivery]:
        index = k.DELIVERIES_FAILED if failed_only else k.DELIVERIES
        ids = self._redis.zrevrange(index, 0, limit - 1)
        pipe = self._redis.pipeline(transaction=False)
        for delivery_id in ids:
            pipe.hgetall(k.delivery(delivery_id))
        found = [Delivery.from_hash(d) for d in pipe.execute() if d.get("id")]
        if not failed_only:
            return found
        return [d for d in found if d.status == FAILED]

    def retry(self, delivery_id: str, now: datetime) -> bool:
        """Give a failed delivery a fresh schedule, starting now."""
        key = k.delivery(delivery_id)

        def write(pipe: redis.client.Pipeline) -> bool:
            if pipe.hget(key, "status") != FAILED:
                return False
            pipe.multi()
            pipe.hset(
                key,
                mapping={
                    "status": PENDING,
                    "attempts": 0,
                    "next_at": to_ms(now),
                    "failed_at": "",
                    "lease": "",
                },
            )
            pipe.zrem(k.DELIVERIES_FAILED, delivery_id)
            pipe.zadd(k.DELIVERIES_DUE, {delivery_id: to_ms(now)})
            return True

        return self._redis.transaction(write, key, value_from_callable=True)


def _stream_id(text: str) -> tuple[int, int]:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _entry(entry_id: str, fields: dict[str, str] | None) -> OutboxEntry:
    raw = (fields or {}).get("event", "")
    try:
        event = json.loads(raw)
    except (json.JSONDecodeError, TypeError):
        event = None
    readable = (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and isinstance(event.get("type"), str)
    )
    return OutboxEntry(entry_id, event if readable else None, raw)


#: The field holding what is shown of a subscription's target, by kind: an e-mail address is
#: shown whole (it is not a secret); a webhook URL only redacted.
_PLAIN_FIELD = {EMAIL: "target", WEBHOOK: "shown"}


def _subscription(data: dict[str, str]) -> Subscription:
    return Subscription(
        id=data["id"],
        kind=data["kind"],
        # the shown form (a webhook stored before URLs were sealed: its full URL, in `target`)
        target=data.get("shown") or data["target"],
        types=tuple(t for t in data.get("types", "").split(",") if t),
        created_at=from_ms(data["created_at"]),
        org=data.get("org", ""),
        server=data.get("server", ""),
        status=data.get("status", ACTIVE),
        disabled_reason=data.get("disabled_reason", ""),
        disabled_at=from_ms(data.get("disabled_at")),
    )
