"""The web pages' routes, mounted by create_app under /ui (none unless TOKENWARDEN_UI=on):
the stylesheet, the login form, and the pages (pages.py), every answer with the security
headers (security.py)."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from worker.bootstrap import App
from worker.ui import pages
from worker.ui.access import HOME, Access
from worker.ui.render import page
from worker.ui.security import SecurityHeaders

#: The stylesheet (and any image) the pages use: served by tokenwarden itself, no CDN.
STATIC = Path(__file__).resolve().parent / "static"


def ui_routes(app: App) -> list[BaseRoute]:
    if not app.settings.ui.enabled:
        return []
    access = Access(app)
    site = Starlette(
        routes=[
            Mount("/static", app=StaticFiles(directory=STATIC)),
            Route("/login", access.login_form, methods=["GET"]),
            Route("/login", access.login, methods=["POST"]),
            Route("/logout", access.logout, methods=["POST"]),
            *pages.routes(access),
        ],
        exception_handlers={HTTPException: _http_error},
    )
    site.router.redirect_slashes = False  # as the intake's: no Location built from Host
    site.state.app = app  # what the pages read (pages.app_of)
    return [
        Route("/ui", SecurityHeaders(RedirectResponse(HOME, 308))),
        Mount("/ui", app=SecurityHeaders(site)),
    ]


_TITLES = {404: "Not found", 405: "Not allowed"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    request.state.viewer = None
    title = _TITLES.get(exc.status_code, "Refused")
    message = "There is no such page." if exc.status_code == 404 else str(exc.detail)
    response = page(request, "message.html", title=title, message=message)
    response.status_code = exc.status_code
    return response
