"""The okta source kind: Okta event hooks at `/sources/NAME/okta`.

`GET` is Okta's one-time verification (the challenge in `X-Okta-Verification-Challenge`, echoed
as `{"verification": ...}`); `POST` is a delivery of System Log events. Okta sends the secret
the admin configured in `Authorization` on both, verbatim. A delivery is answered 200 as soon
as its events are enqueued (Okta waits 3 s, then retries once); what it means for tokens is the
workers' to decide. The translation itself is `events.okta`.
"""

from __future__ import annotations

from datetime import datetime

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from events import okta
from events.errors import MalformedEvent
from worker.intake.context import Intake
from worker.intake.sources import OKTA, Source

log = structlog.get_logger(__name__)

CHALLENGE_HEADER = "x-okta-verification-challenge"

#: Longest verification challenge echoed, in characters (Okta's are about 40).
MAX_CHALLENGE_CHARS = 1024


def routes(intake: Intake) -> list[BaseRoute]:
    return [
        Route("/sources/{name}/okta", _verification(intake), methods=["GET"]),
        Route("/sources/{name}/okta", _delivery(intake), methods=["POST"]),
    ]


def _verification(intake: Intake):
    async def verify(request: Request) -> Response:
        source = await intake.source(request, OKTA)
        challenge = request.headers.get(CHALLENGE_HEADER, "").strip()
        if not challenge or len(challenge) > MAX_CHALLENGE_CHARS:
            why = (
                "a GET here is Okta's one-time verification: it needs the "
                f"X-Okta-Verification-Challenge header (at most {MAX_CHALLENGE_CHARS} characters)"
            )
            intake.refuse(request, source.name, 400, "no usable verification challenge")
            raise HTTPException(400, why)
        log.info("okta_hook_verified", source=source.name)
        return JSONResponse({"verification": challenge})

    return verify


def _delivery(intake: Intake):
    async def deliver(request: Request) -> Response:
        source = await intake.source(request, OKTA)
        _require_json(intake, request, source.name)
        body = await intake.body(request, source.name)
        try:
            # In the thread pool: a delivery of a mebibyte is milliseconds of parsing, which
            # would otherwise hold up every other request on this process meanwhile.
            translation = await run_in_threadpool(_translated, body, source, intake.now())
        except MalformedEvent as exc:  # the message names no value from the body
            intake.refuse(request, source.name, 400, str(exc))
            raise HTTPException(400, str(exc)) from None
        if translation.events:
            await intake.enqueue(source, translation.events)
        await intake.record_ignored_many(
            source,
            [(ignored.record, ignored.why) for ignored in translation.ignored],
            keys=[ignored.key for ignored in translation.ignored],
        )
        log.info(
            "okta_delivery",
            source=source.name,
            accepted=len(translation.events),
            ignored=len(translation.ignored),
        )
        return Response(status_code=200)  # Okta asks for an empty 200 or 204

    return deliver


def _translated(body: bytes, source: Source, now: datetime) -> okta.Translation:
    """A delivery's body as tokenwarden events and ignored ones; MalformedEvent when it is
    not a delivery at all."""
    return okta.translate(
        okta.decode_delivery(body),
        source=okta.source_for(source.name),
        map_user=source.map_user,
        now=now,
    )


def _require_json(intake: Intake, request: Request, source: str) -> None:
    """Okta sends `application/json`; anything else is not Okta (415)."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        intake.refuse(request, source, 415, "not application/json")
        raise HTTPException(415, "an Okta event hook delivery is application/json")
