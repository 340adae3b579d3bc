"""`tokenwarden run`: everything tokenwarden runs on one machine, until SIGINT or SIGTERM."""

from __future__ import annotations

import click

from worker.bootstrap import App
from worker.cli.output import pass_app
from worker.runner import run_until_stopped


@click.command("run")
@pass_app
def group(app: App) -> None:
    """Run tokenwarden's long-lived parts in the foreground; Ctrl-C stops them cleanly."""
    run_until_stopped(app)
