"""The pages' routes, each behind the access check: `/` the estate, `/timeline`, `/activity`,
`/servers/{id}` and its certificate to download. Each reads the stores (worker/ui/reads.py),
hands what it read to a view (pure) and renders the view's template, all in the thread pool:
the event loop stays free for the intake's requests.

The App is the one `tokenwarden serve` runs with: create_app keeps it (as its Intake) in the
Starlette application's state, where every request finds it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Protocol

import redis
import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from worker.bootstrap import App
from worker.ui import reads
from worker.ui.render import page, unavailable
from worker.ui.views.activity import activity_page
from worker.ui.views.estate import estate_view, parse_filters, rows_of
from worker.ui.views.server import server_page
from worker.ui.views.timeline import timeline

log = structlog.get_logger(__name__)

Handler = Callable[[Request], Awaitable[Response]]
#: What makes a page: blocking (it reads Redis), so it runs in the thread pool.
Build = Callable[[Request, App], Response]


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
    building = asyncio.Semaphore(BUILDS_AT_ONCE)
    return [
        Route(path, access.required(off_the_loop(build, building)), methods=["GET"], name=name)
        for path, build, name in pages
    ]


#: Pages built at once per serve process: a page reads the estate, so a crowd of viewers
#: queues here instead of filling the thread pool the intake's sources share.
BUILDS_AT_ONCE = 2


def app_of(request: Request) -> App:
    """The App the pages read (ui_routes keeps it in the state of the /ui site)."""
    return request.app.state.app


def off_the_loop(build: Build, building: asyncio.Semaphore) -> Handler:
    """A handler running `build(request, app)` (the reads, the view, the HTML) in the thread
    pool, off the event loop, BUILDS_AT_ONCE at a time; Redis unreachable: a 503 page of one
    line."""

    async def handler(request: Request) -> Response:
        try:
            async with building:
                return await run_in_threadpool(build, request, app_of(request))
        except redis.RedisError as exc:
            return unavailable(request, exc)

    return handler


def estate(request: Request, app: App) -> Response:
    try:
        filters = parse_filters(dict(request.query_params))
    except ValueError as exc:
        return page(request, "error.html", status_code=400, title="Bad request", message=str(exc))
    entries, settings = reads.estate(app)
    rows = rows_of(entries, settings.now, settings.thresholds, settings.apple_interval_s)
    view = estate_view(rows, filters)
    return page(request, "estate.html", section="estate", view=view, now=settings.now)


def timeline_page(request: Request, app: App) -> Response:
    entries, settings = reads.estate(app)
    rows = rows_of(entries, settings.now, settings.thresholds, settings.apple_interval_s)
    chart = timeline(rows, settings.now, settings.thresholds)
    return page(request, "timeline.html", section="timeline", chart=chart)


def server(request: Request, app: App) -> Response:
    history = reads.server_history(app, request.path_params["server_id"])
    if history is None:
        return _no_server(request)
    view = server_page(history, reads.settings(app))
    return page(request, "server.html", section="estate", view=view, window=reads.AUDIT_WINDOW)


def certificate(request: Request, app: App) -> Response:
    found = reads.certificate(app, request.path_params["server_id"])
    if found is None:
        return _no_server(request)
    server, pair = found
    return Response(
        pair.cert_pem,
        media_type="application/x-pem-file",
        headers={"Content-Disposition": f'attachment; filename="{file_name(server.name)}.pem"'},
    )


def activity(request: Request, app: App) -> Response:
    view = activity_page(reads.activity(app))
    return page(request, "activity.html", section="activity", view=view)


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
