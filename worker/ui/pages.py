"""The pages' routes, each behind the access check: `/` the estate, `/timeline`, `/activity`,
`/servers/{id}` and its certificate to download. Each reads the stores in the thread pool
(worker/ui/reads.py), hands what it read to a view (pure) and renders the view's template.

The App is the one `tokenwarden serve` runs with: create_app keeps it (as its Intake) in the
Starlette application's state, where every request finds it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import redis
import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from worker.bootstrap import App
from worker.ui import reads
from worker.ui.render import page
from worker.ui.views.activity import activity_page
from worker.ui.views.estate import estate_view, parse_filters, rows_of
from worker.ui.views.server import server_page
from worker.ui.views.timeline import timeline

log = structlog.get_logger(__name__)

Handler = Callable[[Request], Awaitable[Response]]
T = TypeVar("T")


class Access(Protocol):
    """Who may look (worker/ui/access.py): `required(handler)` answers for a viewer only,
    with `request.state.viewer` set to their name."""

    def required(self, handler: Handler) -> Handler: ...


def routes(access: Access) -> list[Route]:
    """The pages, each behind `access`, to mount at /ui."""
    pages = [
        ("/", estate, "estate"),
        ("/timeline", timeline_page, "timeline"),
        ("/activity", activity, "activity"),
        ("/servers/{server_id}", server, "server"),
        ("/servers/{server_id}/certificate.pem", certificate, "certificate"),
    ]
    return [
        Route(path, access.required(guarded(handler)), methods=["GET"], name=name)
        for path, handler, name in pages
    ]


def app_of(request: Request) -> App:
    return request.app.state.intake.app


async def read(request: Request, reader: Callable[..., T], *args: Any) -> T:
    """`reader(app, *args)` in the thread pool; Redis unreachable: Unavailable (a 503 page)."""
    try:
        return await run_in_threadpool(reader, app_of(request), *args)
    except redis.RedisError as exc:
        log.warning("ui_redis_unreachable", path=request.url.path, error=type(exc).__name__)
        raise Unavailable from None


class Unavailable(Exception):
    """Redis could not be read: the page answers 503."""


def guarded(handler: Handler) -> Handler:
    """`handler`, answering a 503 page when Redis cannot be read."""

    async def answer(request: Request) -> Response:
        try:
            return await handler(request)
        except Unavailable:
            return page(
                request,
                "error.html",
                status_code=503,
                title="Unavailable",
                message="tokenwarden cannot reach Redis just now; try again in a moment.",
            )

    return answer


async def estate(request: Request) -> Response:
    try:
        filters = parse_filters(dict(request.query_params))
    except ValueError as exc:
        return page(request, "error.html", status_code=400, title="Bad request", message=str(exc))
    entries, settings = await read(request, reads.estate)
    rows = rows_of(entries, settings.now, settings.thresholds, settings.apple_interval_s)
    view = estate_view(rows, filters)
    return page(request, "estate.html", section="estate", view=view, now=settings.now)


async def timeline_page(request: Request) -> Response:
    entries, settings = await read(request, reads.estate)
    rows = rows_of(entries, settings.now, settings.thresholds, settings.apple_interval_s)
    chart = timeline(rows, settings.now, settings.thresholds)
    return page(request, "timeline.html", section="timeline", chart=chart)


async def server(request: Request) -> Response:
    history = await read(request, reads.server_history, request.path_params["server_id"])
    if history is None:
        return _no_server(request)
    settings = reads.settings(app_of(request))
    view = server_page(history, settings)
    return page(request, "server.html", section="estate", view=view, window=reads.AUDIT_WINDOW)


async def certificate(request: Request) -> Response:
    found = await read(request, reads.certificate, request.path_params["server_id"])
    if found is None:
        return _no_server(request)
    server, pair = found
    return Response(
        pair.cert_pem,
        media_type="application/x-pem-file",
        headers={"Content-Disposition": f'attachment; filename="{file_name(server.name)}.pem"'},
    )


async def activity(request: Request) -> Response:
    found = await read(request, reads.activity)
    return page(request, "activity.html", section="activity", view=activity_page(found))


def _no_server(request: Request) -> Response:
    return page(
        request,
        "error.html",
        status_code=404,
        title="No such server",
        message="No server has this id; it may have been removed.",
    )


def file_name(name: str) -> str:
    """A server's name as a download's file name: letters, digits, '-', '_' and '.'."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return cleaned[:80] or "certificate"
