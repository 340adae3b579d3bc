"""The notification store in memory (notify.store.NotificationStore): subscriptions, their
webhook secrets and URLs sealed with the keyring as in Redis (subscription_store.py), and the
outbox the in-memory event store writes (MemoryState.outbox), read through one consumer group
as the Redis stream is (outbox_store.py). Deliveries: memory_deliveries.py. The contract suite
(tests/contract/test_notification_store_contract.py) runs against this and DeliveryStore.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from datetime import datetime

from worker.crypto.sealing import Keyring
from worker.errors import NotFound
from worker.notify.records import OutboxEntry
from worker.notify.subscriptions import ACTIVE, DISABLED, WEBHOOK, Subscription
from worker.records import to_ms
from worker.store import keys as k
from worker.store.memory import InMemoryStore
from worker.store.memory_deliveries import InMemoryDeliveries
from worker.store.outbox_store import OUTBOX_KEPT_MS, _entry


@dataclass
class _Sealed:
    subscription: Subscription  # its target is the shown form, as read back from Redis
    secret: str | None = None
    url: str | None = None


@dataclass
class _Group:
    """The dispatch consumer group: the last entry handed out, and the ones pending (entry
    number -> (consumer, when handed out, monotonic ms))."""

    last: int = 0
    pending: dict[int, tuple[str, float]] = field(default_factory=dict)


def _context(subscription_id: str, field_name: str) -> str:
    return f"{k.subscription(subscription_id)}#{field_name}"


def _now_ms() -> float:
    return time.monotonic() * 1000


class InMemoryNotificationStore(InMemoryDeliveries):
    def __init__(self, events: InMemoryStore, keyring: Callable[[], Keyring]):
        super().__init__()
        self._events = events
        self._state = events.state  # the outbox its applied decisions write
        self._keyring = keyring
        self._subscriptions: dict[str, _Sealed] = {}
        self._group: _Group | None = None

    # ---- subscriptions -----------------------------------------------------------------------

    def add_subscription(self, subscription: Subscription, secret: str | None) -> None:
        sealed = _Sealed(replace(subscription, target=subscription.shown))
        if secret is not None:
            sealed.secret = self._keyring().seal(
                secret.encode(), _context(subscription.id, "secret")
            )
        if subscription.kind == WEBHOOK:
            url = subscription.target.encode()
            sealed.url = self._keyring().seal(url, _context(subscription.id, "url"))
        with self._lock:
            self._subscriptions[subscription.id] = sealed

    def subscriptions(self) -> list[Subscription]:
        with self._lock:
            return [self._subscriptions[i].subscription for i in sorted(self._subscriptions)]

    def get_subscription(self, subscription_id: str) -> Subscription | None:
        with self._lock:
            sealed = self._subscriptions.get(subscription_id)
            return sealed.subscription if sealed else None

    def open_secret(self, subscription: Subscription) -> str:
        sealed = self._subscriptions.get(subscription.id)
        if sealed is None or not sealed.secret:
            raise NotFound(
                f"subscription {subscription.id} has no secret; remove it and add it again "
                "(`tokenwarden subscriptions remove`, then `add`)"
            )
        context = _context(subscription.id, "secret")
        return self._keyring().open(sealed.secret, context).decode()

    def open_target(self, subscription: Subscription) -> str:
        if subscription.kind != WEBHOOK:
            return subscription.target
        sealed = self._subscriptions.get(subscription.id)
        if sealed is None or not sealed.url:
            raise NotFound(
                f"subscription {subscription.id} has no URL; remove it and add it again "
                "(`tokenwarden subscriptions remove`, then `add`)"
            )
        return self._keyring().open(sealed.url, _context(subscription.id, "url")).decode()

    def seal_plain_urls(self) -> int:
        return 0  # nothing here was ever stored unsealed

    def remove_subscription(self, subscription_id: str) -> bool:
        with self._lock:
            return self._subscriptions.pop(subscription_id, None) is not None

    def disable_subscription(self, subscription_id: str, reason: str, now: datetime) -> None:
        self._change(subscription_id, status=DISABLED, disabled_reason=reason, disabled_at=now)

    def enable_subscription(self, subscription_id: str) -> None:
        self._change(subscription_id, status=ACTIVE, disabled_reason="", disabled_at=None)

    def _change(self, subscription_id: str, **fields: object) -> None:
        with self._lock:
            sealed = self._subscriptions.get(subscription_id)
            if sealed is not None:
                sealed.subscription = replace(sealed.subscription, **fields)

    # ---- the owners of servers (their rotation policies) -----------------------------------

    def owners_for(self, server_ids: Collection[str]) -> dict[str, tuple[str, ...]]:
        servers = list(self._events.servers_by_id(set(server_ids)).values())
        return {
            i: found.owners for i, found in self._events.policies.effective_for(servers).items()
        }

    # ---- the outbox --------------------------------------------------------------------------

    def ensure_dispatch_group(self) -> None:
        with self._lock:
            if self._group is None:
                self._group = _Group()

    def read_outbox(self, consumer: str, count: int, block_ms: int) -> list[OutboxEntry]:
        """New entries for `consumer` (never blocks: nothing else writes while it would wait)."""
        with self._lock, self._state.lock:
            group = self._require_group()
            fresh = [n for n in self._state.outbox if n > group.last][:count]
            for number in fresh:
                group.pending[number] = (consumer, _now_ms())
            if fresh:
                group.last = fresh[-1]
            return [self._entry(n) for n in fresh]

    def claim_stale_outbox(self, consumer: str, min_idle_ms: int, count: int) -> list[OutboxEntry]:
        with self._lock, self._state.lock:
            group = self._require_group()
            now = _now_ms()
            stale = [n for n, (_, at) in sorted(group.pending.items()) if now - at >= min_idle_ms]
            for number in stale[:count]:
                group.pending[number] = (consumer, now)
            return [self._entry(n) for n in stale[:count] if n in self._state.outbox]

    def ack_outbox(self, entry_ids: list[str]) -> None:
        with self._lock:
            group = self._require_group()
            for entry_id in entry_ids:
                group.pending.pop(int(entry_id.partition("-")[0]), None)

    def dead_outbox_entry(self, entry: OutboxEntry, now: datetime) -> None:
        """Into the dead letters of the event store (one stream in Redis too)."""
        reason = "an outbox entry is not a readable event"
        self._events.events.record_dead(entry.raw[:4096], reason, now, entry.entry_id)

    def tidy(self, now: datetime) -> None:
        self.tidy_outbox(now)
        self.tidy_deliveries(now)

    def tidy_outbox(self, now: datetime) -> None:
        """Forget the entries, oldest first, written more than OUTBOX_KEPT_MS ago and dispatched
        (handed out and acknowledged), up to the first that is not (as XTRIM MINID does)."""
        with self._lock, self._state.lock:
            state, group = self._state, self._group
            for number in list(state.outbox):
                young = state.outbox_written[number] > to_ms(now) - OUTBOX_KEPT_MS
                unread = group is None or number > group.last
                if young or unread or number in group.pending:
                    break
                del state.outbox[number], state.outbox_written[number]

    def _require_group(self) -> _Group:
        if self._group is None:  # as Redis answers NOGROUP
            raise NotFound("the dispatch group does not exist; ensure_dispatch_group first")
        return self._group

    def _entry(self, number: int) -> OutboxEntry:
        return _entry(f"{number}-0", {"event": self._state.outbox.get(number, "")})


__all__ = ["InMemoryNotificationStore"]
