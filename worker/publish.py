"""Publishing incoming events: validate at the edge, then enqueue. Publishing never decides.

Events travel in batches, one broker message per batch, so thousands of lines from
`tokenwarden emit --file` cost a few dozen round trips, not one per event. Each event in a
batch is still decided and de-duplicated on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dramatiq

from events.cloudevent import CloudEvent, MalformedEvent, check_not_future, parse_event
from worker.actors import HANDLE_EVENTS
from worker.broker import EVENTS_QUEUE
from worker.errors import InvalidEvent
from worker.records import to_ms

#: Events per broker message.
EVENTS_PER_MESSAGE = 100


@dataclass(frozen=True)
class Refused:
    line: int
    reason: str


def validate(raw: Any, now: datetime) -> CloudEvent:
    """One event as published: a valid CloudEvent of a known type, not from the future."""
    event = raw if isinstance(raw, CloudEvent) else parse_event(raw)
    check_not_future(event, now)
    return event


def validate_lines(lines: Iterable[str], now: datetime) -> tuple[list[CloudEvent], list[Refused]]:
    """JSON Lines: every non-blank line one event. Returns the valid ones and the refusals."""
    events: list[CloudEvent] = []
    refused: list[Refused] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            events.append(validate(line, now))
        except MalformedEvent as exc:
            refused.append(Refused(number, str(exc)))
    return events, refused


class Publisher:
    def __init__(self, broker: dramatiq.Broker, clock: Callable[[], datetime]):
        self._broker = broker
        self._clock = clock

    def publish(self, events: Sequence[Any]) -> int:
        """Validate every event, then enqueue them all; a bad one refuses the whole call."""
        now = self._clock()
        valid = []
        for position, raw in enumerate(events, start=1):
            try:
                valid.append(validate(raw, now))
            except MalformedEvent as exc:
                where = f"event {position}: " if len(events) > 1 else ""
                raise InvalidEvent(f"{where}{exc}") from None
        return self.enqueue(valid)

    def enqueue(self, events: Sequence[CloudEvent]) -> int:
        received_at_ms = to_ms(self._clock())
        for start in range(0, len(events), EVENTS_PER_MESSAGE):
            batch = [event.to_wire() for event in events[start : start + EVENTS_PER_MESSAGE]]
            self._broker.enqueue(
                dramatiq.Message(
                    queue_name=EVENTS_QUEUE,
                    actor_name=HANDLE_EVENTS,
                    args=(batch, received_at_ms),
                    kwargs={},
                    options={},
                )
            )
        return len(events)
