"""The pages' routes, each behind the access check: `/` the estate, `/timeline`, `/activity`,
`/servers/{id}` and its certificate to download. Each reads the stores in the thread pool
(worker/ui/reads.py), hands what it read to a view (pure) and renders the view's template.

The App is the one `tokenwarden serve` runs with: create_app keeps it (as its Intake) in the
Starlette application's state, where every request finds it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Protocol

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

Handler = Callable[[Request], Awaitable[Response]]


class Access(Protocol):
    """Who may look (worker/ui/access.py): `required(handler)` answers for a viewer only,
    with `request.state.viewer` set to their name."""

    def required(self, handler: Handler) -> Handler: ...


def routes(access: Access) -> list[Route]:
    return [
        Route("/", access.required(estate), methods=["GET"], name="estate"),
        Route("/timeline", access.required(timeline_page), methods=["GET"], name="timeline"),
        Route("/activity", access.required(activity), methods=["GET"], name="activity"),
        Route("/servers/{server_id}", access.required(server), methods=["GET"], name="server"),
        Route(
            "/servers/{server_id}/certificate.pem",
            access.required(certificate),
            methods=["GET"],
            name="certificate",
        ),
    ]


def app_of(request: Request) -> App:
    return request.app.state.intake.app


async def estate(request: Request) -> Response:
    try:
        filters = parse_filters(dict(request.query_params))
    except ValueError as exc:
        return page(request, "error.html", status_code=400, title="Bad request", message=str(exc))
    entries, settings = await run_in_threadpool(reads.estate, app_of(request))
    rows = rows_of(entries, settings.now, settings.thresholds, settings.apple_interval_s)
    view = estate_view(rows, filters)
    return page(request, "estate.html", section="estate", view=view, now=settings.now)


async def timeline_page(request: Request) -> Response:
    entries, settings = await run_in_threadpool(reads.estate, app_of(request))
    rows = rows_of(entries, settings.now, settings.thresholds, settings.apple_interval_s)
    chart = timeline(rows, settings.now, settings.thresholds)
    return page(request, "timeline.html", section="timeline", chart=chart)


async def server(request: Request) -> Response:
    app = app_of(request)
    history = await run_in_threadpool(reads.server_history, app, request.path_params["server_id"])
    if history is None:
        return _no_server(request)
    settings = reads.settings(app)
    view = server_page(history, settings)
    return page(request, "server.html", section="estate", view=view, window=reads.AUDIT_WINDOW)


async def certificate(request: Request) -> Response:
    found = await run_in_threadpool(
        reads.certificate, app_of(request), request.path_params["server_id"]
    )
    if found is None:
        return _no_server(request)
    server, pair = found
    return Response(
        pair.cert_pem,
        media_type="application/x-pem-file",
        headers={"Content-Disposition": f'attachment; filename="{file_name(server.name)}.pem"'},
    )


async def activity(request: Request) -> Response:
    read = await run_in_threadpool(reads.activity, app_of(request))
    return page(request, "activity.html", section="activity", view=activity_page(read))


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
