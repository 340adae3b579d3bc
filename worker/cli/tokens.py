"""`tokenwarden tokens ...`: install the server tokens Apple delivers, list what is installed."""

from __future__ import annotations

import sys
from datetime import datetime

import click

from worker import installing, registry
from worker.apple.verdicts import Verdict
from worker.bootstrap import App
from worker.cli.due import due
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


group.add_command(due)


@group.command("install")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--downloaded-by",
    default=None,
    metavar="USER",
    help="Managed Apple Account that downloaded the token; default: the one Apple names "
    "(required with --offline, or when Apple cannot be reached).",
)
@click.option(
    "--downloaded-at",
    type=RFC3339(),
    default=None,
    help="When it was downloaded (RFC 3339); default: the time in the file name, else now.",
)
@click.option(
    "--allow-server-change",
    "--allow-consumer-change",
    "allow_consumer_change",
    is_flag=True,
    help="Accept a token from a different MDM server entry in ASM/ABM.",
)
@click.option(
    "--offline",
    is_flag=True,
    help="Do not ask Apple about the token (who downloaded it, whether it is accepted).",
)
@org_option
@json_option
@pass_app
def install(
    app: App,
    name: str,
    file: str,
    downloaded_by: str | None,
    downloaded_at: datetime | None,
    allow_consumer_change: bool,
    offline: bool,
    org: str | None,
    as_json: bool,
) -> None:
    """Decrypt FILE (the *_smime.p7m download) with NAME's key and install it."""
    data, source = read_input_file(file, "token file", MAX_TOKEN_FILE_BYTES)
    now = app.now()
    result = installing.install_token(
        app.store,
        name,
        data,
        source=source,
        downloaded_by=downloaded_by,
        now=now,
        org=org,
        downloaded_at=downloaded_at,
        allow_consumer_change=allow_consumer_change,
        apple=None if offline else app.apple,
    )
    for warning in result.warnings:
        note(f"warning: {warning}")
    token = registry.describe_token(
        result.token, result.server, now, app.settings.apple.check_interval_s
    )
    if as_json:
        print_json({"outcome": result.outcome.value, **token})
        return
    _say_installed(result, token)


def _say_installed(result: installing.InstallResult, token: dict) -> None:
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
    interval = app.settings.apple.check_interval_s
    described = [registry.describe_token(t, by_id.get(t.server_id), now, interval) for t in tokens]
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


#: `tokens check` exit codes: all accepted; any rejected or terms waiting; Apple unreachable.
CHECK_ALL_ACCEPTED, CHECK_REFUSED, CHECK_UNREACHABLE = 0, 1, 3


@group.command("check")
@click.argument("servers", nargs=-1, metavar="[SERVER]...")
@org_option
@json_option
@pass_app
def check(app: App, servers: tuple[str, ...], org: str | None, as_json: bool) -> None:
    """Ask Apple now about the current token of each SERVER (default: every server).

    Exit 0 when Apple accepts every token, 1 when it rejects one or new terms wait to be
    accepted, 3 when Apple could not be asked about one."""
    tokens, _ = estate.current_tokens(app.store, app.listings, servers, org)
    verdicts = app.apple_checker.check_tokens(tokens, app.now)
    now = app.now()
    interval = app.settings.apple.check_interval_s
    rows = []
    stored = estate.as_stored(app.store, [v.token for v in verdicts])
    for verdict, (token, server) in zip(verdicts, stored, strict=True):
        described = registry.describe_token(token, server, now, interval)
        account = verdict.result.account
        described["check"] = {
            "verdict": verdict.result.verdict.value,
            "code": verdict.result.code,
            "detail": verdict.result.detail,
            "admin_id": account.admin_id if account else None,
        }
        rows.append(described)
    if as_json:
        print_json(rows)
    else:
        _print_checks(rows)
    sys.exit(_check_exit_code([v.result.verdict for v in verdicts]))


def _print_checks(rows: list[dict]) -> None:
    print_table(
        ("SERVER", "ORG", "VERDICT", "DOWNLOADED BY", "DETAIL"),
        [
            (
                d["server"],
                d["org"] or "-",
                d["check"]["verdict"].replace("_", " "),
                d["downloaded_by"],
                d["check"]["detail"] or "-",
            )
            for d in rows
        ],
        empty="no tokens installed; install one with `tokenwarden tokens install`",
    )


def _check_exit_code(verdicts: list[Verdict]) -> int:
    if any(v in (Verdict.REJECTED, Verdict.TERMS_NOT_ACCEPTED) for v in verdicts):
        return CHECK_REFUSED
    if any(v in (Verdict.UNREACHABLE, Verdict.MALFORMED) for v in verdicts):
        return CHECK_UNREACHABLE
    return CHECK_ALL_ACCEPTED
