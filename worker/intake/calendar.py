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

import asyncio
import base64
import binascii
import hashlib
import hmac
import time

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
            body = await made.get(
                org,
                lambda: run_in_threadpool(
                    renewal_feed, app.store, app.listings, intake.now(), org=org
                ),
            )
        except NotFound as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        except InvalidInput as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except redis.RedisError as exc:
            log.warning("calendar_unavailable", error=type(exc).__name__)
            return PlainTextResponse("redis unreachable\n", status_code=503)
        tag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        headers = {"Cache-Control": "private, no-store", "ETag": tag}
        if request.headers.get("if-none-match") == tag:  # the subscriber has it already
            return Response(status_code=304, headers=headers)
        log.info("calendar_served", org=org, events=body.count(b"BEGIN:VEVENT"))
        headers["Content-Disposition"] = 'inline; filename="renewals.ics"'
        return Response(body, media_type=MEDIA_TYPE, headers=headers)

    made = FeedCache(FEED_KEPT_S)
    return feed


#: How long one rendering of the feed answers the subscribers (calendar apps poll it hourly or
#: so, each on its own clock: a large estate is read and drawn once per this, not per poll).
FEED_KEPT_S = 300.0

#: Feeds kept at most (one per organization asked for, and the whole estate's).
FEEDS_KEPT = 64


class FeedCache:
    """Renderings of the feed by organization, each answering for `kept_s`; one rendering at
    a time per organization (the others wait for it rather than render it again)."""

    def __init__(self, kept_s: float):
        self._kept_s = kept_s
        self._made: dict[str | None, tuple[float, bytes]] = {}
        self._locks: dict[str | None, asyncio.Lock] = {}

    async def get(self, org: str | None, make) -> bytes:
        key = org.casefold() if org else None
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            found = self._made.get(key)
            if found is not None and time.monotonic() - found[0] < self._kept_s:
                return found[1]
            body = await make()
            if len(self._made) >= FEEDS_KEPT:
                self._made.pop(next(iter(self._made)))
            self._made[key] = (time.monotonic(), body)
            if len(self._locks) > FEEDS_KEPT:
                self._locks = {k: v for k, v in self._locks.items() if k in self._made}
            return body


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
