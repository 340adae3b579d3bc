"""Turning outbox entries into deliveries, and keeping deliveries moving.

One loop per worker process, all in one Redis consumer group, so any number can run:
  - new outbox entries become one delivery per matching subscription, leased and sent at once;
    an event about a server is stamped with the owners its rotation policy names
    (`data.owners`), who are also sent it by e-mail when SMTP is set (notify/owners.py);
  - entries a dead dispatcher read but never acknowledged are taken over (the sweeper), so an
    outgoing event recorded before a crash is delivered within a minute;
  - deliveries whose next attempt is due (a retry, or a lease whose holder died) are leased
    afresh and sent;
  - now and then, what is finished is tidied away.

Attempts are bounded per subscription (SubscriptionSlots): a receiver that never answers holds
at most PER_SUBSCRIPTION_ATTEMPTS of a process's delivery threads, and the others stay free for
everyone else. A delivery whose subscription has no attempt free is parked in Redis (durable,
pending, out of the due index), and an attempt that finishes goes on to the next one parked for
its subscription; the pump brings back what is parked for a subscription with attempts free.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import redis
import structlog

from worker.errors import TokenwardenError
from worker.notify.deliver import Deliverer
from worker.notify.owners import OWNERS_FIELD, owner_subscriptions, server_of, with_owners
from worker.notify.records import OutboxEntry
from worker.notify.store import NotificationStore
from worker.notify.subscriptions import Subscription

log = structlog.get_logger(__name__)

#: How long a delivery handed to the delivery threads may wait for one before another claim,
#: in ms: also how soon the deliveries of a worker that died are taken over. A claim that runs
#: out while still queued costs nothing but a wasted look: its attempt no longer holds the
#: lease, and does nothing. The attempt itself then holds a lease of its own.
QUEUE_LEASE_MS = 20_000

#: An outbox entry read but not acknowledged for this long is taken over, in ms.
STALE_ENTRY_MS = 30_000

#: How often stale outbox entries are looked for, due deliveries claimed, and the rest tidied.
SWEEP_EVERY_S = 10.0
PUMP_EVERY_S = 1.0
TIDY_EVERY_S = 600.0

#: Outbox entries read, and deliveries claimed, per round trip.
BATCH = 100

#: Attempts one subscription may have in hand (queued or running) per worker process.
PER_SUBSCRIPTION_ATTEMPTS = 2


def delivery_id(event_id: str, subscription_id: str) -> str:
    """The same event for the same subscription is always the same delivery."""
    digest = hashlib.sha256(f"{event_id}\x00{subscription_id}".encode()).hexdigest()
    return f"dlv_{digest[:20]}"


class SubscriptionSlots:
    """Attempts in hand per subscription in this process, at most `limit` each (None: no
    bound). Thread-safe: the delivery threads give back what the loop takes."""

    def __init__(self, limit: int | None = PER_SUBSCRIPTION_ATTEMPTS):
        self.limit = limit
        self._in_hand: Counter[str] = Counter()
        self._lock = threading.Lock()

    def take(self, subscription_id: str) -> bool:
        with self._lock:
            if self.limit is not None and self._in_hand[subscription_id] >= self.limit:
                return False
            self._in_hand[subscription_id] += 1
            return True

    def hold(self, subscription_id: str) -> None:
        """Count one the store already bounded (claim_due counts what is in hand)."""
        with self._lock:
            self._in_hand[subscription_id] += 1

    def give_back(self, subscription_id: str) -> None:
        with self._lock:
            self._in_hand[subscription_id] -= 1
            if self._in_hand[subscription_id] <= 0:
                del self._in_hand[subscription_id]

    def in_hand(self) -> dict[str, int]:
        with self._lock:
            return dict(self._in_hand)


class Dispatcher:
    def __init__(
        self,
        store: NotificationStore,
        clock: Callable[[], datetime],
        send: Callable[[str, str, str], None],
        consumer: str | None = None,
        capacity: Callable[[], int] = lambda: BATCH,
        slots: SubscriptionSlots | None = None,
        *,
        mail_owners: bool = False,
    ):
        self._store = store
        # Whether servers' owners are sent their events by e-mail (SMTP is set).
        self._mail_owners = mail_owners
        self._clock = clock
        self._send = send  # (delivery id, lease, subscription id), its slot taken
        self._capacity = capacity
        self._slots = slots or SubscriptionSlots(limit=None)
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        self._store.ensure_dispatch_group()

    def dispatch_new(self, block_ms: int = 1000) -> int:
        return self._fan_out(self._store.read_outbox(self.consumer, BATCH, block_ms))

    def sweep_outbox(self, min_idle_ms: int = STALE_ENTRY_MS) -> int:
        return self._fan_out(self._store.claim_stale_outbox(self.consumer, min_idle_ms, BATCH))

    def pump_due(self) -> int:
        room = min(BATCH, self._capacity())
        if room <= 0:
            return 0
        lease = self._lease()
        claimed = self._store.claim_due(
            self._clock(),
            QUEUE_LEASE_MS,
            room,
            lease,
            per_subscription=self._slots.limit or 0,
            in_hand=self._slots.in_hand(),
        )
        for delivery, subscription_id in claimed:
            self._slots.hold(subscription_id)
            self._send(delivery, f"{lease}:{delivery}", subscription_id)
        return len(claimed)

    def claim_next_parked(self, subscription_id: str) -> tuple[str, str] | None:
        """(delivery id, lease) of the next delivery parked for a subscription, leased now."""
        lease = self._lease()
        claimed = self._store.claim_parked(subscription_id, self._clock(), QUEUE_LEASE_MS, lease)
        return (claimed, f"{lease}:{claimed}") if claimed else None

    def tidy(self) -> None:
        self._store.tidy(self._clock())

    def recover(self) -> None:
        """After Redis lost the consumer group (a restart without persistence): make it."""
        self._store.ensure_dispatch_group()

    def _lease(self) -> str:
        return f"{self.consumer}:{uuid.uuid4().hex[:12]}"

    def _fan_out(self, entries: list[OutboxEntry]) -> int:
        if not entries:
            return 0
        subscriptions = self._store.subscriptions()
        owners = self._owners(entries)
        created = 0
        for entry in entries:
            if entry.event is None:
                self._store.dead_outbox_entry(entry, self._clock())
                log.error("outbox_entry_unreadable", entry=entry.entry_id)
                continue
            event = with_owners(entry.event, owners)
            created += self._dispatch(event, self._recipients(event, subscriptions))
        # Acknowledged only once its deliveries exist: a crash before this leaves the entry
        # pending, and the sweeper (here or elsewhere) dispatches it again, idempotently.
        self._store.ack_outbox([entry.entry_id for entry in entries])
        return created

    def _owners(self, entries: list[OutboxEntry]) -> dict[str, tuple[str, ...]]:
        """The owners in force of the servers the batch is about, read once for the batch."""
        servers = {s for e in entries if e.event is not None and (s := server_of(e.event))}
        return self._store.owners_for(servers) if servers else {}

    def _recipients(
        self, event: dict[str, Any], subscriptions: list[Subscription]
    ) -> list[Subscription]:
        """The subscriptions that want the event, then the owners it names (stamped by
        with_owners; by e-mail, when SMTP is set), but not an owner the event reaches by their
        own e-mail subscription."""
        wanted = [s for s in subscriptions if s.wants(event)]
        named = (event.get("data") or {}).get(OWNERS_FIELD) or []
        if self._mail_owners and named:
            wanted += owner_subscriptions(event, named, subscriptions, self._clock())
        return wanted

    def _dispatch(self, event: dict[str, Any], wanted: list[Subscription]) -> int:
        """Create the event's deliveries; send at once those whose subscription has an attempt
        free, park the others. Returns how many were created now."""
        now_ids = {s.id for s in wanted if self._slots.take(s.id)}
        lease = self._lease()
        try:
            new = set(
                self._store.create_deliveries(
                    event,
                    wanted,
                    delivery_id,
                    self._clock(),
                    QUEUE_LEASE_MS,
                    lease,
                    park={s.id for s in wanted} - now_ids,
                )
            )
        except BaseException:  # nothing was handed out: the slots are free again
            for subscription_id in now_ids:
                self._slots.give_back(subscription_id)
            raise
        for subscription_id in now_ids:
            ident = delivery_id(event["id"], subscription_id)
            if ident in new:
                self._send(ident, f"{lease}:{ident}", subscription_id)
            else:  # it existed already (dispatched before a crash): nothing to send
                self._slots.give_back(subscription_id)
        return len(new)


class DeliveryLoop:
    """The dispatcher's loop, on a thread of a worker process, and the threads that make the
    attempts. Attempts run here rather than through the broker: one hop less on the way to a
    receiver, and a delivery's durable record and lease already make it crash-safe."""

    name = "deliveries"

    def __init__(
        self,
        store: NotificationStore,
        deliverer: Deliverer,
        clock: Callable[[], datetime],
        threads: int,
    ):
        self._store = store
        self._deliverer = deliverer
        self._threads = threads
        self._pool = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="tokenwarden-deliver"
        )
        self._in_hand = 0
        self._lock = threading.Lock()
        self._slots = SubscriptionSlots()
        self.dispatcher = Dispatcher(
            store,
            clock,
            self._submit,
            capacity=self._capacity,
            slots=self._slots,
            mail_owners=deliverer.mails_owners,
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _capacity(self) -> int:
        """Deliveries the pump may claim now: no more than the threads can take soon."""
        with self._lock:
            return max(0, 2 * self._threads - self._in_hand)

    def _submit(self, delivery: str, lease: str, subscription_id: str) -> None:
        with self._lock:
            self._in_hand += 1
        self._pool.submit(self._attempts, delivery, lease, subscription_id)

    def _attempts(self, delivery: str, lease: str, subscription_id: str) -> None:
        """Attempt a delivery, then the ones parked for its subscription while this held its
        slot, one after another; the slot is given back when none is left."""
        try:
            handout: tuple[str, str] | None = (delivery, lease)
            while handout is not None:
                self._attempt(*handout)
                handout = None if self._stop.is_set() else self._next_parked(subscription_id)
        finally:
            self._slots.give_back(subscription_id)
            with self._lock:
                self._in_hand -= 1

    def _attempt(self, delivery: str, lease: str) -> None:
        try:
            self._deliverer.attempt(delivery, lease)
        except Exception:  # Redis trouble: the lease runs out and the pump tries again
            log.exception("delivery_attempt_failed", delivery=delivery)

    def _next_parked(self, subscription_id: str) -> tuple[str, str] | None:
        try:
            return self.dispatcher.claim_next_parked(subscription_id)
        except redis.RedisError:  # what is parked stays parked; the pump brings it back
            log.warning("delivery_parked_claim_failed", subscription=subscription_id)
            return None

    def start(self) -> None:
        self._seal_plain_urls()
        self._thread = threading.Thread(
            target=self._run, name="tokenwarden-deliveries", daemon=True
        )
        self._thread.start()

    def _seal_plain_urls(self) -> None:
        """Subscriptions stored before webhook URLs were sealed are sealed now (until then
        they are read as they are, so a failure here only postpones it)."""
        try:
            sealed = self._store.seal_plain_urls()
        except (TokenwardenError, redis.RedisError) as exc:
            log.warning("subscription_urls_not_sealed", error=str(exc))
            return
        if sealed:
            log.info("subscription_urls_sealed", subscriptions=sealed)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        # Attempts in progress finish (each within the webhook timeout); queued ones are left
        # to their leases.
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self) -> None:
        last = {"sweep": 0.0, "pump": 0.0, "tidy": time.monotonic()}
        dispatcher = self.dispatcher
        periodic = (
            ("pump", PUMP_EVERY_S, dispatcher.pump_due),
            ("sweep", SWEEP_EVERY_S, dispatcher.sweep_outbox),
            ("tidy", TIDY_EVERY_S, dispatcher.tidy),
        )
        while not self._stop.is_set():
            try:
                dispatcher.dispatch_new(block_ms=200)
                now = time.monotonic()
                for name, every, job in periodic:
                    if now - last[name] >= every:
                        job()
                        last[name] = now
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    dispatcher.recover()
                else:
                    log.warning("delivery_loop_redis_error", error=str(exc))
                    self._stop.wait(1.0)
            except redis.RedisError as exc:
                log.warning("delivery_loop_redis_error", error=str(exc))
                self._stop.wait(1.0)
            except Exception:
                log.exception("delivery_loop_failed")
                self._stop.wait(1.0)
