"""Running the intake: uvicorn serving the Starlette app, in the foreground (`tokenwarden
serve`) or as a part of `tokenwarden run` (a thread)."""

from __future__ import annotations

import threading
import time

import structlog
import uvicorn

from worker.bootstrap import App
from worker.errors import ConfigError
from worker.intake.app import create_app

#: Longest `tokenwarden run` waits for the intake to listen before it gives up.
START_TIMEOUT_S = 10

log = structlog.get_logger(__name__)


def server_for(app: App) -> uvicorn.Server:
    http = app.settings.http
    config = uvicorn.Config(
        create_app(app),
        host=http.host,
        port=http.port,
        # X-Forwarded-For / -Proto are read by create_app, from TOKENWARDEN_HTTP_TRUSTED_PROXIES
        # only, after it has kept the connecting address (worker/intake/peer.py)
        proxy_headers=False,
        log_config=None,  # our structlog configuration stays in charge
        access_log=False,  # refusals are logged by the intake, without headers
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(config)


def cannot_listen(app: App) -> ConfigError:
    return ConfigError(
        f"the HTTP intake cannot listen on {app.settings.http.listen} (TOKENWARDEN_HTTP_LISTEN): "
        "the port is in use or the address is not this machine's; choose another"
    )


def serve_forever(app: App) -> None:
    """`tokenwarden serve`: until SIGINT or SIGTERM (uvicorn's own handlers)."""
    server = server_for(app)
    try:
        server.run()
    except SystemExit:
        if not server.started:  # uvicorn exits when it cannot bind
            raise cannot_listen(app) from None
        raise


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
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started and self._thread.is_alive():
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        if not self._server.started:
            raise cannot_listen(self.app)
        log.info("intake_started", listen=self.app.settings.http.listen)

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        log.info("intake_stopped")
