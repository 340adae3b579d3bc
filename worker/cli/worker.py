"""`tokenwarden worker`: the processes that decide."""

from __future__ import annotations

import click

from worker.bootstrap import App
from worker.cli.output import pass_app
from worker.workerproc import run_worker_processes


@click.command("worker")
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=None,
    help="Worker processes [default: TOKENWARDEN_WORKER_PROCESSES or 2].",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 256),
    default=None,
    help="Threads per process [default: TOKENWARDEN_WORKER_THREADS or 4].",
)
@pass_app
def group(app: App, processes: int | None, threads: int | None) -> None:
    """Run the actors that handle events, until SIGINT or SIGTERM."""
    app.check_ready()
    run_worker_processes(
        app.settings,
        processes or app.settings.worker_processes,
        threads or app.settings.worker_threads,
    )
