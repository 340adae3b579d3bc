"""One delivery attempt: send, then record the outcome and, on failure, when to try again."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import structlog

from worker.notify.config import NotifySettings
from worker.notify.email import compose, send_email
from worker.notify.schedule import next_attempt_at
from worker.notify.subscriptions import ACTIVE, EMAIL, Subscription
from worker.notify.webhook import AttemptResult, http_client, post_event
from worker.store.delivery_store import PENDING, Delivery, DeliveryStore

log = structlog.get_logger(__name__)

#: Extra time, beyond the send timeout, that an attempt keeps its delivery leased, in seconds.
LEASE_MARGIN_S = 30


class Deliverer:
    def __init__(
        self,
        store: DeliveryStore,
        settings: NotifySettings,
        clock: Callable[[], datetime],
        rng: random.Random | None = None,
    ):
        self._store = store
        self._settings = settings
        self._clock = clock
        self._rng = rng or random.Random()
        self.http = http_client(settings.webhook_timeout_s)

    def attempt(self, delivery_id: str) -> str | None:
        """Try one delivery once; returns the outcome recorded, or None if there was nothing to
        do (already delivered or failed, or another attempt got there first)."""
        delivery = self._store.get_delivery(delivery_id)
        if delivery is None or delivery.status != PENDING:
            return None
        now = self._clock()
        subscription = self._store.get_subscription(delivery.subscription_id)
        if subscription is None or subscription.status != ACTIVE:
            reason = (
                "the subscription was removed"
                if subscription is None
                else f"the subscription is disabled ({subscription.disabled_reason})"
            )
            result = AttemptResult(False, "skipped", reason, 0.0)
            return self._record(delivery, subscription, result, now, final=True)
        self._store.extend_lease(
            delivery.id, now + timedelta(seconds=self._settings.webhook_timeout_s + LEASE_MARGIN_S)
        )
        result = self._send(subscription, delivery, now)
        if result.gone:
            self._store.disable_subscription(subscription.id, "the receiver answered 410 Gone", now)
            log.warning(
                "subscription_disabled",
                subscription=subscription.id,
                host=_host(subscription),
                reason="the receiver answered 410 Gone",
            )
        return self._record(delivery, subscription, result, now, final=result.gone)

    def _send(self, subscription: Subscription, delivery: Delivery, now: datetime) -> AttemptResult:
        if subscription.kind == EMAIL:
            smtp = self._settings.smtp
            if smtp is None:
                return AttemptResult(
                    False, "error", "no SMTP server is configured (TOKENWARDEN_SMTP_HOST)", 0.0
                )
            import json

            message = compose(json.loads(delivery.event), smtp.sender, subscription.target)
            return send_email(smtp, message, self._settings.webhook_timeout_s)
        secret = self._store.open_secret(subscription)
        return post_event(
            self.http, subscription.target, secret, delivery.event_id, delivery.event, now
        )

    def _record(
        self,
        delivery: Delivery,
        subscription: Subscription | None,
        result: AttemptResult,
        now: datetime,
        *,
        final: bool,
    ) -> str:
        attempt = delivery.attempts + 1
        next_at = None
        if result.ok:
            outcome = "delivered"
        else:
            next_at = (
                None
                if final
                else next_attempt_at(
                    attempt,
                    now,
                    self._settings.retry_schedule_s,
                    self._settings.retry_jitter,
                    self._rng,
                )
            )
            outcome = "retry" if next_at else "failed"
        recorded = self._store.record_attempt(
            delivery,
            attempt=attempt,
            outcome=outcome,
            status=result.status,
            error=result.error,
            now=now,
            next_at=next_at,
            latency_ms=result.latency_ms,
        )
        log.info(
            "delivery_attempt",
            subscription=delivery.subscription_id,
            host=_host(subscription) if subscription else None,
            event_id=delivery.event_id,
            event_type=delivery.event_type,
            attempt=attempt,
            status=result.status,
            latency_ms=round(result.latency_ms, 1),
            outcome=outcome,
            error=result.error or None,
            next_attempt_at=next_at.isoformat() if next_at else None,
            recorded=recorded,
        )
        return outcome

    def close(self) -> None:
        self.http.close()


def _host(subscription: Subscription) -> str:
    """Where a delivery went, for logs: the host only (some URLs carry secrets in the path)."""
    if subscription.kind == EMAIL:
        return subscription.target.rsplit("@", 1)[-1]
    return urlsplit(subscription.target).hostname or "?"
