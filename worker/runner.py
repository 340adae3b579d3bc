"""Running tokenwarden's long-lived parts in one process and stopping them cleanly.

Each part is a `Component` with `start()` and `stop()`: the worker, then what other packages
plug in through the `tokenwarden.components` entry point (the scheduler). Parts stop in the
reverse order they started.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Protocol

import structlog

from worker.bootstrap import App
from worker.signals import StopSignals

log = structlog.get_logger(__name__)


class Component(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...


def components_for(app: App) -> list[Component]:
    """The parts `tokenwarden run` starts: the worker (threads in this process), the HTTP
    intake, then what other packages plug in (the scheduler) through the
    `tokenwarden.components` hook."""
    from worker.intake.serve import IntakeServer
    from worker.workerproc import WorkerThreads

    parts: list[Component] = [WorkerThreads(app, app.settings.worker_threads), IntakeServer(app)]
    for entry_point in sorted(entry_points(group="tokenwarden.components"), key=lambda e: e.name):
        parts.append(entry_point.load()(app))
    return parts


def run_until_stopped(app: App, components: list[Component] | None = None) -> None:
    stop = StopSignals()

    keyring = app.check_ready()
    parts = components_for(app) if components is None else components
    log.info(
        "tokenwarden_started",
        redis=app.settings.redis_url_display,
        primary_key_id=keyring.primary.key_id,
        components=[p.name for p in parts],
    )
    started: list[Component] = []
    try:
        for part in parts:
            part.start()
            started.append(part)
        stop.wait()
        log.info("stop_requested", signal=stop.name)
    finally:
        for part in reversed(started):
            part.stop()
        log.info("tokenwarden_stopped")
