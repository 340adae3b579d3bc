"""Publishing events from a program that embeds tokenwarden:

    from worker.api import Client

    with Client.from_env() as tokenwarden:
        tokenwarden.password_changed("teacher@school.edu")
        tokenwarden.publish(events_from_my_directory)   # CloudEvent dicts or JSON texts

Invalid events raise worker.errors.InvalidEvent before anything is enqueued.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import dramatiq

from events import catalog
from events.cloudevent import CloudEvent, MalformedEvent, new_event
from worker.broker import make_broker
from worker.config import Settings
from worker.errors import InvalidEvent
from worker.publish import Publisher
from worker.timefmt import utc_now


class Client:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utc_now,
        source: str = catalog.SOURCE_API,
        broker: dramatiq.Broker | None = None,
    ):
        self._owns_broker = broker is None
        self._broker = broker or make_broker(settings)
        self._publisher = Publisher(self._broker, clock)
        self._source = source

    @classmethod
    def from_env(cls) -> Client:
        return cls(Settings.from_env())

    def publish(self, events: Sequence[CloudEvent | dict[str, Any] | str]) -> int:
        return self._publisher.publish(events)

    def emit(
        self,
        event_type: str,
        data: dict[str, Any],
        *,
        at: datetime | None = None,
        event_id: str | None = None,
        subject: str | None = None,
    ) -> CloudEvent:
        try:
            event = new_event(
                event_type, data, source=self._source, time=at, event_id=event_id, subject=subject
            )
        except MalformedEvent as exc:
            raise InvalidEvent(str(exc)) from None
        self._publisher.publish([event])
        return event

    def password_changed(self, user: str, **options: Any) -> CloudEvent:
        return self.emit(catalog.PASSWORD_CHANGED, {"user": user}, subject=user, **options)

    def user_left(self, user: str, **options: Any) -> CloudEvent:
        return self.emit(catalog.USER_LEFT, {"user": user}, subject=user, **options)

    def key_regenerated(self, server: str, *, org: str | None = None, **options: Any) -> CloudEvent:
        return self.emit(
            catalog.KEY_REGENERATED, _server_data(server, org), subject=server, **options
        )

    def token_generated(self, server: str, *, org: str | None = None, **options: Any) -> CloudEvent:
        return self.emit(
            catalog.TOKEN_GENERATED, _server_data(server, org), subject=server, **options
        )

    def close(self) -> None:
        if self._owns_broker:
            self._broker.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _server_data(server: str, org: str | None) -> dict[str, Any]:
    return {"server": server, **({"org": org} if org else {})}
