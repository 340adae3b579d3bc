"""`tokenwarden tokens ...`: install the server tokens Apple delivers, list what is installed."""

from __future__ import annotations

from datetime import datetime

import click

from worker import registry
from worker.bootstrap import App
from worker.cli.files import read_input_file
from worker.cli.output import (
    RFC3339,
    json_option,
    note,
    org_option,
    pass_app,
    print_json,
    print_table,
)
from worker.crypto.keys import format_fingerprint
from worker.crypto.smime import MAX_TOKEN_FILE_BYTES
from worker.records import TOKEN_CURRENT
from worker.rules.install import InstallOutcome
from worker.services import estate


@click.group("tokens")
def group() -> None:
    """Server tokens: the encrypted files downloaded from ASM/ABM."""


@group.command("install")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--downloaded-by",
    required=True,
    metavar="USER",
    help="Managed Apple Account that downloaded the token.",
)
@click.option(
    "--downloaded-at",
    type=RFC3339(),
    default=None,
    help="When it was downloaded (RFC 3339); default: the time in the file name, else now.",
)
@click.option(
    "--allow-consumer-change",
    is_flag=True,
    help="Accept a token from a different MDM server entry in ASM/ABM.",
)
@org_option
@json_option
@pass_app
def install(
    app: App,
    name: str,
    file: str,
    downloaded_by: str,
    downloaded_at: datetime | None,
    allow_consumer_change: bool,
    org: str | None,
    as_json: bool,
) -> None:
    """Decrypt FILE (the *_smime.p7m download) with NAME's key and install it."""
    data, source = read_input_file(file, "token file", MAX_TOKEN_FILE_BYTES)
    now = app.now()
    result = registry.install_token(
        app.store,
        name,
        data,
        source=source,
        downloaded_by=downloaded_by,
        now=now,
        org=org,
        downloaded_at=downloaded_at,
        allow_consumer_change=allow_consumer_change,
    )
    for warning in result.warnings:
        note(f"warning: {warning}")
    token = registry.describe_token(result.token, result.server, now)
    if as_json:
        print_json({"outcome": result.outcome.value, **token})
        return
    _say_installed(result, token)


def _say_installed(result: registry.InstallResult, token: dict) -> None:
    """What `tokens install` tells a person: what was installed, and what follows."""
    if result.outcome is InstallOutcome.ALREADY_INSTALLED:
        click.echo(f"this token is already installed for {result.server.name!r}; nothing changed")
        return
    click.echo(
        f"installed a token for {result.server.name!r}: expires {token['expires_at']} "
        f"({token['days_left']} days), downloaded by {token['downloaded_by']} "
        f"at {token['downloaded_at']}"
    )
    if result.superseded is not None:
        click.echo(
            f"it supersedes the token downloaded at "
            f"{result.superseded.downloaded_at:%Y-%m-%dT%H:%M:%SZ}"
        )
    if result.doomed_by:
        causes = ", ".join(
            sorted({t.rsplit(".", 1)[-1].replace("_", " ") for t in result.doomed_by})
        )
        click.echo(
            f"this token is already doomed ({causes} after its download): a replacement "
            "is open; see `tokenwarden replacements list`"
        )
    if result.promoted_key is not None:
        click.echo(
            f"the staged key is now current: SHA-256 "
            f"{format_fingerprint(result.promoted_key.fingerprint)}"
        )


@group.command("list")
@click.option("--all", "include_all", is_flag=True, help="Include superseded tokens.")
@json_option
@pass_app
def list_tokens(app: App, include_all: bool, as_json: bool) -> None:
    """Installed tokens, soonest expiry first."""
    now = app.now()
    tokens, by_id = estate.tokens(app.store, app.listings, include_superseded=include_all)
    described = [registry.describe_token(t, by_id.get(t.server_id), now) for t in tokens]
    described.sort(
        key=lambda d: (
            d["status"] != TOKEN_CURRENT and d["status"] != "expired",
            d["expires_at"],
            d["server"].casefold(),
        )
    )
    if as_json:
        print_json(described)
        return
    rows = [
        (
            d["server"],
            d["org"] or "-",
            d["status"],
            d["expires_at"],
            d["days_left"],
            d["downloaded_by"],
            d["downloaded_at"],
        )
        for d in described
    ]
    print_table(
        ("SERVER", "ORG", "STATUS", "EXPIRES", "DAYS", "DOWNLOADED BY", "DOWNLOADED AT"),
        rows,
        empty="no tokens installed; install one with `tokenwarden tokens install`",
    )
