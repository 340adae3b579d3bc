"""The pages under /ui/ (a placeholder until the estate's pages are built)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from worker.ui.render import page


def routes(access) -> list[Route]:
    return [Route("/", access.required(_home), methods=["GET"])]


async def _home(request: Request) -> Response:
    return page(request, "message.html", title="Estate", message="The estate's pages come here.")
