"""A message given up on is kept as a dead letter of ours, not only dramatiq's."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import dramatiq
import structlog

from worker.logs import redact_text
from worker.store.event_store import EventStore

log = structlog.get_logger(__name__)

#: Characters of the failure's last traceback line kept in the dead letter's reason.
REASON_CHARS = 300


class DeadLetterWhenGivenUp(dramatiq.Middleware):
    """A message of `actor_name` the worker gave up on after its retries is kept where
    `events dead` shows it, not only in dramatiq's own dead-letter queue (which expires after
    a week)."""

    def __init__(self, events: EventStore, clock: Callable[[], datetime], actor_name: str):
        self._events = events
        self._clock = clock
        self._actor_name = actor_name

    def after_nack(self, broker, message) -> None:
        if message.actor_name != self._actor_name:
            return
        last_line = (message.options.get("traceback") or "").strip().splitlines()[-1:]
        reason = "the worker gave up after its retries" + (
            f" ({redact_text(last_line[0])[:REASON_CHARS]})" if last_line else ""
        )
        self._events.record_dead(
            {"events": message.args[0] if message.args else None},
            reason,
            self._clock(),
            message.message_id,
        )
        log.error("message_given_up", reason=reason)
