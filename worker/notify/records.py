"""What the notification side keeps, as plain frozen records: deliveries and outbox entries.
Pure: no I/O (the stores map these to and from what they hold)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worker.timefmt import format_rfc3339

PENDING, DELIVERED, FAILED, CANCELLED = "pending", "delivered", "failed", "cancelled"


def about_server(event: dict[str, Any]) -> str:
    """The id of the server an outgoing event is about ("" when it is about none)."""
    data = event.get("data")
    server_id = data.get("server_id") if isinstance(data, dict) else None
    return server_id if isinstance(server_id, str) else ""


@dataclass(frozen=True)
class OutboxEntry:
    entry_id: str
    event: dict[str, Any] | None  # None: the entry is not a readable event
    raw: str


@dataclass(frozen=True)
class Delivery:
    id: str
    subscription_id: str
    event_id: str
    event_type: str
    event: str  # the CloudEvent, JSON, exactly as sent ("" when it is gone)
    status: str
    attempts: int
    created_at: datetime
    next_at: datetime | None = None
    last_status: str = ""
    last_error: str = ""
    last_attempt_at: str = ""
    finished_at: str = ""
    #: For an owner's delivery (notify/owners.py), the address it was made for.
    owner: str = ""
    #: The server the event is about (its `data.server_id`), "" for one about none.
    server_id: str = ""

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "subscription": self.subscription_id,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "status": self.status,
            "attempts": self.attempts,
            "created_at": format_rfc3339(self.created_at),
            "next_attempt_at": format_rfc3339(self.next_at)
            if self.next_at and self.status == PENDING
            else None,
            "last_status": self.last_status or None,
            "last_error": self.last_error or None,
            "last_attempt_at": self.last_attempt_at or None,
            "finished_at": self.finished_at or None,
            "owner": self.owner or None,
        }
