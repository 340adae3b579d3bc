"""One delivery attempt: take the lease, send, record the outcome and, on failure, when to try
again. Only the holder of a delivery's lease attempts it: duplicate messages do nothing."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import datetime

import structlog

from worker.config import NotifySettings
from worker.notify.email import compose, send_email
from worker.notify.owners import is_owner, owner_named, owner_subscription
from worker.notify.records import CANCELLED, DELIVERED, FAILED, Delivery
from worker.notify.schedule import next_attempt_at
from worker.notify.store import NotificationStore
from worker.notify.subscriptions import ACTIVE, EMAIL, Subscription
from worker.notify.webhook import AttemptResult, post_event

log = structlog.get_logger(__name__)

#: Extra time, beyond the send timeout, that an attempt keeps its delivery leased, in seconds.
LEASE_MARGIN_S = 10

#: The most round trips an e-mail attempt makes (connect, EHLO, STARTTLS, EHLO, AUTH, MAIL,
#: RCPT, DATA, the message, QUIT), each allowed the timeout.
SMTP_ROUND_TRIPS = 10


class Deliverer:
    def __init__(
        self,
        store: NotificationStore,
        settings: NotifySettings,
        clock: Callable[[], datetime],
        rng: random.Random | None = None,
    ):
        self._store = store
        self._settings = settings
        self._clock = clock
        self._rng = rng or random.Random()

    def attempt(self, delivery_id: str, lease: str) -> str | None:
        """Try one delivery once; returns the outcome recorded, or None when there was nothing
        to do (finished, or the lease is someone else's: a duplicate or late message)."""
        now = self._clock()
        timeout_s = self._settings.webhook_timeout_s
        made = self._store.begin_attempt(
            delivery_id, lease, now, int((timeout_s + LEASE_MARGIN_S) * 1000)
        )
        delivery = self._store.get_delivery(delivery_id) if made is not None else None
        if delivery is None:
            return None
        subscription, gone = self._subscription_of(delivery)
        if subscription is not None and subscription.kind == EMAIL:
            # An SMTP session is several round trips, each allowed the timeout (a webhook has
            # one deadline in all): its lease outlasts the longest, so no other worker sends
            # it again meanwhile. (A webhook's stays short: one cut off is retried soon.)
            email_lease_s = timeout_s * SMTP_ROUND_TRIPS + LEASE_MARGIN_S
            if (
                self._store.begin_attempt(delivery_id, lease, now, int(email_lease_s * 1000))
                is None
            ):
                return None
        if subscription is None or subscription.status != ACTIVE:
            reason = gone or f"the subscription is disabled ({subscription.disabled_reason})"
            result = AttemptResult(False, "cancelled", reason, 0.0)
            return self._record(delivery, lease, subscription, result, now, cancel=True)
        result = self._send(subscription, delivery, now)
        if result.gone:
            self._store.disable_subscription(subscription.id, "the receiver answered 410 Gone", now)
            log.warning(
                "subscription_disabled",
                subscription=subscription.id,
                target=subscription.shown,
                reason="the receiver answered 410 Gone",
            )
        return self._record(delivery, lease, subscription, result, now, final=result.gone)

    @property
    def mails_owners(self) -> bool:
        """Whether servers' owners are sent their events by e-mail: SMTP is set."""
        return self._settings.smtp is not None

    def _subscription_of(self, delivery: Delivery) -> tuple[Subscription | None, str]:
        """The delivery's subscription, or None and why there is none. An owner's (synthetic)
        goes to the address the server's policy named when the event was dispatched (kept in
        the delivery, and checked against its id): the owner then is told, even if the
        policy changed before the attempt, so a handover loses no notice."""
        if not is_owner(delivery.subscription_id):
            found = self._store.get_subscription(delivery.subscription_id)
            return found, "" if found else "the subscription was removed"
        address = owner_named((delivery.owner,), delivery.subscription_id)
        if address is None:
            return None, "the owner's address is missing from the delivery"
        return owner_subscription(address, delivery.event_type, delivery.created_at), ""

    def _send(self, subscription: Subscription, delivery: Delivery, now: datetime) -> AttemptResult:
        if not delivery.event:
            return AttemptResult(False, "error", "the stored event body is missing", 0.0)
        try:
            if subscription.kind == EMAIL:
                smtp = self._settings.smtp
                if smtp is None:
                    return AttemptResult(
                        False, "error", "no SMTP server is configured (TOKENWARDEN_SMTP_HOST)", 0.0
                    )
                message = compose(
                    json.loads(delivery.event),
                    smtp.sender,
                    subscription.target,
                    owner=is_owner(subscription.id),
                )
                return send_email(smtp, message, self._settings.webhook_timeout_s)
            secret = self._store.open_secret(subscription)
            return post_event(
                self._store.open_target(subscription),
                secret,
                delivery.event_id,
                delivery.event,
                now,
                self._settings.webhook_timeout_s,
                self._settings.ca_bundle,
            )
        except Exception as exc:  # whatever it is, it is a failed attempt, never a lost one
            log.exception("delivery_send_failed", subscription=subscription.id)
            return AttemptResult(False, "error", f"{type(exc).__name__} while sending", 0.0)

    def _record(
        self,
        delivery: Delivery,
        lease: str,
        subscription: Subscription | None,
        result: AttemptResult,
        now: datetime,
        *,
        final: bool = False,
        cancel: bool = False,
    ) -> str:
        attempt = delivery.attempts + 1
        outcome, next_at = self._outcome(result, attempt, now, final=final, cancel=cancel)
        recorded = self._store.record_attempt(
            delivery,
            lease=lease,
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
            target=subscription.shown if subscription else None,
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

    def _outcome(
        self, result: AttemptResult, attempt: int, now: datetime, *, final: bool, cancel: bool
    ) -> tuple[str, datetime | None]:
        """What attempt number `attempt` comes to, and when the next one is due (if any)."""
        if result.ok:
            return DELIVERED, None
        if cancel:
            return CANCELLED, None
        next_at = None
        if not final:
            settings = self._settings
            next_at = next_attempt_at(
                attempt, now, settings.retry_schedule_s, settings.retry_jitter, self._rng
            )
        return ("retry", next_at) if next_at else (FAILED, None)
