"""The outbox in Redis, read through one consumer group by every dispatcher: new entries,
entries a dead dispatcher never acknowledged, and the tidying of what was dispatched."""

from __future__ import annotations

import json
from datetime import datetime

import redis

from worker.notify.records import OutboxEntry
from worker.records import to_ms
from worker.store import keys as k
from worker.timefmt import format_rfc3339

#: Consumer group that turns outbox entries into deliveries.
DISPATCH_GROUP = "dispatch"

#: How long outgoing events stay in the outbox once dispatched, in ms (for inspection).
OUTBOX_KEPT_MS = 86_400_000

#: A dispatcher consumer silent this long, with nothing pending, is forgotten, in ms.
IDLE_CONSUMER_MS = 3_600_000

#: Entries kept in the dead-letter stream, about.
DEAD_KEPT = 10_000


class OutboxStore:
    """The outbox part of the notification store (see delivery_store.DeliveryStore)."""

    _redis: redis.Redis

    def ensure_dispatch_group(self) -> None:
        try:
            self._redis.xgroup_create(k.OUTBOX, DISPATCH_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read_outbox(self, consumer: str, count: int, block_ms: int) -> list[OutboxEntry]:
        answer = self._redis.xreadgroup(
            DISPATCH_GROUP, consumer, {k.OUTBOX: ">"}, count=count, block=block_ms
        )
        return [
            _entry(entry_id, fields) for _, entries in answer or [] for entry_id, fields in entries
        ]

    def claim_stale_outbox(self, consumer: str, min_idle_ms: int, count: int) -> list[OutboxEntry]:
        """Entries another dispatcher read but never acknowledged (it died): take them over."""
        answer = self._redis.xautoclaim(
            k.OUTBOX, DISPATCH_GROUP, consumer, min_idle_ms, start_id="0-0", count=count
        )
        return [_entry(entry_id, fields) for entry_id, fields in answer[1]]

    def ack_outbox(self, entry_ids: list[str]) -> None:
        if entry_ids:
            self._redis.xack(k.OUTBOX, DISPATCH_GROUP, *entry_ids)

    def dead_outbox_entry(self, entry: OutboxEntry, now: datetime) -> None:
        self._redis.xadd(
            k.DEAD,
            {
                "at": format_rfc3339(now),
                "reason": "an outbox entry is not a readable event",
                "message_id": entry.entry_id,
                "payload": entry.raw[:4096],
                "truncated": "0",
            },
            maxlen=DEAD_KEPT,
            approximate=True,
        )

    def tidy_outbox(self, now: datetime) -> None:
        """Forget outbox entries dispatched more than OUTBOX_KEPT_MS ago, and the consumers of
        dispatchers long gone."""
        # Entries with ids below the horizon go: older than the keeping time, and neither
        # pending (read, not acknowledged) nor unread.
        horizon = (to_ms(now) - OUTBOX_KEPT_MS, 0)
        pending = self._redis.xpending(k.OUTBOX, DISPATCH_GROUP)
        if pending and pending.get("pending") and pending.get("min"):
            horizon = min(horizon, _stream_id(pending["min"]))
        for group in self._redis.xinfo_groups(k.OUTBOX):
            if group["name"] == DISPATCH_GROUP:
                ms, seq = _stream_id(group["last-delivered-id"])
                horizon = min(horizon, (ms, seq + 1))
        if horizon[0] > 0:
            self._redis.xtrim(k.OUTBOX, minid=f"{horizon[0]}-{horizon[1]}", approximate=False)
        for consumer in self._redis.xinfo_consumers(k.OUTBOX, DISPATCH_GROUP):
            if consumer["pending"] == 0 and consumer["idle"] > IDLE_CONSUMER_MS:
                self._redis.xgroup_delconsumer(k.OUTBOX, DISPATCH_GROUP, consumer["name"])


def _stream_id(text: str) -> tuple[int, int]:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _entry(entry_id: str, fields: dict[str, str] | None) -> OutboxEntry:
    raw = (fields or {}).get("event", "")
    try:
        event = json.loads(raw)
    except (json.JSONDecodeError, TypeError):
        event = None
    readable = (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and isinstance(event.get("type"), str)
    )
    return OutboxEntry(entry_id, event if readable else None, raw)
