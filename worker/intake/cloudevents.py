"""CloudEvents over HTTP at `/sources/NAME/events` (`Authorization: Bearer SECRET`).

`POST` takes events in any content mode of the HTTP binding (see ce_binding): all valid or
none taken (400 listing each problem), 202 with the count once enqueued. `OPTIONS` answers the
webhook validation handshake ("HTTP 1.1 Web Hooks for Event Delivery", section 4), behind the
same secret as deliveries.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from events import catalog
from events.cloudevent import CloudEvent, MalformedEvent
from worker.intake import ce_binding
from worker.intake.context import Intake
from worker.intake.sources import CLOUDEVENTS, Source
from worker.publish import validate

log = structlog.get_logger(__name__)

PATH = "/sources/{name}/events"

#: Longest WebHook-Request-Origin taken (a DNS name is at most 253 characters).
MAX_ORIGIN_CHARS = 253

#: A WebHook-Request-Rate: requests per minute, a positive whole number.
_RATE = re.compile(r"^[1-9][0-9]{0,8}$")


def routes(intake: Intake) -> list[BaseRoute]:
    async def deliver(request: Request) -> Response:
        return await _deliver(intake, request)

    async def handshake(request: Request) -> Response:
        return await _handshake(intake, request)

    return [
        Route(PATH, deliver, methods=["POST"]),
        Route(PATH, handshake, methods=["OPTIONS"]),
    ]


async def _deliver(intake: Intake, request: Request) -> Response:
    source = await intake.source(request, CLOUDEVENTS)
    try:
        # The content type before the body: a sender of something else need not upload it.
        mode = ce_binding.content_mode(request.headers)
    except ce_binding.Unsupported as exc:
        return _refused(intake, request, source, 415, exc.why)
    body = await intake.body(request, source.name)
    try:
        # In the thread pool: a batch of a thousand events is milliseconds of work, which would
        # otherwise hold up every other request on this process meanwhile.
        events = await run_in_threadpool(_read, mode, request.headers, body, source, intake.now())
    except ce_binding.Refused as exc:
        return _refused(intake, request, source, 400, exc.why, exc.errors)
    accepted = await intake.enqueue(source, events)
    log.info("intake_accepted", source=source.name, mode=mode, events=accepted)
    return JSONResponse({"accepted": accepted}, status_code=202)


def _read(
    mode: str, headers: Mapping[str, str], body: bytes, source: Source, now: datetime
) -> list[CloudEvent]:
    """The request's events, their users mapped; all valid, else Refused and none taken."""
    events = ce_binding.read_events(mode, headers, body, now)
    mapped, errors = [], []
    for index, event in enumerate(events):
        try:
            mapped.append(_mapped(event, source, now))
        except MalformedEvent as exc:
            errors.append({"index": index, "error": f"once its user's domain is mapped: {exc}"})
    if errors:
        why = (
            f"{len(errors)} of {len(events)} events are invalid once their user's domain is "
            "mapped; none was taken"
        )
        raise ce_binding.Refused(why, errors)
    return mapped


def _mapped(event: CloudEvent, source: Source, now: datetime) -> CloudEvent:
    """The event with its user's domain mapped to the Managed Apple Account domain (and its
    subject, when that is the user), validated again: a mapped user may be too long."""
    if event.type not in catalog.USER_EVENTS:
        return event
    user = event.user()
    mapped = source.map_user(user)
    if mapped == user:
        return event
    document = {**event.to_wire(), "data": {**event.data, "user": mapped}}
    if event.subject is not None and event.subject.strip() == user:
        document["subject"] = mapped
    return validate(document, now)


async def _handshake(intake: Intake, request: Request) -> Response:
    """Consent to deliveries from the origin asking, without a rate limit. A
    WebHook-Request-Callback is never called (the intake fetches no URL a client names) nor
    logged (it carries the sender's key): the answer is given at once."""
    source = await intake.source(request, CLOUDEVENTS)
    origin = request.headers.get("webhook-request-origin", "").strip()
    rate = request.headers.get("webhook-request-rate", "1").strip()
    why = None
    if not origin:
        why = "OPTIONS is the CloudEvents webhook handshake: send WebHook-Request-Origin"
    elif len(origin) > MAX_ORIGIN_CHARS or any(not "!" <= ch <= "~" for ch in origin):
        why = "WebHook-Request-Origin must be a host name (printable ASCII, no spaces)"
    elif not _RATE.fullmatch(rate):
        why = "WebHook-Request-Rate must be a positive whole number (requests per minute)"
    if why is not None:
        return _refused(intake, request, source, 400, why)
    log.info("intake_handshake", source=source.name, origin=origin)
    # "*": the intake sets no rate; what it cannot take waits in the queue, not at the door.
    consent = {"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*"}
    return Response(status_code=200, headers={**consent, "Allow": "POST, OPTIONS"})


def _refused(
    intake: Intake,
    request: Request,
    source: Source,
    status: int,
    why: str,
    errors: list | None = None,
) -> Response:
    intake.refuse(request, source.name, status, why)
    content = {"error": why, "errors": errors} if errors else {"error": why}
    return JSONResponse(content, status_code=status)
