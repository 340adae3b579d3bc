"""The intake as an ASGI application (Starlette): the operations endpoints, and one route per
source kind. Each kind's module (cloudevents.py, okta.py, scim.py) gives its routes."""

from __future__ import annotations

import time

import redis
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from worker.bootstrap import App
from worker.intake import calendar
from worker.intake.context import Intake
from worker.intake.peer import RememberPeer
from worker.metrics.estate import SNAPSHOT_S, EstateCollector
from worker.ui.routes import ui_routes

log = structlog.get_logger(__name__)


def create_app(
    app: App, *, kinds: list | None = None, metrics_snapshot_s: float = SNAPSHOT_S
) -> Starlette:
    """The intake for `app`. `kinds`: the modules giving the routes of each source kind;
    `metrics_snapshot_s`: how long one reading of the estate serves scrapes (0: none)."""
    intake = Intake(app)
    routes: list[BaseRoute] = [
        Route("/healthz", _healthz, methods=["GET"]),
        Route("/readyz", _readyz(intake), methods=["GET"]),
        Route("/metrics", _metrics(intake, metrics_snapshot_s), methods=["GET"]),
        *calendar.routes(intake),
    ]
    for kind in kinds if kinds is not None else _kinds():
        routes += kind.routes(intake)
    routes += ui_routes(app)  # [] unless TOKENWARDEN_UI=on
    starlette = Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error, Exception: _unexpected},
    )
    # A path with a slash too many or too few is 404, not a redirect: a redirect would answer
    # before the source's secret is checked, to a Location built from the client's Host.
    starlette.router.redirect_slashes = False
    starlette.state.intake = intake
    starlette.add_middleware(_Measured, intake=intake)
    if proxies := list(app.settings.http.trusted_proxies):
        # X-Forwarded-For / -Proto believed only from the proxies named (TLS is theirs)
        starlette.add_middleware(ProxyHeadersMiddleware, trusted_hosts=proxies)
    starlette.add_middleware(RememberPeer)  # outermost: the peer, before X-Forwarded-For
    return starlette


def _kinds() -> list:
    from worker.intake import cloudevents, okta, scim

    return [cloudevents, okta, scim]


async def _healthz(request: Request) -> Response:
    return PlainTextResponse("ok\n")


def _readyz(intake: Intake):
    async def readyz(request: Request) -> Response:
        try:
            await run_in_threadpool(intake.app.store.check_writable)
        except Exception as exc:  # any failure to reach Redis: not ready
            log.warning("intake_not_ready", error=type(exc).__name__)
            return PlainTextResponse("redis unreachable\n", status_code=503)
        return PlainTextResponse("ready\n")

    return readyz


def estate_collector(app: App, snapshot_s: float = SNAPSHOT_S) -> EstateCollector:
    """The estate's metrics for `app`, read through its store with its settings."""
    return EstateCollector(
        app.estate_metrics.read,
        app.now,
        app.settings.metrics_token_series,
        app.settings.scheduler.scan_interval_s,
        snapshot_s=snapshot_s,
    )


def _metrics(intake: Intake, snapshot_s: float):
    """The intake's own counters and the estate's metrics (read from Redis at each scrape, in
    the thread pool). Redis unreachable: 503, one line."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(intake.metrics.registry)
    registry.register(estate_collector(intake.app, snapshot_s))

    async def metrics(request: Request) -> Response:
        try:
            body = await run_in_threadpool(generate_latest, registry)
        except redis.RedisError as exc:
            log.warning("metrics_unavailable", error=type(exc).__name__)
            return PlainTextResponse("redis unreachable\n", status_code=503)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return metrics


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 401:  # no detail: nothing to learn from a refusal
        return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("intake_failed", path=request.url.path)
    return JSONResponse({"error": "internal error; see the intake's log"}, status_code=500)


class _Measured:
    """Counts every request by source and outcome, and times it by route."""

    def __init__(self, app: ASGIApp, intake: Intake):
        self.app = app
        self.intake = intake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            # The source label only for a source found (set by Intake.source): a name made up
            # by a client must not add a time series.
            source = scope.get("state", {}).get("source", "-")
            route = _route(scope.get("path", ""))
            metrics = self.intake.metrics
            metrics.requests.labels(source=source, outcome=f"{status[0] // 100}xx").inc()
            metrics.latency.labels(route=route).observe(time.perf_counter() - started)


def _route(path: str) -> str:
    """The route for the metrics, the source name taken out (labels stay few)."""
    parts = path.strip("/").split("/")
    if len(parts) >= 3 and parts[0] == "sources" and parts[2] in ("events", "okta", "scim"):
        return "/sources/{name}/" + parts[2]
    return path if path in ("/healthz", "/readyz", "/metrics", calendar.PATH) else "other"
