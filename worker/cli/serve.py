"""`tokenwarden serve`: the HTTP intake, until SIGINT or SIGTERM."""

from __future__ import annotations

import click

from worker.bootstrap import App
from worker.cli.output import pass_app
from worker.intake.serve import serve_forever


@click.command("serve")
@pass_app
def group(app: App) -> None:
    """Run the HTTP intake (TOKENWARDEN_HTTP_LISTEN) for the sources' pushes."""
    app.check_ready()
    serve_forever(app)
