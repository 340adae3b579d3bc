"""Deliveries in memory, with the semantics of the Redis ones (delivery_store.py,
delivery_claims.py and their Lua scripts): a delivery is tried only by its lease holder, sits in
the due index by time or in its subscription's parked queue, keeps its attempts, and shares its
event body with the other deliveries of the event (a count of those still needing it).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from worker.notify.owners import is_owner
from worker.notify.records import CANCELLED, DELIVERED, FAILED, PENDING, Delivery, about_server
from worker.notify.subscriptions import Subscription
from worker.records import from_ms, to_ms
from worker.store.delivery_store import ERROR_KEPT_CHARS, FAILED_KEPT_MS, FINISHED_KEPT_MS
from worker.timefmt import format_rfc3339


@dataclass
class _Row:
    record: Delivery  # without its body (the event's, shared)
    lease: str = ""
    finished_ms: int = 0
    failed_ms: int = 0


class InMemoryDeliveries:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._rows: dict[str, _Row] = {}
        self._due: dict[str, int] = {}  # delivery id -> ms
        self._parked: dict[str, dict[str, int]] = {}  # subscription -> delivery id -> ms
        self._bodies: dict[str, list[Any]] = {}  # event id -> [body, deliveries needing it]

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
        created: list[str] = []
        with self._lock:
            for subscription in subscriptions:
                ident = delivery_id(event["id"], subscription.id)
                if ident in self._rows:
                    continue
                record = Delivery(
                    ident,
                    subscription.id,
                    event["id"],
                    event["type"],
                    "",
                    PENDING,
                    0,
                    from_ms(to_ms(now)),
                    next_at=from_ms(to_ms(now)),
                    owner=subscription.target if is_owner(subscription.id) else "",
                    server_id=about_server(event),
                )
                row = self._rows[ident] = _Row(record)
                if subscription.id in park:
                    self._parked.setdefault(subscription.id, {})[ident] = to_ms(now)
                else:
                    row.lease = f"{lease}:{ident}"
                    self._due[ident] = to_ms(now) + lease_ms
                body = json.dumps(event, separators=(",", ":"))
                self._bodies.setdefault(event["id"], [body, 0])[1] += 1
                created.append(ident)
        return created

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
        now_ms = to_ms(now)
        held = {s: n for s, n in (in_hand or {}).items() if n > 0}

        def room(subscription_id: str) -> int:
            return (
                limit if per_subscription <= 0 else per_subscription - held.get(subscription_id, 0)
            )

        claimed: list[tuple[str, str]] = []
        with self._lock:
            self._unpark(now_ms, room)
            for ident, score in sorted(self._due.items(), key=lambda item: (item[1], item[0])):
                if len(claimed) >= limit or score > now_ms:
                    break
                row = self._rows.get(ident)
                if row is None or row.record.status != PENDING:
                    del self._due[ident]
                    continue
                subscription_id = row.record.subscription_id
                if room(subscription_id) <= 0:
                    del self._due[ident]
                    row.lease = ""
                    self._parked.setdefault(subscription_id, {})[ident] = score
                    continue
                self._lease(row, now_ms, lease_ms, lease)
                held[subscription_id] = held.get(subscription_id, 0) + 1
                claimed.append((ident, subscription_id))
        return claimed

    def _unpark(self, now_ms: int, room: Callable[[str], int]) -> None:
        """Parked deliveries of subscriptions with attempts free go back to the due index."""
        for subscription_id, queue in list(self._parked.items()):
            head = sorted(queue.items(), key=lambda item: (item[1], item[0]))
            for ident, score in head[: max(room(subscription_id), 0)]:
                del queue[ident]
                self._due[ident] = min(score, now_ms)
            if not queue:
                del self._parked[subscription_id]

    def _lease(self, row: _Row, now_ms: int, lease_ms: int, lease: str) -> None:
        row.lease = f"{lease}:{row.record.id}"
        self._due[row.record.id] = now_ms + lease_ms

    def claim_parked(
        self, subscription_id: str, now: datetime, lease_ms: int, lease: str
    ) -> str | None:
        with self._lock:
            queue = self._parked.get(subscription_id, {})
            for ident, _ in sorted(queue.items(), key=lambda item: (item[1], item[0])):
                del queue[ident]
                row = self._rows.get(ident)
                if row is not None and row.record.status == PENDING:
                    self._lease(row, to_ms(now), lease_ms, lease)
                    return ident
            self._parked.pop(subscription_id, None)
            return None

    def begin_attempt(
        self, delivery_id: str, lease: str, now: datetime, lease_ms: int
    ) -> int | None:
        with self._lock:
            row = self._rows.get(delivery_id)
            if row is None or row.record.status != PENDING or row.lease != lease:
                return None
            self._due[delivery_id] = to_ms(now) + lease_ms
            return row.record.attempts

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        with self._lock:
            row = self._rows.get(delivery_id)
            if row is None:
                return None
            body = self._bodies.get(row.record.event_id, ["", 0])[0]
            return replace(row.record, event=body)

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
        with self._lock:
            row = self._rows.get(delivery.id)
            if row is None or row.record.status != PENDING or row.lease != lease:
                return False
            if row.record.attempts != attempt - 1 or row.record.event_id != delivery.event_id:
                return False
            row.lease = ""
            row.record = replace(
                row.record,
                attempts=attempt,
                last_status=status,
                last_error=error[:ERROR_KEPT_CHARS],
                last_attempt_at=format_rfc3339(now),
            )
            self._outcome(row, outcome, now, next_at)
            return True

    def _outcome(self, row: _Row, outcome: str, now: datetime, next_at: datetime | None) -> None:
        ident, text = row.record.id, format_rfc3339(now)
        if outcome in (DELIVERED, CANCELLED):
            row.record = replace(row.record, status=outcome, finished_at=text, next_at=None)
            row.finished_ms = to_ms(now)
            self._due.pop(ident, None)
            self._let_go_of_body(row.record.event_id)
        elif outcome == "retry":
            row.record = replace(row.record, next_at=next_at)
            self._due[ident] = to_ms(next_at) if next_at else 0
        else:
            row.record = replace(row.record, status=FAILED, finished_at=text, next_at=None)
            row.failed_ms = to_ms(now)
            self._due.pop(ident, None)

    def _let_go_of_body(self, event_id: str) -> None:
        body = self._bodies.get(event_id)
        if body is not None:
            body[1] -= 1
            if body[1] <= 0:
                del self._bodies[event_id]

    def deliveries(self, *, failed_only: bool = False, limit: int = 100) -> list[Delivery]:
        with self._lock:
            rows = [r for r in self._rows.values() if not failed_only or r.record.status == FAILED]
            if failed_only:
                rows.sort(key=lambda r: (r.failed_ms, r.record.id), reverse=True)
            else:
                rows.sort(key=lambda r: (to_ms(r.record.created_at), r.record.id), reverse=True)
            return [r.record for r in rows[:limit]]

    def retry(self, delivery_id: str, now: datetime) -> bool:
        with self._lock:
            row = self._rows.get(delivery_id)
            if row is None or row.record.status != FAILED:
                return False
            row.record = replace(
                row.record, status=PENDING, attempts=0, next_at=from_ms(to_ms(now)), finished_at=""
            )
            row.lease, row.failed_ms = "", 0
            self._due[delivery_id] = to_ms(now)
            return True

    def tidy_deliveries(self, now: datetime) -> None:
        """Finished deliveries go after FINISHED_KEPT_MS, failed ones after FAILED_KEPT_MS (with
        their share of the event body)."""
        now_ms = to_ms(now)
        with self._lock:
            for ident, row in list(self._rows.items()):
                if row.finished_ms and row.finished_ms <= now_ms - FINISHED_KEPT_MS:
                    del self._rows[ident]
                elif row.failed_ms and row.failed_ms <= now_ms - FAILED_KEPT_MS:
                    del self._rows[ident]
                    self._let_go_of_body(row.record.event_id)
