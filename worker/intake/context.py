"""What every intake endpoint shares: the app's stores, the publisher, the metrics, and the
steps each request goes through (find the source, check its secret, read a bounded body,
validate and enqueue). Blocking calls (Redis) run in Starlette's thread pool."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request

from events.cloudevent import CloudEvent
from worker.bootstrap import App
from worker.intake.metrics import IntakeMetrics
from worker.intake.sources import Source
from worker.publish import Publisher
from worker.rules.decision import AuditEntry, Decision

log = structlog.get_logger(__name__)

#: Largest request body taken, in bytes; a larger one is refused with 413.
MAX_BODY_BYTES = 1024 * 1024

#: Before an ignored event's key, in its de-duplication marker.
IGNORED_MARK = "ignored\x00"


@dataclass
class Intake:
    app: App
    metrics: IntakeMetrics = field(default_factory=IntakeMetrics)

    def __post_init__(self) -> None:
        self.publisher = Publisher(self.app.broker, self.app.now)

    @property
    def now(self) -> Callable[[], datetime]:
        return self.app.now

    async def source(self, request: Request, kind: str) -> Source:
        """The source the path names, when it is of `kind` and the request carries its
        secret; else 404 (unknown, or another kind) or 401 (no detail given)."""
        name = request.path_params["name"]
        source = await run_in_threadpool(self.app.sources.get, name)
        if source is None or source.kind != kind:
            self.refuse(request, name, 404, "unknown source")
            raise HTTPException(404, "no such source")
        request.state.source = source.name  # a source that exists: the metrics name it
        secret = presented_secret(request)
        if secret is None or not source.accepts(secret, self.now()):
            self.metrics.auth_failures.labels(source=source.name).inc()
            self.refuse(request, name, 401, "missing or wrong secret")
            raise HTTPException(401)
        return source

    def refuse(self, request: Request, source: str, status: int, why: str) -> None:
        """Every refusal is logged with the source and the client, never with the body or
        the Authorization header."""
        client = request.client.host if request.client else None
        log.info("intake_refused", source=source, status=status, why=why, client=client)

    async def body(self, request: Request, source: str) -> bytes:
        """The request body, at most MAX_BODY_BYTES (413 beyond), read as it arrives."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            self.refuse(request, source, 413, "body too large")
            raise HTTPException(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                self.refuse(request, source, 413, "body too large")
                raise HTTPException(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def enqueue(self, source: Source, events: Sequence[CloudEvent]) -> int:
        """Hand validated events to the workers; counted per source."""
        count = await run_in_threadpool(self.publisher.enqueue, list(events))
        self.metrics.events_accepted.labels(source=source.name).inc(count)
        return count

    async def record_ignored_many(
        self,
        source: Source,
        ignored: Sequence[tuple[dict[str, Any], str]],
        keys: Sequence[str | None] | None = None,
    ) -> None:
        """Several ignored events (event, why), in one round trip. `keys`: each event's key at
        its source (CloudEvent.key), when known: a retried delivery's ignored events are then
        not recorded again (for as long as a handled event is remembered)."""
        if not ignored:
            return
        now = self.now()
        decisions = [
            Decision(
                now=now,
                # Apart from the marker of an event decided on: one ignored now (a time ahead
                # of the clock) is still taken if it comes again usable.
                event_key=None if key is None else IGNORED_MARK + key,
                audit=AuditEntry("ignored", event),
                note=why,
            )
            for (event, why), key in zip(ignored, keys or [None] * len(ignored), strict=True)
        ]
        applied = await run_in_threadpool(self.app.store.events.apply_many, decisions)
        recorded = sum(1 for outcome in applied if outcome.outcome == "applied")
        self.metrics.events_ignored.labels(source=source.name).inc(recorded)


def presented_secret(request: Request) -> str | None:
    """The secret in `Authorization`: `Bearer <secret>`, or the bare value (Okta sends the
    header value exactly as configured)."""
    value = request.headers.get("authorization", "").strip()
    if not value:
        return None
    scheme, _, rest = value.partition(" ")
    return rest.strip() if scheme.lower() == "bearer" and rest.strip() else value
