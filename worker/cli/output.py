"""Small helpers the CLI commands share: JSON and table output, option types, the App."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import click

from worker.bootstrap import App
from worker.errors import InvalidTime
from worker.timefmt import parse_rfc3339

pass_app = click.make_pass_decorator(App)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
org_option = click.option(
    "--org", default=None, help="Organization, when servers in several share the name."
)


class RFC3339(click.ParamType):
    name = "TIME"

    def convert(self, value, param, ctx) -> datetime:
        if isinstance(value, datetime):
            return value
        label = max(param.opts, key=len) if param is not None and param.opts else "time"
        try:
            return parse_rfc3339(value, what=label)
        except InvalidTime as exc:
            self.fail(str(exc), param, ctx)


def print_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, empty: str) -> None:
    if not rows:
        click.echo(empty)
        return
    cells = [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    for row in (list(headers), *cells):
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def cli_client(app: App):
    """The publishing client, sharing the command's broker, stamping events as from the CLI."""
    from events import catalog
    from worker.api import Client

    return Client(app.settings, clock=app.now, source=catalog.SOURCE_CLI, broker=app.broker)


def note(message: str) -> None:
    """Human commentary goes to stderr so stdout stays clean for pipes and --json."""
    click.echo(message, err=True)
