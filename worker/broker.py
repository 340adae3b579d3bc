"""The dramatiq broker on Redis, and the middleware tokenwarden runs with.

Defaults are tuned for recovery and latency rather than dramatiq's own (a dead worker's messages
come back after a minute or more, an idle consumer polls once a second): a worker presumed dead
after TOKENWARDEN_HEARTBEAT_TIMEOUT seconds (8), queue maintenance on 2% of broker commands.
A worker's heartbeat is every broker call its consumer makes, at least every poll interval, and
our messages take milliseconds, so a live worker is never mistaken for a dead one.
"""

from __future__ import annotations

import dramatiq
import structlog
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import (
    AgeLimit,
    CurrentMessage,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from worker.config import Settings
from worker.store.keys import BROKER_NAMESPACE

#: The queue incoming events travel on.
EVENTS_QUEUE = "events"

#: Broker commands out of a million that also run queue maintenance (recovering the messages
#: of dead workers). dramatiq's default, 1000, can leave them stranded for minutes; at 2%, an
#: idle consumer polling every 50 ms runs it about once a second.
MAINTENANCE_CHANCE = 20_000

#: Longest one message may be handled before it is interrupted, in ms.
MESSAGE_TIME_LIMIT_MS = 5 * 60 * 1000

#: Retries of a message that failed for a reason other than bad input, and their back-off.
MAX_RETRIES = 8
MIN_BACKOFF_MS = 1_000
MAX_BACKOFF_MS = 5 * 60 * 1000


class LogContext(dramatiq.Middleware):
    """Binds the message id to every log line written while a message is handled."""

    def before_process_message(self, broker, message):
        structlog.contextvars.bind_contextvars(
            message_id=message.message_id, actor=message.actor_name
        )

    def after_process_message(self, broker, message, *, result=None, exception=None):
        structlog.contextvars.unbind_contextvars("message_id", "actor")

    after_skip_message = after_process_message


def make_broker(
    settings: Settings,
    *,
    heartbeat_timeout_s: float | None = None,
    maintenance_chance: int = MAINTENANCE_CHANCE,
) -> RedisBroker:
    timeout = (
        heartbeat_timeout_s if heartbeat_timeout_s is not None else settings.heartbeat_timeout_s
    )
    broker = RedisBroker(
        url=settings.redis_url,
        namespace=BROKER_NAMESPACE,
        heartbeat_timeout=int(timeout * 1000),
        maintenance_chance=maintenance_chance,
        middleware=[
            AgeLimit(),
            TimeLimit(time_limit=MESSAGE_TIME_LIMIT_MS),
            ShutdownNotifications(),
            Retries(
                max_retries=MAX_RETRIES, min_backoff=MIN_BACKOFF_MS, max_backoff=MAX_BACKOFF_MS
            ),
            CurrentMessage(),
            LogContext(),
        ],
    )
    broker.declare_queue(EVENTS_QUEUE)
    return broker
