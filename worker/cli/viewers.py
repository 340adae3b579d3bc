"""`tokenwarden viewers ...`: who may log in to the web pages (TOKENWARDEN_UI=on) through the
form. Behind an SSO proxy (TOKENWARDEN_UI_TRUSTED_USER_HEADER) none are needed."""

from __future__ import annotations

import click

from worker.bootstrap import App
from worker.cli.output import json_option, note, pass_app, print_json, print_table
from worker.timefmt import format_rfc3339
from worker.ui import viewers as service


@click.group("viewers")
def group() -> None:
    """People who may log in to the web pages under /ui/ (read only)."""


@group.command("add")
@click.argument("name")
@json_option
@pass_app
def add(app: App, name: str, as_json: bool) -> None:
    """Add the viewer NAME (a login or an e-mail address); prints their password, this once."""
    added = service.add_viewer(app.viewers, name, now=app.now())
    if as_json:
        print_json({**_described(added.viewer), "password": added.password})
        return
    click.echo(f"added viewer {added.viewer.name!r}")
    click.echo(f"password: {added.password}")
    note("the password is shown this once; tokenwarden keeps only its Argon2id hash")


@group.command("list")
@json_option
@pass_app
def list_viewers(app: App, as_json: bool) -> None:
    """Every viewer and when they were added."""
    described = [_described(v) for v in service.list_viewers(app.viewers)]
    if as_json:
        print_json(described)
        return
    print_table(
        ("NAME", "ADDED"),
        [(d["name"], d["created_at"]) for d in described],
        empty="no viewers; add one with `tokenwarden viewers add NAME`",
    )


@group.command("remove")
@click.argument("name")
@pass_app
def remove(app: App, name: str) -> None:
    """Remove the viewer NAME: their login cookies are refused from now on."""
    service.remove_viewer(app.viewers, name)
    click.echo(f"removed viewer {name.strip().lower()!r}")


def _described(viewer: service.Viewer) -> dict:
    return {"name": viewer.name, "created_at": format_rfc3339(viewer.created_at)}
