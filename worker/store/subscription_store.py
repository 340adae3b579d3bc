"""Subscriptions in Redis, their webhook secrets and URLs sealed.

A webhook subscription's hash holds its URL sealed (`url`) and, in `shown`, only what may be
shown (subscriptions.redact_url). Subscriptions stored before URLs were sealed hold the full URL
in `target` and no `url`: they are read as they are, and seal_plain_urls (run when a worker
starts) seals them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
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

#: The field holding what is shown of a subscription's target, by kind: an e-mail address is
#: shown whole (it is not a secret); a webhook URL only redacted.
_PLAIN_FIELD = {EMAIL: "target", WEBHOOK: "shown"}


def _subscription_context(subscription_id: str, field: str = "secret") -> str:
    """What a sealed field of a subscription is bound to (the same as RedisStore's contexts,
    so `secrets reencrypt` re-seals it through k.SEALED_LOCATIONS)."""
    return f"{k.subscription(subscription_id)}#{field}"


class SubscriptionStore:
    """The subscription part of the notification store (see delivery_store.DeliveryStore)."""

    _redis: redis.Redis
    _keyring: Callable[[], Keyring]

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
        ids = sorted(self._redis.smembers(k.SUBSCRIPTIONS))
        return sum(self._seal_plain_url(subscription_id) for subscription_id in ids)

    def _seal_plain_url(self, subscription_id: str) -> int:
        key = k.subscription(subscription_id)

        def write(pipe: redis.client.Pipeline) -> int:
            kind, url, target = pipe.hmget(key, "kind", "url", "target")
            if kind != WEBHOOK or url or not target:
                return 0
            fields = {"url": self._seal_url(subscription_id, target), "shown": redact_url(target)}
            pipe.multi()
            pipe.hset(key, mapping=fields)
            pipe.hdel(key, "target")
            return 1

        return self._redis.transaction(write, key, value_from_callable=True)

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
