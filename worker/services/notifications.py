"""Subscriptions and deliveries, as the CLI uses them (through notify.store.NotificationStore).
Refusals are errors of worker.errors with a message a user can act on."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from events.cloudevent import outgoing_event
from worker.config import NotifySettings
from worker.errors import Conflict, InvalidInput, NotFound
from worker.notify.email import compose, send_email
from worker.notify.owners import is_owner
from worker.notify.records import FAILED
from worker.notify.store import NotificationStore
from worker.notify.subscriptions import ACTIVE, EMAIL, Subscription
from worker.notify.webhook import AttemptResult, post_event

#: The type of the event `subscriptions test` sends.
TEST_EVENT_TYPE = "tokenwarden.subscription.test"


def add_subscription(
    store: NotificationStore, subscription: Subscription, secret: str | None
) -> None:
    store.add_subscription(subscription, secret)


def subscriptions(store: NotificationStore) -> list[Subscription]:
    return store.subscriptions()


def subscription(store: NotificationStore, subscription_id: str) -> Subscription:
    found = store.get_subscription(subscription_id)
    if found is None:
        raise _no_subscription(subscription_id)
    return found


def full_target(store: NotificationStore, subscription: Subscription) -> str:
    """The webhook URL in full (its path or query may hold a secret), or the e-mail address."""
    return store.open_target(subscription)


def remove_subscription(store: NotificationStore, subscription_id: str) -> None:
    if not store.remove_subscription(subscription_id):
        raise _no_subscription(subscription_id)


def enable_subscription(store: NotificationStore, subscription_id: str) -> None:
    subscription(store, subscription_id)
    store.enable_subscription(subscription_id)


def send_test_event(
    store: NotificationStore,
    settings: NotifySettings,
    subscription: Subscription,
    event_id: str,
    now: datetime,
) -> AttemptResult:
    """Send a signed test event to a subscription now, outside the delivery records."""
    event = outgoing_event(
        TEST_EVENT_TYPE,
        event_id=event_id,
        subject="test",
        time=now,
        data={"subscription": subscription.id, "message": "a test from tokenwarden"},
    )
    if subscription.kind == EMAIL:
        if settings.smtp is None:
            raise InvalidInput("TOKENWARDEN_SMTP_HOST is not set; e-mail cannot be sent")
        message = compose(event, settings.smtp.sender, subscription.target)
        return send_email(settings.smtp, message, settings.webhook_timeout_s)
    return post_event(
        store.open_target(subscription),
        store.open_secret(subscription),
        event["id"],
        json.dumps(event, separators=(",", ":")),
        now,
        settings.webhook_timeout_s,
        settings.ca_bundle,
    )


def deliveries(store: NotificationStore, *, failed_only: bool, limit: int) -> list[dict[str, Any]]:
    """The newest deliveries, described, each with its subscription's target as shown (an
    owner's: the address it was made for)."""
    found = store.deliveries(failed_only=failed_only, limit=limit)
    targets = {s.id: s.shown for s in store.subscriptions()} if found else {}
    return [
        {**d.describe(), "target": d.owner or targets.get(d.subscription_id, "(removed)")}
        for d in found
    ]


def retry_delivery(store: NotificationStore, delivery_id: str, now: datetime) -> None:
    """Give a failed delivery a fresh retry schedule, starting now."""
    delivery = store.get_delivery(delivery_id)
    if delivery is None:
        raise NotFound(
            f"no delivery {delivery_id!r}; `tokenwarden deliveries list --failed` "
            "shows the failed ones"
        )
    if not is_owner(delivery.subscription_id):  # an owner's: the attempt asks the policy
        subscribed = store.get_subscription(delivery.subscription_id)
        if subscribed is None or subscribed.status != ACTIVE:
            why = "was removed" if subscribed is None else "is disabled (`subscriptions enable`)"
            raise Conflict(
                f"the subscription of delivery {delivery_id} {why}; it cannot be retried"
            )
    if not store.retry(delivery_id, now):
        raise Conflict(
            f"delivery {delivery_id} is {delivery.status}, not {FAILED}; only failed "
            "deliveries are retried by hand"
        )


def _no_subscription(subscription_id: str) -> NotFound:
    return NotFound(
        f"no subscription {subscription_id!r}; `tokenwarden subscriptions list` shows them"
    )
