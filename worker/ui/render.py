"""HTML for the web pages: Jinja2 templates (worker/ui/templates/), every value escaped unless
a template says otherwise (none does). A page carries no inline script or style: the
Content-Security-Policy of /ui forbids them, so colours and layout come from static/style.css
through classes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse

from worker.timefmt import format_rfc3339

log = structlog.get_logger(__name__)

#: Where the pages are mounted, when a request does not say (login pages render base.html too).
DEFAULT_ROOT = "/ui"


def _when(moment: datetime | str | None) -> str:
    """A time as the pages show it (RFC 3339, UTC); "-" for none."""
    if moment is None or moment == "":
        return "-"
    return format_rfc3339(moment) if isinstance(moment, datetime) else str(moment)


def _state_class(state: str) -> str:
    """The CSS class of a state as worker.rules.status names it: "replace now" ->
    "state-replace-now"."""
    return "state-" + state.replace(" ", "-")


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("worker.ui", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["state_class"] = _state_class
    return env


ENV = _environment()


def root_of(request: Request) -> str:
    """The path the pages are mounted at (Starlette's Mount sets it), for links."""
    return request.scope.get("root_path") or DEFAULT_ROOT


def render(template: str, **context: Any) -> str:
    return ENV.get_template(template).render(**context)


def page(
    request: Request, template: str, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """`template` rendered for `request`: the viewer's name (set by the access check) and the
    pages' root path are in the context of every page."""
    context.setdefault("section", "")
    html = render(
        template,
        viewer=getattr(request.state, "viewer", None),
        root=root_of(request),
        **context,
    )
    return HTMLResponse(html, status_code=status_code)


def unavailable(request: Request, exc: Exception) -> HTMLResponse:
    """The one-line page when Redis cannot be read (the access check's, and every page's),
    logged once."""
    log.warning("ui_redis_unreachable", path=request.url.path, error=type(exc).__name__)
    return page(
        request,
        "error.html",
        status_code=503,
        title="Unavailable",
        message="tokenwarden cannot reach Redis just now; try again in a moment.",
    )
