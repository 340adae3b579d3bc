"""Pages from templates: Jinja2, every value escaped, the templates in worker/ui/templates."""

from __future__ import annotations

from functools import cache

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse


@cache
def environment() -> Environment:
    return Environment(
        loader=PackageLoader("worker.ui", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
    )


def page(request: Request, template: str, **context) -> HTMLResponse:
    """`template` rendered with `context` and the viewer looking (request.state.viewer)."""
    html = environment().get_template(template).render(viewer=request.state.viewer, **context)
    return HTMLResponse(html)
