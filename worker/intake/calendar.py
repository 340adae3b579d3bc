"""`GET /calendar/renewals.ics[?org=ORG]`: the renewal plan as an iCalendar feed
(worker/renewal_feed.py) for people to subscribe to in their calendar.

Served only when TOKENWARDEN_CALENDAR_TOKEN is set (else 404, as for any unknown path), and
only to a request that carries it. Calendar apps cannot all send a header, so it is taken as
the password of HTTP Basic (any user name; Apple Calendar, Thunderbird), as `Authorization:
Bearer`, or as the query parameter `token` (Google Calendar, Outlook: the URL is then the
secret). The comparison takes the same time whatever was sent. Nothing logs the query: the
intake has no access log, and its lines name the path alone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

import redis
import structlog
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from worker.errors import InvalidInput, NotFound
from worker.intake.context import Intake
from worker.services.renewal_plan import renewal_feed

log = structlog.get_logger(__name__)

PATH = "/calendar/renewals.ics"

#: The query parameter that may carry the secret, and the one that chooses an organization.
TOKEN_PARAMETER, ORG_PARAMETER = "token", "org"

#: The challenge of a refusal: calendar apps ask their user for the password on it.
CHALLENGE = 'Basic realm="tokenwarden calendar", charset="UTF-8"'

MEDIA_TYPE = "text/calendar; charset=utf-8"


def routes(intake: Intake) -> list[BaseRoute]:
    return [Route(PATH, _feed(intake), methods=["GET"])]


def _feed(intake: Intake):
    async def feed(request: Request) -> Response:
        expected = intake.app.settings.http.calendar_token
        if expected is None:
            raise HTTPException(404, "Not Found")
        if not accepts(presented(request), expected):
            client = request.client.host if request.client else None
            log.info("calendar_refused", status=401, client=client)
            return Response(status_code=401, headers={"WWW-Authenticate": CHALLENGE})
        org = request.query_params.get(ORG_PARAMETER) or None
        app = intake.app
        try:
            body = await run_in_threadpool(
                renewal_feed, app.store, app.listings, intake.now(), org=org
            )
        except NotFound as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        except InvalidInput as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except redis.RedisError as exc:
            log.warning("calendar_unavailable", error=type(exc).__name__)
            return PlainTextResponse("redis unreachable\n", status_code=503)
        log.info("calendar_served", org=org, events=body.count(b"BEGIN:VEVENT"))
        return Response(
            body,
            media_type=MEDIA_TYPE,
            headers={
                "Cache-Control": "private, no-store",
                "Content-Disposition": 'inline; filename="renewals.ics"',
            },
        )

    return feed


def presented(request: Request) -> list[str]:
    """What the request offers as the secret: from `Authorization` (Bearer, or Basic's
    password, else its user name), and from the query."""
    offered = []
    scheme, _, rest = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and rest.strip():
        offered.append(rest.strip())
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(rest.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        user, _, password = decoded.partition(":")
        if password or user:
            offered.append(password or user)
    offered += request.query_params.getlist(TOKEN_PARAMETER)[:1]
    return offered


def accepts(offered: list[str], expected: str) -> bool:
    """Whether any offered value is the secret; digests compared, so the time taken tells
    neither the secret's length nor how much of it matched."""
    want = hashlib.sha256(expected.encode()).digest()
    found = False
    for value in offered:
        found |= hmac.compare_digest(hashlib.sha256(value.encode()).digest(), want)
    return found
