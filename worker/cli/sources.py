"""`tokenwarden sources ...`: who may push events into the HTTP intake (`tokenwarden serve`)."""

from __future__ import annotations

import sys
from datetime import timedelta

import click

from worker.bootstrap import App
from worker.cli.output import json_option, note, pass_app, print_json, print_table
from worker.intake.sources import DEFAULT_GRACE, KINDS
from worker.services import sources as service


@click.group("sources")
def group() -> None:
    """Directories and event buses that push events over HTTP (`tokenwarden serve`)."""


def _read_secret(secret: str | None) -> str | None:
    """`-` reads the secret from stdin (kept out of the shell history)."""
    return sys.stdin.readline().strip() if secret == "-" else secret


@group.command("add")
@click.argument("name")
@click.option("--kind", required=True, type=click.Choice(KINDS), help="What the source sends.")
@click.option(
    "--map-domain",
    multiple=True,
    metavar="FROM=TO",
    help="Rewrite users of directory domain FROM to Managed Apple Account domain TO "
    "(e.g. school.edu=appleid.school.edu); repeatable.",
)
@click.option("--secret", default=None, help="'-' reads it from stdin; default: generated.")
@json_option
@pass_app
def add(
    app: App, name: str, kind: str, map_domain: tuple[str, ...], secret: str | None, as_json: bool
) -> None:
    """Add a source NAME; prints its path and its secret (shown this once)."""
    added = service.add_source(
        app.sources,
        name,
        kind,
        now=app.now(),
        secret=_read_secret(secret),
        map_domain=map_domain,
    )
    if as_json:
        print_json({**added.source.describe(app.now()), "secret": added.secret})
        return
    click.echo(f"added source {added.source.name!r} ({added.source.kind})")
    click.echo(f"path:   {added.source.path()}")
    click.echo(f"secret: {added.secret}")
    note("the secret is shown this once; tokenwarden keeps only its hash")


@group.command("list")
@json_option
@pass_app
def list_sources(app: App, as_json: bool) -> None:
    """Every source, its kind and path."""
    described = [s.describe(app.now()) for s in service.list_sources(app.sources)]
    if as_json:
        print_json(described)
        return
    print_table(
        ("NAME", "KIND", "PATH", "DOMAIN MAPS", "OLD SECRET UNTIL"),
        [
            (
                d["name"],
                d["kind"],
                d["path"],
                ", ".join(d["map_domain"]) or "-",
                d["previous_secret_until"] or "-",
            )
            for d in described
        ],
        empty="no sources; add one with `tokenwarden sources add NAME --kind ...`",
    )


@group.command("rotate-secret")
@click.argument("name")
@click.option(
    "--grace",
    type=click.IntRange(0, 30 * 24),
    default=int(DEFAULT_GRACE.total_seconds() // 3600),
    show_default=True,
    metavar="HOURS",
    help="Hours the old secret keeps working (0: it stops at once).",
)
@click.option("--secret", default=None, help="'-' reads it from stdin; default: generated.")
@json_option
@pass_app
def rotate_secret(app: App, name: str, grace: int, secret: str | None, as_json: bool) -> None:
    """A new secret for NAME; the old one keeps working for --grace hours."""
    rotated = service.rotate_secret(
        app.sources, name, now=app.now(), grace=timedelta(hours=grace), secret=_read_secret(secret)
    )
    if as_json:
        print_json({**rotated.source.describe(app.now()), "secret": rotated.secret})
        return
    click.echo(f"secret: {rotated.secret}")
    until = rotated.source.describe(app.now())["previous_secret_until"]
    note(f"the old secret works until {until}" if until else "the old secret no longer works")


@group.command("remove")
@click.argument("name")
@pass_app
def remove(app: App, name: str) -> None:
    """Remove NAME: its path answers 404 from now on."""
    service.remove_source(app.sources, name)
    click.echo(f"removed source {name.strip().lower()!r}")
