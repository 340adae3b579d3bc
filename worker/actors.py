"""The actors: thin. Each decodes its message, hands it to the handler, and returns.

Actors are declared on a broker given at start-up (no broker or client exists at import time).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import dramatiq
import redis
import structlog

from worker.broker import EVENTS_QUEUE, MAX_RETRIES
from worker.handling import EventHandler
from worker.middleware.dead_letters import DeadLetterWhenGivenUp
from worker.records import from_ms
from worker.store.event_store import DEAD_PAYLOAD_CHARS

log = structlog.get_logger(__name__)

#: The actor every incoming event goes to, in batches (one message per batch).
HANDLE_EVENTS = "tokenwarden.handle_events"

#: Option of a message made in place of a broker message body that could not be read (see
#: TolerantJSONEncoder): why it could not; the actor keeps it as a dead letter.
UNDECODABLE = "tokenwarden_undecodable"

#: Characters of an unreadable body handed on (the dead letter keeps fewer, marked truncated).
UNDECODABLE_BODY_CHARS = DEAD_PAYLOAD_CHARS + 1

_REDIS_MESSAGE_ID = re.compile(rb'"redis_message_id"\s*:\s*"([0-9A-Za-z-]{1,64})"')

#: What each field of a dramatiq message must be for dramatiq to handle it.
_MESSAGE_FIELDS = {
    "queue_name": str,
    "actor_name": str,
    "args": list,
    "kwargs": dict,
    "options": dict,
    "message_id": str,
    "message_timestamp": int,
}


class TolerantJSONEncoder(dramatiq.JSONEncoder):
    """dramatiq's JSON encoding, except that a body it cannot read (not JSON, nested deeper
    than Python's recursive parser goes, not a message) becomes a message to the events actor,
    which keeps it as a dead letter and acknowledges it. dramatiq's own decoder raises instead:
    the Redis consumer thread stops and restarts, and the body, with every message fetched
    beside it, stays unacknowledged until the worker dies and the next one meets it again."""

    def decode(self, data: bytes) -> dict[str, Any]:
        try:
            fields = super().decode(data)
        except RecursionError:
            reason = "the broker message nests JSON too deeply to be read"
        except dramatiq.DecodeError:
            reason = "the broker message is not JSON"
        else:
            if _is_message(fields):
                return fields
            reason = "the broker message is not a dramatiq message"
        return _in_place_of(data, reason)


def _is_message(fields: Any) -> bool:
    return (
        isinstance(fields, dict)
        and fields.keys() <= _MESSAGE_FIELDS.keys()
        and all(k in fields for k in ("queue_name", "actor_name", "args", "kwargs", "options"))
        and all(isinstance(v, _MESSAGE_FIELDS[k]) for k, v in fields.items())
    )


def _in_place_of(data: bytes, reason: str) -> dict[str, Any]:
    """A message that dead-letters `data`, under the broker id it was fetched by."""
    raw = data if isinstance(data, bytes) else str(data).encode("utf-8", "backslashreplace")
    # The broker adds the id to the options, which dramatiq writes after the arguments: the
    # last match is the broker's, whatever an argument holds.
    found = _REDIS_MESSAGE_ID.findall(raw)
    if not found:  # it cannot be acknowledged without its id: leave it to dramatiq
        raise dramatiq.DecodeError(reason, data, None)
    redis_message_id = found[-1].decode("ascii")
    return {
        "queue_name": EVENTS_QUEUE,
        "actor_name": HANDLE_EVENTS,
        "args": [raw[:UNDECODABLE_BODY_CHARS].decode("utf-8", "replace")],
        "kwargs": {},
        "options": {"redis_message_id": redis_message_id, UNDECODABLE: reason},
        "message_id": redis_message_id,
    }


#: How long a batch waits for Redis to come back before its message fails, in seconds. Under
#: the message time limit; decisions are idempotent, so the batch simply runs again.
REDIS_PATIENCE_S = 240


def _while_redis_returns(work: Callable[[], Any]) -> Any:
    """Run `work`, again and again while Redis is unreachable. Failing the message at once would
    not do: its retry is enqueued through the same absent Redis and would be lost."""
    deadline = time.monotonic() + REDIS_PATIENCE_S
    pause = 0.2
    while True:
        try:
            return work()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("redis_unreachable_waiting", error=str(exc), retry_in_s=pause)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


def declare_actors(
    broker: dramatiq.Broker, handler: EventHandler, clock: Callable[[], datetime]
) -> dramatiq.Actor:
    def handle_events(events: Any, received_at_ms: Any = None) -> None:
        message = dramatiq.middleware.CurrentMessage.get_current_message()
        message_id = message.message_id if message else None
        now = clock()
        if message is not None and message.options.get(UNDECODABLE):
            reason = str(message.options[UNDECODABLE])
            handler.events.record_dead(events, reason, now, message_id)
            log.warning("message_dead_lettered", reason=reason)
            return
        if not isinstance(events, list) or not isinstance(received_at_ms, int | None):
            # Not something `tokenwarden emit` or the API would send: keep it, do not retry.
            handler.events.record_dead(
                {"events": events, "received_at_ms": received_at_ms},
                "the message is not a list of events",
                now,
                message_id,
            )
            log.warning("message_dead_lettered", reason="not a list of events")
            return
        try:
            received_at = from_ms(received_at_ms) if received_at_ms else now
        except (OverflowError, ValueError, OSError):
            received_at = now  # a hand-made message with a nonsense stamp: use the clock
        outcomes = _while_redis_returns(
            lambda: handler.handle_batch(
                events, received_at=received_at, now=now, message_id=message_id
            )
        )
        log.info(
            "batch_handled",
            events=len(events),
            dead=sum(1 for o in outcomes if o.outcome == "dead"),
            duplicates=sum(1 for o in outcomes if o.outcome == "duplicate"),
        )

    dramatiq.set_encoder(TolerantJSONEncoder())
    broker.add_middleware(DeadLetterWhenGivenUp(handler.events, clock, HANDLE_EVENTS))
    return dramatiq.actor(
        handle_events,
        broker=broker,
        actor_name=HANDLE_EVENTS,
        queue_name=EVENTS_QUEUE,
        max_retries=MAX_RETRIES,
    )
