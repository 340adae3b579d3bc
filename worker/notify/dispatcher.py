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
from datetime import datetime

import redis
import structlog

from worker.notify.subscriptions import Subscription
from worker.store.delivery_store import DeliveryStore, OutboxEntry

log = structlog.get_logger(__name__)

#: How long a delivery handed to a worker may wait for it before another claim, in ms. Long
#: enough for a busy queue; the attempt itself then holds a lease of its own.
QUEUE_LEASE_MS = 5 * 60_000

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
    ):
        self._store = store
        self._clock = clock
        self._send = send
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        self._store.ensure_dispatch_group()

    def dispatch_new(self, block_ms: int = 1000) -> int:
        return self._fan_out(self._store.read_outbox(self.consumer, BATCH, block_ms))

    def sweep_outbox(self, min_idle_ms: int = STALE_ENTRY_MS) -> int:
        return self._fan_out(self._store.claim_stale_outbox(self.consumer, min_idle_ms, BATCH))

    def pump_due(self) -> int:
        lease = self._lease()
        claimed = self._store.claim_due(self._clock(), QUEUE_LEASE_MS, BATCH, lease)
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
    """The dispatcher's loop, on a thread of a worker process."""

    name = "deliveries"

    def __init__(self, dispatcher: Dispatcher):
        self._dispatcher = dispatcher
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="tokenwarden-deliveries", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        last = {"sweep": 0.0, "pump": 0.0, "tidy": time.monotonic()}
        periodic = (
            ("pump", PUMP_EVERY_S, self._dispatcher.pump_due),
            ("sweep", SWEEP_EVERY_S, self._dispatcher.sweep_outbox),
            ("tidy", TIDY_EVERY_S, self._dispatcher.tidy),
        )
        while not self._stop.is_set():
            try:
                self._dispatcher.dispatch_new(block_ms=200)
                now = time.monotonic()
                for name, every, job in periodic:
                    if now - last[name] >= every:
                        job()
                        last[name] = now
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    self._dispatcher.recover()
                else:
                    log.warning("delivery_loop_redis_error", error=str(exc))
                    self._stop.wait(1.0)
            except redis.RedisError as exc:
                log.warning("delivery_loop_redis_error", error=str(exc))
                self._stop.wait(1.0)
            except Exception:
                log.exception("delivery_loop_failed")
                self._stop.wait(1.0)
