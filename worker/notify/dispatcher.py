"""Turning outbox entries into deliveries, and keeping deliveries moving.

One loop per worker process, all in one Redis consumer group, so any number can run:
  - new outbox entries become one delivery per matching subscription, leased and sent at once;
  - entries a dead dispatcher read but never acknowledged are taken over (the sweeper), so an
    outgoing event recorded before a crash is delivered within a minute;
  - deliveries whose next attempt is due (a retry, or a lease whose holder died) are leased
    afresh and sent;
  - now and then, what is finished is tidied away.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import redis
import structlog

from worker.notify.deliver import Deliverer
from worker.notify.subscriptions import Subscription
from worker.store.delivery_store import DeliveryStore, OutboxEntry

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


def delivery_id(event_id: str, subscription_id: str) -> str:
    """The same event for the same subscription is always the same delivery."""
    digest = hashlib.sha256(f"{event_id}\x00{subscription_id}".encode()).hexdigest()
    return f"dlv_{digest[:20]}"


class Dispatcher:
    def __init__(
        self,
        store: DeliveryStore,
        clock: Callable[[], datetime],
        send: Callable[[str, str], None],
        consumer: str | None = None,
        capacity: Callable[[], int] = lambda: BATCH,
    ):
        self._store = store
        self._clock = clock
        self._send = send
        self._capacity = capacity
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
        claimed = self._store.claim_due(self._clock(), QUEUE_LEASE_MS, room, lease)
        for delivery in claimed:
            self._send(delivery, f"{lease}:{delivery}")
        return len(claimed)

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
        created = 0
        for entry in entries:
            if entry.event is None:
                self._store.dead_outbox_entry(entry, self._clock())
                log.error("outbox_entry_unreadable", entry=entry.entry_id)
                continue
            wanted: list[Subscription] = [s for s in subscriptions if s.wants(entry.event)]
            lease = self._lease()
            for new in self._store.create_deliveries(
                entry.event, wanted, delivery_id, self._clock(), QUEUE_LEASE_MS, lease
            ):
                self._send(new, f"{lease}:{new}")
                created += 1
        # Acknowledged only once its deliveries exist: a crash before this leaves the entry
        # pending, and the sweeper (here or elsewhere) dispatches it again, idempotently.
        self._store.ack_outbox([entry.entry_id for entry in entries])
        return created


class DeliveryLoop:
    """The dispatcher's loop, on a thread of a worker process, and the threads that make the
    attempts. Attempts run here rather than through the broker: one hop less on the way to a
    receiver, and a delivery's durable record and lease already make it crash-safe."""

    name = "deliveries"

    def __init__(
        self,
        store: DeliveryStore,
        deliverer: Deliverer,
        clock: Callable[[], datetime],
        threads: int,
    ):
        self._deliverer = deliverer
        self._threads = threads
        self._pool = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="tokenwarden-deliver"
        )
        self._in_hand = 0
        self._lock = threading.Lock()
        self.dispatcher = Dispatcher(store, clock, self._submit, capacity=self._capacity)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _capacity(self) -> int:
        """Deliveries the pump may claim now: no more than the threads can take soon."""
        with self._lock:
            return max(0, 2 * self._threads - self._in_hand)

    def _submit(self, delivery: str, lease: str) -> None:
        with self._lock:
            self._in_hand += 1
        self._pool.submit(self._attempt, delivery, lease)

    def _attempt(self, delivery: str, lease: str) -> None:
        try:
            self._deliverer.attempt(delivery, lease)
        except Exception:  # Redis trouble: the lease runs out and the pump tries again
            log.exception("delivery_attempt_failed", delivery=delivery)
        finally:
            with self._lock:
                self._in_hand -= 1

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="tokenwarden-deliveries", daemon=True
        )
        self._thread.start()

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
