"""What the notification side needs of a store: subscriptions, the outbox read through a
consumer group, deliveries with their leases, and the owners each server's rotation policy
names (notify/owners.py). store.delivery_store.DeliveryStore is the Redis implementation;
records in and out are plain values (notify/records.py, notify/subscriptions.py), so another
implementation (in memory) needs nothing of Redis.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Any, Protocol

from worker.notify.records import Delivery, OutboxEntry
from worker.notify.subscriptions import Subscription


class SubscriptionStore(Protocol):
    def add_subscription(self, subscription: Subscription, secret: str | None) -> None: ...

    def subscriptions(self) -> list[Subscription]: ...

    def get_subscription(self, subscription_id: str) -> Subscription | None: ...

    def open_secret(self, subscription: Subscription) -> str:
        """The webhook secret; LookupError when it has none."""
        ...

    def open_target(self, subscription: Subscription) -> str:
        """The full webhook URL or the e-mail address; LookupError when it has none."""
        ...

    def seal_plain_urls(self) -> int: ...

    def remove_subscription(self, subscription_id: str) -> bool: ...

    def disable_subscription(self, subscription_id: str, reason: str, now: datetime) -> None: ...

    def enable_subscription(self, subscription_id: str) -> None: ...


class OutboxStore(Protocol):
    def ensure_dispatch_group(self) -> None: ...

    def read_outbox(self, consumer: str, count: int, block_ms: int) -> list[OutboxEntry]: ...

    def claim_stale_outbox(
        self, consumer: str, min_idle_ms: int, count: int
    ) -> list[OutboxEntry]: ...

    def ack_outbox(self, entry_ids: list[str]) -> None: ...

    def dead_outbox_entry(self, entry: OutboxEntry, now: datetime) -> None: ...


class DeliveryRecords(Protocol):
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
        """The ids of the deliveries created now (the others existed)."""
        ...

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
        """(delivery id, subscription id) of the due deliveries leased now."""
        ...

    def claim_parked(
        self, subscription_id: str, now: datetime, lease_ms: int, lease: str
    ) -> str | None: ...

    def begin_attempt(
        self, delivery_id: str, lease: str, now: datetime, lease_ms: int
    ) -> int | None:
        """The attempts made so far if `lease` holds the pending delivery, else None."""
        ...

    def get_delivery(self, delivery_id: str) -> Delivery | None: ...

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
    ) -> bool: ...

    def deliveries(self, *, failed_only: bool = False, limit: int = 100) -> list[Delivery]: ...

    def retry(self, delivery_id: str, now: datetime) -> bool: ...

    def tidy(self, now: datetime) -> None: ...


class ServerOwners(Protocol):
    def owners_for(self, server_ids: Collection[str]) -> dict[str, tuple[str, ...]]:
        """The owners in force (rotation policy) of each server that exists, by id."""
        ...


class NotificationStore(SubscriptionStore, OutboxStore, DeliveryRecords, ServerOwners, Protocol):
    """Everything the dispatcher, the deliverer and the CLI's services use."""
