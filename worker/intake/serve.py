"""Running the intake: uvicorn serving the Starlette app, in the foreground (`tokenwarden
serve`) or as a part of `tokenwarden run` (a thread)."""

from __future__ import annotations

import threading

import structlog
import uvicorn

from worker.bootstrap import App
from worker.intake.app import create_app

log = structlog.get_logger(__name__)


def server_for(app: App) -> uvicorn.Server:
    http = app.settings.http
    config = uvicorn.Config(
        create_app(app),
        host=http.host,
        port=http.port,
        # X-Forwarded-For / -Proto believed only from the proxies named (TLS is theirs)
        proxy_headers=bool(http.trusted_proxies),
        forwarded_allow_ips=list(http.trusted_proxies) or None,
        log_config=None,  # our structlog configuration stays in charge
        access_log=False,  # refusals are logged by the intake, without headers
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(config)


class IntakeServer:
    """The intake inside `tokenwarden run`: uvicorn in a thread, stopped with the rest."""

    name = "intake"

    def __init__(self, app: App):
        self.app = app
        self._server = server_for(app)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._server.config.install_signal_handlers = False  # the runner owns the signals
        self._thread = threading.Thread(target=self._server.run, name="intake", daemon=True)
        self._thread.start()
        log.info("intake_started", listen=self.app.settings.http.listen)

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        log.info("intake_stopped")
