"""`tokenwarden servers ...`: register, list, show and remove MDM servers."""

from __future__ import annotations

import shlex
import sys

import click

from worker import policies, registry
from worker.bootstrap import App
from worker.cli.files import read_input_file
from worker.cli.output import json_option, note, org_option, pass_app, print_json, print_table
from worker.crypto.keys import MAX_KEY_FILE_BYTES, format_fingerprint
from worker.errors import InvalidInput
from worker.records import Server
from worker.services import estate
from worker.timefmt import format_rfc3339


@click.group("servers")
def group() -> None:
    """MDM servers as registered in ASM/ABM."""


@group.command("add")
@click.argument("name")
@org_option
@click.option(
    "--cert", type=click.Path(dir_okay=False), help="The vendor's certificate (.pem/.der)."
)
@click.option("--key", type=click.Path(dir_okay=False), help="The private key of --cert.")
@json_option
@pass_app
def add(
    app: App, name: str, org: str | None, cert: str | None, key: str | None, as_json: bool
) -> None:
    """Register server NAME; without --cert/--key a new key pair is generated."""
    cert_file = read_input_file(cert, "certificate", MAX_KEY_FILE_BYTES) if cert else None
    key_file = read_input_file(key, "private key", MAX_KEY_FILE_BYTES) if key else None
    server, pair = registry.add_server(
        app.store, name, org=org, now=app.now(), cert=cert_file, key=key_file
    )
    if as_json:
        print_json(describe_server(app, server))
        return
    origin = "imported" if cert else "generated"
    click.echo(f"added server {server.name!r}" + (f" in {server.org!r}" if server.org else ""))
    click.echo(f"key pair {origin}: SHA-256 {format_fingerprint(pair.fingerprint)}")
    note(
        f"next: `{_export_command(server)}`, "
        "upload it for this server in ASM/ABM, download its token, then `tokenwarden tokens "
        "install`"
    )


@group.command("list")
@json_option
@pass_app
def list_servers(app: App, as_json: bool) -> None:
    """Every registered server with its key and token."""
    servers = sorted(
        estate.servers(app.listings), key=lambda s: (s.org.casefold(), s.name.casefold())
    )
    described = [describe_server(app, s) for s in servers]
    if as_json:
        print_json(described)
        return
    rows = [
        (
            d["name"],
            d["org"] or "-",
            (d["token"] or {}).get("expires_at", "no token"),
            (d["token"] or {}).get("downloaded_by", "-"),
            "yes" if d["staged_key"] else "",
        )
        for d in described
    ]
    print_table(
        ("NAME", "ORG", "TOKEN EXPIRES", "DOWNLOADED BY", "KEY STAGED"),
        rows,
        empty="no servers yet; add one with `tokenwarden servers add NAME`",
    )


@group.command("show")
@click.argument("name")
@org_option
@json_option
@pass_app
def show(app: App, name: str, org: str | None, as_json: bool) -> None:
    """One server: its key pairs and its token."""
    server = registry.resolve_server(app.store, name, org)
    described = describe_server(app, server, with_history=True)
    if as_json:
        print_json(described)
        return
    click.echo(f"server:       {described['name']}")
    click.echo(f"organization: {described['org'] or '-'}")
    click.echo(f"added:        {described['created_at']}")
    for pair in described["keys"]:
        click.echo(
            f"key {pair['state']:<8}  SHA-256 {format_fingerprint(pair['fingerprint_sha256'])}"
            f"  created {pair['created_at']}"
        )
    rule = described["policy"]
    click.echo(
        f"policy:       renew {rule['renew_before_days']} days before expiry, rotate key "
        f"{rule['rotate_key']}, owners {', '.join(rule['owners']) or 'none'}"
    )
    token = described["token"]
    if token:
        click.echo(
            f"token:        {token['status']}, expires {token['expires_at']} "
            f"({token['days_left']} days), downloaded by {token['downloaded_by']} "
            f"at {token['downloaded_at']}"
        )
        click.echo(f"apple:        {apple_line(token['apple'])}")
    else:
        click.echo("token:        none installed")


def apple_line(apple: dict) -> str:
    """Apple's verdict on a token in one line: what it is, since when, and Apple's names."""
    verdict = str(apple["verdict"]).replace("_", " ")
    if apple["rejected_at"] and apple["verdict"] == "rejected":
        verdict += f" since {apple['rejected_at']}"
        if apple["last_answer"] == "rejected":
            verdict += f" ({apple['code']})"
    elif apple["terms_pending_since"] and apple["verdict"] != "unknown":
        verdict += f" since {apple['terms_pending_since']}: accept them in the portal"
    confirmed = apple["last_confirmed_at"]
    verdict += f", last confirmed {confirmed}" if confirmed else ", never confirmed"
    if apple["last_answer"] in ("unreachable", "malformed"):
        verdict += f" (last check {apple['last_checked_at']}: {apple['last_answer']})"
    names = [n for n in (apple["server_name"], apple["org_name"]) if n]
    if apple["server_uuid"]:
        names.append(apple["server_uuid"])
    return verdict + (f"; Apple: {', '.join(names)}" if names else "")


@group.command("remove")
@click.argument("name")
@org_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def remove(app: App, name: str, org: str | None, yes: bool) -> None:
    """Forget server NAME, its key pairs (private keys included) and its tokens."""
    server = registry.resolve_server(app.store, name, org)
    if not yes:
        if not sys.stdin.isatty():
            raise InvalidInput(
                f"removing {server.name!r} deletes its private keys and tokens; "
                "pass --yes to confirm"
            )
        click.confirm(f"Remove {server.name!r} with its private keys and tokens?", abort=True)
    estate.remove_server(app.store, server)
    click.echo(f"removed server {server.name!r}")


def describe_server(app: App, server: Server, *, with_history: bool = False) -> dict:
    now = app.now()
    keys, token = estate.keys_and_token(app.store, server)
    by_id = {pair.id: pair for pair in keys}
    described = {
        "name": server.name,
        "org": server.org,
        "id": server.id,
        "created_at": format_rfc3339(server.created_at),
        "current_key": by_id[server.current_key_id].describe()
        if server.current_key_id in by_id
        else None,
        "staged_key": by_id[server.staged_key_id].describe()
        if server.staged_key_id in by_id
        else None,
        "token": (
            registry.describe_token(token, server, now, app.settings.apple.check_interval_s)
            if token
            else None
        ),
    }
    if with_history:
        described["keys"] = [pair.describe() for pair in keys]
        described["policy"] = policies.in_force(app.store, server).describe()
    return described


def _export_command(server: Server) -> str:
    """The command to copy and paste, quoted for a POSIX shell whatever the name holds."""
    org = f" --org {shlex.quote(server.org)}" if server.org else ""
    output = shlex.quote(f"{_file_stem(server)}.pem")
    return f"tokenwarden keys export {shlex.quote(server.name)}{org} -o {output}"


def _file_stem(server: Server) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in server.name)
